"""Receiving a SubmitGeneration stream: the request part, then the inputs' chunks.

The rules are the contract's (SubmitGenerationPart): the request comes first
and once; chunks follow input after input in declared order and add up exactly
to each declared size. Any other stream is a VALIDATION_ERROR, and nothing has
been stored by then. An input declared over the upload limit is refused before
a single chunk is stored. A refusal is answered once the sender has finished (the
rest of its stream is read and dropped), so it reaches the sender as sent.

With an ``EarlyRefusal``, the first upload's first ``SCREEN_BYTES`` are screened as
they arrive (``images.prefix_refusal``): an upload they prove refused gets its answer
(``EarlyRefusal.answer``: the same order as the whole submission) without the rest.
A later upload is not answered early: the whole submission would answer an earlier
upload's refusal first, and that one's full check or decode is still to come.
Any refusal also asks the sender to stop sending (``EarlyRefusal.stop_sending``:
initial metadata, see the contract) before the rest is drained: the status still
follows the sender's end of stream, as grpc/grpc#36066 requires.

Each input is written to a named temporary file as it arrives (memory holds one
chunk; the decode worker later reads the file by its name), and its SHA-256 is
computed on the way for the idempotency fingerprint: the same value as hashing
the whole bytes. The files live as long as the ``received_submission`` block
and are closed when it ends, however it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import IO

from generation.api import mappers
from generation.domain.images import prefix_refusal, too_large
from generation.domain.spool import spooled_file
from generation.domain.submit_request import RawInput, SubmitCommand
from interior.generation.v1 import generation_pb2 as pb
from kit.errors import DomainError, ValidationError
from kit.logging import bind_context
from kit.runtime_config import Uploads
from kit.slots import Slots

# More than any mode takes; the mode's own check then names the right count.
MAX_DECLARED_INPUTS = 8
_NOT_FIRST = "The stream must start with the request, sent once."
_OUT_OF_ORDER = "Chunks must follow the declared inputs, in order."
_ENDED_EARLY = "The stream ended before every declared input was complete."
# What of an input is screened before the rest is stored: the JPEG and PNG header walks
# refuse hostile files within their first kilobytes (a PNG's 4096 chunks take 48 KiB).
SCREEN_BYTES = 64 * 1024


class EarlyRefusal:
    """How a refusal is answered before the stream ends (the servicer's side)."""

    def __init__(
        self,
        answer: Callable[
            [SubmitCommand, Sequence[str], DomainError, Callable[[], Awaitable[None]]],
            Awaitable[DomainError | None],
        ],
        stop_sending: Callable[[], Awaitable[object]],
    ) -> None:
        # The answer to the request (no inputs yet), given its declared inputs' fields,
        # the refusal of one of them and what to await once a refusal is certain;
        # None when it needs the whole request.
        self.answer = answer
        self._stop_sending = stop_sending
        self._stopped = False

    async def stop_sending(self) -> None:
        """Tell the sender (once) that its answer is decided: the rest is not needed."""
        if not self._stopped:
            self._stopped = True
            await self._stop_sending()


@dataclasses.dataclass
class _Input:
    """One declared input being received."""

    field: str
    size: int
    file: IO[bytes]
    digest: hashlib._Hash = dataclasses.field(default_factory=hashlib.sha256)
    received: int = 0
    screened: bool = False

    @property
    def complete(self) -> bool:
        return self.received == self.size

    def screen_due(self) -> bool:
        """Whether the first ``SCREEN_BYTES`` (or all of a smaller input) just arrived."""
        due = not self.screened and (self.received >= SCREEN_BYTES or self.complete)
        self.screened = self.screened or due
        return due

    def prefix(self) -> IO[bytes]:
        """The first ``SCREEN_BYTES`` received, as a file (the spool stays where it was)."""
        self.file.seek(0)
        data = self.file.read(SCREEN_BYTES)
        self.file.seek(0, 2)
        return io.BytesIO(data)

    def raw(self) -> RawInput:
        self.file.seek(0)
        return RawInput(self.field, self.file, self.size, self.digest.digest())


@asynccontextmanager
async def received_submission(
    parts: AsyncIterator[pb.SubmitGenerationPart],
    uploads: Uploads,
    early: EarlyRefusal | None = None,
    slots: Slots | None = None,
) -> AsyncIterator[SubmitCommand]:
    """The whole stream as a command whose inputs are open named temporary files.

    A submission that declares inputs holds one of ``slots`` (this instance's disk for
    spools) from its request until its inputs are stored (``inputs_stored``) or the
    block ends; one without inputs spools nothing and takes none. Refused for want of
    one, it is answered like any refusal: after the sender was told to stop and its
    stream drained.
    """
    # What the submission holds (its slot, its spool files), let go when its inputs are
    # stored, when it is refused, or at the block's end, whichever comes first.
    async with contextlib.AsyncExitStack() as held:
        try:
            command = await _receive(parts, uploads, early, held, slots)
        except Exception:
            # A refusal, or a failure of what answering it asks (the database, the
            # usage service): either way the status waits for the sender's end of
            # stream. Nothing of a refused stream is kept while it drains, nor its slot:
            # draining spools nothing.
            await held.aclose()
            if early is not None:
                with contextlib.suppress(Exception):  # a sender already gone: no one to tell
                    await early.stop_sending()
            await _drain(parts, MAX_DECLARED_INPUTS * uploads.max_bytes)
            raise

        async def inputs_stored() -> None:
            # Stored: the local copies and their slot go now, not after the provider
            # call that follows (a slow provider held every slot).
            await held.aclose()

        yield dataclasses.replace(command, inputs_stored=inputs_stored)


async def _drain(parts: AsyncIterator[pb.SubmitGenerationPart], budget: int) -> None:
    """Read (and drop) what the client still sends before answering a refusal.

    A status sent while the client is still writing can reach a gRPC client as a
    transport error (INTERNAL / CANCELLED) instead of the refusal (grpc/grpc#29615).
    Our edge always finishes its stream; a sender past ``budget`` bytes is not
    waited for.
    """
    received = 0
    with contextlib.suppress(Exception):
        async for part in parts:
            received += part.ByteSize()
            if received > budget:
                return


async def _receive(
    parts: AsyncIterator[pb.SubmitGenerationPart],
    uploads: Uploads,
    early: EarlyRefusal | None,
    held: contextlib.AsyncExitStack,
    slots: Slots | None,
) -> SubmitCommand:
    first = await anext(parts, None)
    if first is None or first.WhichOneof("part") != "request":
        raise ValidationError(_NOT_FIRST)
    request = first.request
    command = mappers.submit_command(request)
    bind_context(ownerId=str(command.owner_id))
    if slots is not None and request.inputs:
        await held.enter_async_context(slots.slot())
    declared = _declared(request, uploads)
    for item in declared:
        held.callback(item.file.close)

    async def screen(item: _Input) -> None:
        # Only the first upload: the whole submission answers the first refused input,
        # and an earlier one may still be refused by its full check or its decode.
        if early is None or item is not declared[0]:
            return
        # On the loop (64 KiB: 0.01 ms for a photo, at most ~1.5 ms for 4096 PNG chunk
        # headers): a thread hop would let the sender write megabytes more meanwhile.
        refusal = prefix_refusal(item.prefix(), uploads, item.field)
        if refusal is None:
            return
        fields = [item.field for item in declared]
        answer = await early.answer(command, fields, refusal, early.stop_sending)
        if answer is not None:
            raise answer

    await _receive_chunks(parts, declared, screen)
    return dataclasses.replace(command, inputs=tuple(item.raw() for item in declared))


def _declared(request: pb.SubmitGenerationRequest, uploads: Uploads) -> list[_Input]:
    """The declared inputs, checked; no spool is opened for a refused declaration."""
    if len(request.inputs) > MAX_DECLARED_INPUTS:
        raise ValidationError(f"At most {MAX_DECLARED_INPUTS} inputs may be declared.")
    fields = [mappers.input_field(request, index) for index in range(len(request.inputs))]
    for field, item in zip(fields, request.inputs, strict=True):
        if item.size_bytes < 1:
            raise ValidationError(f"{field} is empty.")
        if item.size_bytes > uploads.max_bytes:
            raise too_large(uploads, field)
    return [
        _Input(field, item.size_bytes, spooled_file())
        for field, item in zip(fields, request.inputs, strict=True)
    ]


async def _receive_chunks(
    parts: AsyncIterator[pb.SubmitGenerationPart],
    declared: list[_Input],
    screen: Callable[[_Input], Awaitable[None]],
) -> None:
    current = 0
    async for part in parts:
        if part.WhichOneof("part") != "chunk":
            raise ValidationError(_NOT_FIRST)
        chunk = part.chunk
        if current < len(declared) and declared[current].complete:
            current += 1
        if chunk.input_index != current or current >= len(declared):
            raise ValidationError(_OUT_OF_ORDER)
        data = chunk.data  # each read of the field is a copy
        if not data:
            raise ValidationError("A chunk must not be empty.")
        _append(declared[current], data)
        if declared[current].screen_due():
            await screen(declared[current])
    if not all(item.complete for item in declared):
        raise ValidationError(_ENDED_EARLY)


def _append(item: _Input, data: bytes) -> None:
    if item.received + len(data) > item.size:
        raise ValidationError(f"{item.field} has more bytes than declared.")
    # A local write of one chunk, to the page cache.
    item.file.write(data)
    item.digest.update(data)
    item.received += len(data)
