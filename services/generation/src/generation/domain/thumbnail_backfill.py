"""Thumbnails for renders stored before thumbnails existed.

Each variant without one is read from the public bucket, its thumbnail stored
beside it and recorded with a conditional update, so the backfill can run while
the service runs, twice, or on several machines at once. A variant whose stored
file is missing or not an image is skipped (and counted), never retried forever.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from generation.domain.assets import store_thumbnail
from generation.domain.cleanup import remove_render_files
from generation.domain.context import GenerationContext
from generation.domain.jobs import VariantRef
from generation.domain.records import PendingFiles
from kit.logging import get_logger
from kit.storage import StorageError

log = get_logger("generation.thumbnail_backfill")

BATCH = 100


@dataclass
class BackfillReport:
    made: int = 0
    skipped: int = 0
    unreadable: set[tuple[uuid.UUID, int]] = field(default_factory=set)


async def backfill_thumbnails(ctx: GenerationContext) -> BackfillReport:
    """Make every missing thumbnail; returns what was done."""
    report = BackfillReport()
    while True:
        async with ctx.transactions() as tx:
            pending = [
                row
                for row in await tx.renders.variants_without_thumbnail(
                    BATCH + len(report.unreadable)
                )
                if (row.render_id, row.idx) not in report.unreadable
            ]
        if not pending:
            return report
        for row in pending:
            variant = await _thumbnail_of(ctx, row.render_id, row.idx, row.object_key)
            if variant is None:
                report.unreadable.add((row.render_id, row.idx))
                report.skipped += 1
                continue
            async with ctx.transactions() as tx:
                recorded = await tx.renders.set_thumbnail(variant, row.render_id)
                # Not recorded: another run did it (the render is live, nothing to
                # claim), or the render was deleted while its thumbnail was made, perhaps
                # after its files were removed: the thumbnail must go too.
                stray = None
                if not recorded:
                    stray = await tx.removals.claim_stray_files(row.job_id, ctx.clock.now())
            report.made += int(recorded)
            if stray is not None:
                await _remove(ctx, stray)


async def _remove(ctx: GenerationContext, stray: PendingFiles) -> None:
    try:
        await remove_render_files(ctx, stray)
    except StorageError as error:  # due already: the sweep removes them
        log.warning("thumbnail.stray_deferred", jobId=str(stray.job_id), error=type(error).__name__)


async def _thumbnail_of(
    ctx: GenerationContext, render_id: uuid.UUID, idx: int, object_key: str
) -> VariantRef | None:
    data = await ctx.storage.get_bytes(
        ctx.public_bucket, object_key, ctx.config.replicate.output_max_bytes
    )
    if data is None:
        log.warning("thumbnail.source_missing", renderId=str(render_id), idx=idx)
        return None
    # In a thumbnail slot, as a success's own: a backfill never takes every core.
    return await store_thumbnail(ctx, render_id, idx, data, object_key)
