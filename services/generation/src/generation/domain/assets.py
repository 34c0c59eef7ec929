"""Copying a prediction's outputs into our public bucket, repeat-safely."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

from generation import metrics
from generation.domain.context import GenerationContext
from generation.domain.jobs import VariantRef, thumbnail_key, variant_key
from generation.domain.provider import OutputRefused
from generation.domain.thumbnails import NotAnImage, Thumbnail, as_jpeg, is_jpeg, make_thumbnail
from kit.logging import get_logger

log = get_logger("generation.assets")

T = TypeVar("T")

OUTPUT_CONTENT_TYPE = "image/jpeg"
# Outputs of one prediction copied at once (nano-banana answers one; others a few).
PARALLEL_COPIES = 4


async def store_render_variants(
    ctx: GenerationContext, render_id: uuid.UUID, output_urls: Sequence[str]
) -> list[VariantRef]:
    """Download each output and store it as ``renders/<renderId>/<idx>.jpg`` (a JPEG:
    an output in another format is converted), with its thumbnail as
    ``<idx>.thumb.jpg`` (an output that cannot be decoded is stored as it came and
    keeps none).

    Keys are derived from the render id, so a repeat (two appliers racing, or an
    attempt that stored the files but could not commit) overwrites the same objects
    with the same bytes. No existence check is made first: it would cost every
    success a storage round trip to save a copy only in those rare repeats (a job
    already succeeded never gets here). Raises OutputRefused (permanent) before any
    other ProviderError / StorageError, on which the caller leaves the job in
    flight so a retried webhook, a refresh or the sweep tries again.
    """
    slots = asyncio.Semaphore(PARALLEL_COPIES)
    max_bytes = ctx.config.replicate.output_max_bytes

    async def copy(idx: int, url: str) -> VariantRef:
        key = variant_key(render_id, idx)
        async with slots:
            data = await ctx.provider.download_output(url, max_bytes)
            if not is_jpeg(data):
                data = await _as_jpeg(ctx, data)
            # The original's PUT and the thumbnail (decode, scale, encode, PUT) come from
            # the same bytes, so they run at once: a success waits for the longer of the
            # two, not their sum. Both run to their end before any failure is raised.
            original, small = await asyncio.gather(
                ctx.storage.put_bytes(ctx.public_bucket, key, data, OUTPUT_CONTENT_TYPE),
                store_thumbnail(ctx, render_id, idx, data),
                return_exceptions=True,
            )
        for outcome in (original, small):
            if isinstance(outcome, BaseException):
                raise outcome
        metrics.asset("stored")
        return small if isinstance(small, VariantRef) else VariantRef(idx, key)

    # Every copy runs to its end, then the first failure (if any) is raised; a
    # refused output first of all, since it ends the job for good.
    results = await asyncio.gather(
        *(copy(i, url) for i, url in enumerate(output_urls)), return_exceptions=True
    )
    failures = [result for result in results if isinstance(result, BaseException)]
    refusals = [failure for failure in failures if isinstance(failure, OutputRefused)]
    if refusals or failures:
        raise (refusals or failures)[0]
    return [result for result in results if not isinstance(result, BaseException)]


async def store_thumbnail(
    ctx: GenerationContext,
    render_id: uuid.UUID,
    idx: int,
    data: bytes,
    original_key: str | None = None,
) -> VariantRef | None:
    """Make variant ``idx``'s thumbnail from its bytes and store it as
    ``<idx>.thumb.jpg``: the variant with it, or None (logged) when they are no image.
    ``original_key``: where the variant itself is, when not at its usual key."""
    thumbnail = await _thumbnail(ctx, data)
    if thumbnail is None:
        return None
    key, small = original_key or variant_key(render_id, idx), thumbnail_key(render_id, idx)
    await ctx.storage.put_bytes(ctx.public_bucket, small, thumbnail.jpeg, OUTPUT_CONTENT_TYPE)
    return VariantRef(idx, key, small, thumbnail.width, thumbnail.height)


async def _as_jpeg(ctx: GenerationContext, data: bytes) -> bytes:
    """The output as a JPEG, or as it came when it is no image (stored all the same,
    without a thumbnail)."""
    return await _decoded_off_loop(ctx, as_jpeg, data, "assets.conversion_failed") or data


async def _thumbnail(ctx: GenerationContext, data: bytes) -> Thumbnail | None:
    """The output's thumbnail, or None when it is no image."""
    return await _decoded_off_loop(ctx, make_thumbnail, data, "assets.thumbnail_failed")


async def _decoded_off_loop(
    ctx: GenerationContext, work: Callable[[bytes], T], data: bytes, failed: str
) -> T | None:
    """``work`` on the output in a thread (one of the thumbnail slots), or None (logged
    as ``failed``) when the output is no image."""
    try:
        async with ctx.thumbnail_slots:
            return await asyncio.to_thread(work, data)
    except NotAnImage as error:
        log.warning(failed, error=str(error))
        return None
