"""A user's history: keyset pages of their jobs, newest first.

The page token is opaque to clients: the position of the last job of the page
(its creation time and id) and the status filter, with a digest over them and the
owner's id. The digest is not a secret (the owner filter is what keeps users
apart); it makes a token that was altered, or that belongs to another owner or
another filter, a VALIDATION_ERROR instead of a silently different page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from generation.domain import jobs
from generation.domain.context import GenerationContext
from kit.errors import ValidationError

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_VERSION = "v1"
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
    before = decode_token(token, owner_id, status) if token else None
    async with ctx.reads() as stores:
        page = await stores.reads.page(owner_id, status, before, size + 1)
    if len(page) <= size:
        return HistoryPage(page, "")
    last = page[size - 1]
    return HistoryPage(page[:size], encode_token(owner_id, status, last.created_at, last.id))


def encode_token(
    owner_id: uuid.UUID, status: str | None, created_at: datetime, job_id: uuid.UUID
) -> str:
    """The token that continues after the job (``created_at``, ``job_id``)."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    payload = f"{_VERSION}|{micros}|{job_id.hex}|{status or ''}"
    text = f"{payload}|{_digest(owner_id, payload)}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_token(token: str, owner_id: uuid.UUID, status: str | None) -> tuple[datetime, uuid.UUID]:
    """The position a token names; ValidationError when it is not this list's."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        version, micros, job_hex, token_status, digest = text.split("|")
        payload = f"{version}|{micros}|{job_hex}|{token_status}"
        authentic = hmac.compare_digest(digest, _digest(owner_id, payload))
        if not authentic or version != _VERSION or token_status != (status or ""):
            raise ValueError("not this list's token")
        return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=job_hex)
    except (ValueError, UnicodeError, OverflowError):
        raise ValidationError(_BAD_CURSOR) from None


def _digest(owner_id: uuid.UUID, payload: str) -> str:
    return hashlib.sha256(f"{owner_id}|{payload}".encode()).hexdigest()[:24]
