"""Copying a prediction's outputs into our public bucket, repeat-safely."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from generation import metrics
from generation.domain.context import GenerationContext
from generation.domain.jobs import variant_key

OUTPUT_CONTENT_TYPE = "image/jpeg"


async def store_render_variants(
    ctx: GenerationContext, render_id: uuid.UUID, output_urls: Sequence[str]
) -> list[str]:
    """Download each output and store it as ``renders/<renderId>/<idx>.jpg``.

    An object that already exists counts as done (a repeated webhook, or another
    instance that got there first), so nothing is downloaded twice after success.
    Raises ProviderError / StorageError; the caller leaves the job in flight so a
    retried webhook, a refresh or the sweep tries again.
    """
    keys: list[str] = []
    max_bytes = ctx.config.replicate.output_max_bytes
    for idx, url in enumerate(output_urls):
        key = variant_key(render_id, idx)
        if await ctx.storage.stat(ctx.public_bucket, key) is None:
            data = await ctx.provider.download_output(url, max_bytes)
            await ctx.storage.put_bytes(ctx.public_bucket, key, data, OUTPUT_CONTENT_TYPE)
            metrics.asset("stored")
        else:
            metrics.asset("already_stored")
        keys.append(key)
    return keys
