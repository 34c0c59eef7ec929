"""A user's history: keyset pages of their jobs, newest first.

The page token is opaque to clients: the position of the last job of the page
(its creation time and id) and the status filter, with an HMAC over them and the
owner's id under a key every instance shares (``GenerationContext.cursor_key``). The
owner filter is what keeps users apart; the HMAC makes a token that was altered
(re-signed included), or that belongs to another owner or another filter, a
VALIDATION_ERROR instead of a silently different page. A token is accepted only in the
exact form it was issued (no extra characters, padding or other base64 alphabet).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from generation.domain import jobs
from generation.domain.context import GenerationContext
from kit.errors import ValidationError

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Tokens carry a version; only this one is accepted (an unkeyed v1 token is refused).
_VERSION = "v2"
# What this service writes: the URL-safe base64 alphabet without padding, and short.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAD_CURSOR = "cursor is not valid for this list."


@dataclass(frozen=True)
class HistoryPage:
    jobs: list[jobs.JobView]
    # Empty on the last page.
    next_token: str


async def list_generations(
    ctx: GenerationContext, owner_id: uuid.UUID, status: str | None, page_size: int, token: str
) -> HistoryPage:
    """One page of the owner's jobs (optionally of one status), newest first."""
    size = page_size or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE_SIZE}.")
    key = await ctx.cursor_key()
    before = decode_token(key, token, owner_id, status) if token else None
    async with ctx.reads() as stores:
        page = await stores.reads.page(owner_id, status, before, size + 1)
    if len(page) <= size:
        return HistoryPage(page, "")
    last = page[size - 1]
    return HistoryPage(page[:size], encode_token(key, owner_id, status, last.created_at, last.id))


def encode_token(
    key: bytes, owner_id: uuid.UUID, status: str | None, created_at: datetime, job_id: uuid.UUID
) -> str:
    """The token that continues after the job (``created_at``, ``job_id``)."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    payload = f"{_VERSION}|{micros}|{job_id.hex}|{status or ''}"
    text = f"{payload}|{_digest(key, owner_id, payload)}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(
    key: bytes, token: str, owner_id: uuid.UUID, status: str | None
) -> tuple[datetime, uuid.UUID]:
    """The position a token names; ValidationError when it is not this list's."""
    try:
        if not _TOKEN.fullmatch(token):
            raise ValueError("not a token this service writes")
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        version, micros, job_hex, token_status, digest = raw.decode("ascii").split("|")
        payload = f"{version}|{micros}|{job_hex}|{token_status}"
        authentic = hmac.compare_digest(digest, _digest(key, owner_id, payload))
        if not authentic or version != _VERSION or token_status != (status or ""):
            raise ValueError("not this list's token")
        position = _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=job_hex)
        # Only the exact text issued: no other spelling of the same fields.
        if encode_token(key, owner_id, status, *position) != token:
            raise ValueError("not in the form it was issued")
        return position
    except (ValueError, UnicodeError, OverflowError):
        raise ValidationError(_BAD_CURSOR) from None


def _digest(key: bytes, owner_id: uuid.UUID, payload: str) -> str:
    return hmac.new(key, f"{owner_id}|{payload}".encode(), hashlib.sha256).hexdigest()[:32]
