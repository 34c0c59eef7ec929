"""History page tokens: accepted only as issued, under the shared key, for their list."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from generation.domain.history import decode_token, encode_token
from kit.errors import ValidationError

KEY = b"k" * 32
OWNER = uuid.uuid4()
JOB = uuid.uuid4()
AT = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)


def test_a_token_names_the_position_it_was_issued_for() -> None:
    token = encode_token(KEY, OWNER, "failed", AT, JOB)
    assert decode_token(KEY, token, OWNER, "failed") == (AT, JOB)


def _spellings(token: str) -> list[str]:
    """The same bytes spelled otherwise, or with characters a lax decoder drops."""
    other_alphabet = token.replace("-", "+").replace("_", "/")
    return [
        token + "!!!",
        "*" + token,
        token[:10] + "." + token[10:],
        token + "~~",
        token + "==",
        token + " ",
        *([other_alphabet] if other_alphabet != token else []),
    ]


def test_only_the_exact_text_issued_is_accepted() -> None:
    token = encode_token(KEY, OWNER, None, AT, JOB)
    for spelling in _spellings(token):
        with pytest.raises(ValidationError):
            decode_token(KEY, spelling, OWNER, None)


def test_a_token_re_signed_without_the_key_is_refused() -> None:
    """The digest is an HMAC: anyone could recompute a plain hash for a position."""
    token = encode_token(KEY, OWNER, None, AT, JOB)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    version, micros, job_hex, status, _ = raw.split("|")
    payload = f"{version}|{int(micros) + 10**15}|{job_hex}|{status}"
    for digest in (
        hashlib.sha256(f"{OWNER}|{payload}".encode()).hexdigest()[:24],
        hashlib.sha256(f"{OWNER}|{payload}".encode()).hexdigest()[:32],
    ):
        forged = base64.urlsafe_b64encode(f"{payload}|{digest}".encode()).decode().rstrip("=")
        with pytest.raises(ValidationError):
            decode_token(KEY, forged, OWNER, None)


def test_another_key_owner_or_filter_refuses_the_token() -> None:
    token = encode_token(KEY, OWNER, "failed", AT, JOB)
    for key, owner, status in (
        (b"q" * 32, OWNER, "failed"),
        (KEY, uuid.uuid4(), "failed"),
        (KEY, OWNER, None),
        (KEY, OWNER, "canceled"),
    ):
        with pytest.raises(ValidationError):
            decode_token(key, token, owner, status)
