"""A submission's images: checked and cleaned, then stored in the private bucket.

Inputs arrive as files (spooled by the caller, who closes them); the cleaned
copies are temporary files too, closed by whoever asked for them. No step
holds a whole upload in memory.
"""

from __future__ import annotations

import uuid

from generation.domain.context import GenerationContext
from generation.domain.images import CleanImage
from generation.domain.refine import copy_source_input
from generation.domain.submit_request import SubmitCommand
from kit.errors import UpstreamError
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.submission")


async def clean_images(ctx: GenerationContext, command: SubmitCommand) -> list[CleanImage]:
    """Every upload checked and stripped (``decoder``: budgeted workers); close them after."""
    cleaned: list[CleanImage] = []
    try:
        for item in command.inputs:
            cleaned.append(await ctx.decoder.clean(item.file, item.field))
    except BaseException:
        close_all(cleaned)
        raise
    return cleaned


def close_all(images: list[CleanImage]) -> None:
    """Close the cleaned copies (temporary files)."""
    for image in images:
        image.close()


async def store_inputs(
    ctx: GenerationContext, command: SubmitCommand, images: list[CleanImage]
) -> list[str]:
    """The inputs' keys: the refined variant (copied) first, then the uploads."""
    if command.source is None:
        return await _upload_inputs(ctx, command.owner_id, images)
    source_key = await copy_source_input(ctx, command.owner_id, command.source)
    try:
        return [source_key, *await _upload_inputs(ctx, command.owner_id, images)]
    except BaseException:
        await discard_inputs(ctx, [source_key])
        raise


async def _upload_inputs(
    ctx: GenerationContext, owner_id: uuid.UUID, images: list[CleanImage]
) -> list[str]:
    keys: list[str] = []
    try:
        for image in images:
            key = f"{owner_id}/inputs/{uuid.uuid4()}.{image.extension}"
            image.file.seek(0)
            await ctx.storage.put_file(
                ctx.private_bucket, key, image.file, image.size, image.mime_type
            )
            keys.append(key)
    except StorageError as error:
        await discard_inputs(ctx, keys)
        log.error("inputs.upload_failed", ownerId=str(owner_id), error=type(error).__name__)
        raise UpstreamError("Your images could not be stored. Please try again.") from error
    return keys


async def discard_inputs(ctx: GenerationContext, keys: list[str]) -> None:
    """Remove uploaded inputs that no job will reference; loud when it cannot."""
    if not keys:
        return
    try:
        await ctx.storage.remove(ctx.private_bucket, keys)
    except StorageError:
        log.error("inputs.orphaned", bucket=ctx.private_bucket, keys=keys)
