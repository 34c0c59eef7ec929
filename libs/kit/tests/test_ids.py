"""kit.ids.parse_uuid: one spelling per id; uuid.UUID's lenient ones are refused."""

from __future__ import annotations

import uuid

import pytest

from kit.ids import parse_uuid

CANONICAL = "11111111-2222-3333-4444-55555555abcd"


def _digits(zero: int) -> dict[int, str]:
    """ASCII digits mapped to the ten decimal digits from code point ``zero``."""
    return {ord("0") + i: chr(zero + i) for i in range(10)}


@pytest.mark.parametrize("text", [CANONICAL, CANONICAL.upper()])
def test_the_hyphenated_hex_form_parses_in_either_case(text: str) -> None:
    assert parse_uuid(text) == uuid.UUID(CANONICAL)


@pytest.mark.parametrize(
    "text",
    [
        # Each of these is a UUID to uuid.UUID: the same owner as CANONICAL, or another.
        CANONICAL.translate(_digits(0x0660)),  # Arabic-Indic
        CANONICAL.translate(_digits(0xFF10)),  # fullwidth
        "+" + "0" * 31,
        "0_" * 15 + "01",
        CANONICAL.replace("-", ""),
        "{" + CANONICAL + "}",
        "urn:uuid:" + CANONICAL,
        f" {CANONICAL}",
        f"{CANONICAL}\n",
        "",
        "11111111-2222-3333-4444-55555555abc",
        "g1111111-2222-3333-4444-55555555abcd",
    ],
)
def test_any_other_spelling_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a UUID"):
        parse_uuid(text)
