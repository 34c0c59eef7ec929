"""A submission's images: checked and cleaned, then stored in the private bucket.

Inputs arrive as files (spooled by the caller, who closes them); the cleaned
copies are temporary files too, closed here once stored. No step holds a whole
upload in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable
from typing import IO, TypeVar

from generation.domain.context import GenerationContext
from generation.domain.images import CleanImage
from generation.domain.refine import copy_variant, source_variant
from generation.domain.submit_request import SubmitCommand
from kit.errors import UpstreamError
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.submission")
T = TypeVar("T")


async def upload_inputs(ctx: GenerationContext, command: SubmitCommand) -> list[str]:
    """Every upload checked, stripped and stored, in order; their keys.

    An upload that can be stripped before it is decoded (a JPEG that keeps its pixels,
    ``ImageDecoder.strip``) is stored while a worker proves it whole: the
    submission waits for the longer of the two, not their sum. A refusal removes what
    was stored (this upload's and the earlier ones'), and answers as ``clean`` would.
    The cleaned copies are closed here once stored.
    """
    keys: list[str] = []
    try:
        for item in command.inputs:
            keys.append(await _upload_one(ctx, command.owner_id, item.file, item.field))
    except BaseException:
        await discard_inputs(ctx, keys)
        raise
    return keys


async def _upload_one(
    ctx: GenerationContext, owner_id: uuid.UUID, file: IO[bytes], field: str
) -> str:
    stripped = await ctx.decoder.strip(file, field)
    if stripped is None:
        image = await ctx.decoder.clean(file, field)
        try:
            return await _store(ctx, owner_id, image)
        finally:
            image.close()
    both = asyncio.gather(
        _store(ctx, owner_id, stripped.image),
        ctx.decoder.prove(stripped, field),
        return_exceptions=True,
    )
    try:
        stored, proof = await asyncio.shield(both)
    except asyncio.CancelledError:
        # Cut short: what is under way unwinds as before (a PUT in flight removes what
        # it wrote). But both may have ended just before, the key stored and not yet
        # handed back: then it is removed here.
        both.cancel()
        await asyncio.shield(_discard_once_ended(ctx, both))
        raise
    finally:
        stripped.image.close()
    if isinstance(proof, BaseException):
        if isinstance(stored, str):
            await discard_inputs(ctx, [stored])
        raise proof
    if isinstance(stored, BaseException):
        raise stored
    return stored


async def _discard_once_ended(
    ctx: GenerationContext, both: asyncio.Future[tuple[str | BaseException, BaseException | None]]
) -> None:
    try:
        stored = (await both)[0]
    except BaseException:  # cancelled while under way: it unwound itself
        return
    if isinstance(stored, str):
        await discard_inputs(ctx, [stored])


async def _store(ctx: GenerationContext, owner_id: uuid.UUID, image: CleanImage) -> str:
    key = input_key(owner_id, image.extension)
    image.file.seek(0)
    try:
        await _written(
            ctx,
            key,
            ctx.storage.put_file(ctx.private_bucket, key, image.file, image.size, image.mime_type),
        )
    except StorageError as error:
        log.error("inputs.upload_failed", ownerId=str(owner_id), error=type(error).__name__)
        # The PUT may have stored the object before its answer was lost (a read timeout
        # after the server wrote it): removed, or named as orphaned when it cannot be.
        await discard_inputs(ctx, [key])
        raise UpstreamError("Your images could not be stored. Please try again.") from error
    return key


async def with_source(
    ctx: GenerationContext, command: SubmitCommand, upload_keys: list[str]
) -> list[str]:
    """The inputs' keys: the refined variant (copied) first, then the uploads' keys.

    When the copy fails, the uploads are removed too."""
    if command.source is None:
        return upload_keys
    source_key = input_key(command.owner_id, "jpg")
    try:
        variant = await source_variant(ctx, command.owner_id, command.source)
    except BaseException:
        await discard_inputs(ctx, upload_keys)
        raise
    copy = copy_variant(ctx, command.owner_id, command.source, variant, source_key)
    try:
        await _written(ctx, source_key, copy)
    except BaseException:
        # Its object may be stored: before the copy's answer was lost, or before the
        # source turned out deleted meanwhile, or the read after it failed.
        await discard_inputs(ctx, [*upload_keys, source_key])
        raise
    return [source_key, *upload_keys]


def input_key(owner_id: uuid.UUID, extension: str) -> str:
    """A new key in the owner's private inputs."""
    return f"{owner_id}/inputs/{uuid.uuid4()}.{extension}"


async def _written(ctx: GenerationContext, key: str, write: Awaitable[T]) -> T:
    """``write``, which stores ``key``, awaited. The storage client writes in a thread,
    which a cancellation (the submission's deadline, its client gone) does not stop:
    the object may be stored after the submission gave up. So a cancelled caller waits
    for the write to end and removes what it stored before it lets the cancellation on."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.shield(_remove_once_written(ctx, task, key))
        raise


async def _remove_once_written(ctx: GenerationContext, task: asyncio.Future[T], key: str) -> None:
    with contextlib.suppress(Exception):  # failed: nothing stored (removing it is harmless)
        await task
    await discard_inputs(ctx, [key])


async def discard_inputs(ctx: GenerationContext, keys: list[str]) -> None:
    """Remove uploaded inputs that no job will reference; loud when it cannot."""
    if not keys:
        return
    try:
        await ctx.storage.remove(ctx.private_bucket, keys)
    except StorageError:
        log.error("inputs.orphaned", bucket=ctx.private_bucket, keys=keys)
