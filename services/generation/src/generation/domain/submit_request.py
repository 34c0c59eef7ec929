"""What a submission asks for, as the transport hands it over, and what it answers."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO

from generation.domain.jobs import JobView
from generation.domain.refine import SourceRef


@dataclass(frozen=True)
class RawInput:
    """One upload as received: a seekable file the caller owns (and closes)."""

    field: str
    file: IO[bytes]
    size: int
    # SHA-256 of the bytes, computed while they arrived (for the fingerprint).
    sha256: bytes


@dataclass(frozen=True)
class SubmitCommand:
    owner_id: uuid.UUID
    idempotency_key: str | None
    mode: str
    prompt: str | None
    room_type: str | None
    style: str | None
    inputs: tuple[RawInput, ...]
    request_base_url: str | None
    # Refine: an earlier result of the owner's that becomes input1 (see domain.refine).
    source: SourceRef | None = None
    # Awaited once the inputs are stored: the intake's local copies (and the instance's
    # submission slot they hold) are not needed any more, while the provider call that
    # follows may take its time.
    inputs_stored: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SubmitResult:
    # The job as its owner sees it (for a replay, as GET shows it now).
    job: JobView
    replayed: bool


def fingerprint(command: SubmitCommand) -> str:
    """A digest of everything the request asks for, to detect a reused key."""
    digest = hashlib.sha256()
    for part in (command.mode, command.prompt or "", command.room_type or "", command.style or ""):
        digest.update(part.encode() + b"\x00")
    for item in command.inputs:
        digest.update(item.sha256)
    # A refine's source is hashed only when present, so a plain submission's digest (and
    # the keys stored with it) stays what it was before refines existed.
    if command.source is not None:
        digest.update(f"source:{command.source.job_id}:{command.source.variant_idx}".encode())
    return digest.hexdigest()
