"""Prompt normalization and the composed prompt of every mode, pinned word for word."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest

from generation.domain import prompts as prompts_module
from generation.domain.modes import Mode
from generation.domain.prompts import AU_BOOSTER, GUARDRAILS, compose_prompt, normalize_prompt
from kit.errors import ValidationError
from kit.runtime_config import Choice, Prompts, load_runtime_config

CONFIG_FILE = Path(__file__).resolve().parents[4] / "config" / "runtime.toml"

# Copies of the seed entries, so the pinned strings do not move with config edits.
COASTAL = Choice(
    label="Coastal AU",
    seed="Coastal Australian style: white-washed timber, linen, rattan, soft blues and "
    "sandy neutrals",
)
JAPANDI = Choice(
    label="Japandi",
    seed="Japandi style: low-profile furniture, pale oak, muted earth tones, wabi-sabi "
    "ceramics, calm minimalism",
)
LIVING = Choice(label="Living room", seed="living room")
OUTDOOR = Choice(label="Outdoor", seed="outdoor living area")
PROMPTS = Prompts(max_length=40, imagine_min_length=3)

G = GUARDRAILS
AU = AU_BOOSTER
COASTAL_SEED = (
    "Coastal Australian style: white-washed timber, linen, rattan, soft blues and sandy neutrals."
)
JAPANDI_SEED = (
    "Japandi style: low-profile furniture, pale oak, muted earth tones, wabi-sabi ceramics, "
    "calm minimalism."
)
RESTYLE = (
    "Restyle the furnishings, decor and colour palette of this room without changing its "
    "architecture."
)
COMPOSE_IMAGES = (
    "The first image is the base room; keep its structure. The second image is the style and "
    "object reference; bring its look and pieces into the base room, harmonising lighting and "
    "perspective."
)


def test_shared_texts_are_the_seed_wording() -> None:
    assert GUARDRAILS == (
        "Photoreal interior render, correct perspective, realistic lighting. Keep existing room "
        "architecture unchanged; do not alter structural layout, view direction, or window "
        "positions."
    )
    assert AU_BOOSTER == (
        "Use materials and furnishings common in Australian homes; bright, airy daylight."
    )


PINNED = [
    (
        Mode.REDESIGN,
        "Add a leather armchair",
        COASTAL,
        LIVING,
        f"Style: Coastal AU; Room type: Living room. {RESTYLE} {G} {AU} {COASTAL_SEED} "
        "Add a leather armchair.",
    ),
    (Mode.REDESIGN, None, None, None, f"{RESTYLE} {G} {AU}"),
    (Mode.REDESIGN, None, None, LIVING, f"Room type: Living room. {RESTYLE} {G} {AU}"),
    (
        Mode.STAGING,
        "Include a reading nook.",
        JAPANDI,
        OUTDOOR,
        "Add tasteful furniture and decor appropriate for Japandi, for an outdoor living area "
        f"in an Australian home. Do not move walls/doors/windows. {G} {AU} {JAPANDI_SEED} "
        "Include a reading nook.",
    ),
    (
        Mode.STAGING,
        None,
        None,
        None,
        "Add tasteful furniture and decor in a style that suits the space, for this room in an "
        f"Australian home. Do not move walls/doors/windows. {G} {AU}",
    ),
    (
        Mode.STAGING,
        None,
        None,
        LIVING,
        "Add tasteful furniture and decor in a style that suits the space, for a living room in "
        f"an Australian home. Do not move walls/doors/windows. {G} {AU}",
    ),
    (
        Mode.COMPOSE,
        "Use the rug from the reference",
        JAPANDI,
        LIVING,
        f"Base room + reference; Style: Japandi; Room type: Living room. {COMPOSE_IMAGES} "
        f"{G} {AU} {JAPANDI_SEED} Use the rug from the reference.",
    ),
    (Mode.COMPOSE, None, None, None, f"Base room + reference. {COMPOSE_IMAGES} {G} {AU}"),
    (
        Mode.COMPOSE,
        None,
        COASTAL,
        None,
        f"Base room + reference; Style: Coastal AU. {COMPOSE_IMAGES} {G} {AU} {COASTAL_SEED}",
    ),
    (
        Mode.IMAGINE,
        "A sunlit reading corner with a window seat",
        COASTAL,
        OUTDOOR,
        "Generate a photoreal interior concept for an outdoor living area in Coastal AU; "
        f"balanced composition, realistic materials, natural light. {AU} {COASTAL_SEED} "
        "A sunlit reading corner with a window seat.",
    ),
    (
        Mode.IMAGINE,
        "A sunlit reading corner",
        None,
        None,
        "Generate a photoreal interior concept; balanced composition, realistic materials, "
        f"natural light. {AU} A sunlit reading corner.",
    ),
    (
        Mode.IMAGINE,
        "Timber and stone",
        None,
        LIVING,
        "Generate a photoreal interior concept for a living room; balanced composition, "
        f"realistic materials, natural light. {AU} Timber and stone.",
    ),
]


@pytest.mark.parametrize(("mode", "user_text", "style", "room", "expected"), PINNED)
def test_composed_prompt_is_pinned(
    mode: Mode, user_text: str | None, style: Choice | None, room: Choice | None, expected: str
) -> None:
    assert compose_prompt(mode, user_text, style, room) == expected


def test_user_text_keeps_its_question_mark_and_loses_trailing_dots() -> None:
    asked = compose_prompt(Mode.REDESIGN, "Could it have a fireplace?", None, None)
    trailed = compose_prompt(Mode.REDESIGN, "More plants...", None, None)
    assert asked.endswith(f"{AU} Could it have a fireplace?")
    assert trailed.endswith(f"{AU} More plants.")


def test_every_configured_combination_composes_cleanly() -> None:
    config = load_runtime_config(CONFIG_FILE)
    styles = [None, *config.styles.values()]
    rooms = [None, *config.room_types.values()]
    for mode, style, room in product(Mode, styles, rooms):
        prompt = compose_prompt(mode, "Add plants", style, room)
        # Seed 003's order: template, guardrails + AU booster, style seed, user text.
        seed = f" {style.seed}." if style is not None else ""
        assert prompt.endswith(f"{AU}{seed} Add plants.")
        assert ".." not in prompt
        assert "  " not in prompt
        assert " ." not in prompt
        assert (G in prompt) is mode.keeps_structure
        if style is not None:
            assert style.label in prompt
            assert f"{style.seed}." in prompt
        assert compose_prompt(mode, "Add plants", style, room) == prompt


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Add   a rug  ", "Add a rug"),
        ("sofa\tand\nchairs\r\nnear\u00a0the\u2003window", "sofa and chairs near the window"),
        ("Cafe\u0301 table", "Caf\u00e9 table"),
        ("so\u200bfa with a\u202e rug\u2066", "sofa with a rug"),
        ("bell\x00 jar\x07 lamp\x1b", "bell jar lamp"),
        ("bar \u200b stools", "bar stools"),
        ("", None),
        (" \n\t\u200b ", None),
        (None, None),
    ],
)
def test_normalize_prompt(raw: str | None, expected: str | None) -> None:
    assert normalize_prompt(raw, Mode.REDESIGN, PROMPTS) == expected


def test_length_is_measured_after_normalization() -> None:
    exactly = "x" * 40
    assert normalize_prompt(f"   {exactly}   \n", Mode.STAGING, PROMPTS) == exactly
    with pytest.raises(ValidationError) as caught:
        normalize_prompt("x" * 41, Mode.STAGING, PROMPTS)
    assert caught.value.message == "prompt must be at most 40 characters"
    assert caught.value.reason == "VALIDATION_ERROR"


def test_length_is_counted_before_nfc_lengthens_the_text() -> None:
    """The catalog's maxLength counts what was typed; NFC turns U+0958 (a composition
    exclusion) into two code points, which must not make a prompt too long."""
    typed = ("\u0958\u0959\u095a\u095b" * 10)[:40]
    stored = normalize_prompt(typed, Mode.STAGING, PROMPTS)
    assert stored is not None
    assert len(stored) == 80


def test_a_huge_raw_prompt_is_refused_without_scanning_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_cleaning(raw: str) -> tuple[str, str]:
        raise AssertionError("a 10 MB prompt must be refused before it is normalized")

    monkeypatch.setattr(prompts_module, "_clean", no_cleaning)
    with pytest.raises(ValidationError, match="at most 1000 characters"):
        normalize_prompt("sofa " * 2_000_000, Mode.REDESIGN, Prompts())


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "ab",
        "a\u200bb",
        # Characters that show nothing are no prompt.
        "\u3164\u3164\u3164",  # Hangul fillers
        "\ufe0f\ufe0f\ufe0f",  # variation selectors
        "\u2800\u2800\u2800",  # blank Braille patterns
    ],
)
def test_imagine_needs_a_prompt_of_minimum_length(raw: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_prompt(raw, Mode.IMAGINE, PROMPTS)
    assert (
        caught.value.message == "imagine needs a prompt describing the room (at least 3 characters)"
    )


def test_imagine_accepts_the_minimum_length_and_other_modes_need_no_prompt() -> None:
    assert normalize_prompt(" abc ", Mode.IMAGINE, PROMPTS) == "abc"
    for mode in (Mode.REDESIGN, Mode.STAGING, Mode.COMPOSE):
        assert normalize_prompt(None, mode, PROMPTS) is None
