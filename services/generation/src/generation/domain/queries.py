"""Reading one owner's jobs (a stale in-flight job is refreshed from the provider first)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.refresh import refresh_if_stale
from kit.errors import NotFound


async def load_view(ctx: GenerationContext, owner_id: uuid.UUID, job_id: uuid.UUID) -> jobs.JobView:
    """The owner's job with its visible variants; NotFound for anyone else's."""
    async with ctx.reads() as stores:
        view = await stores.reads.view(owner_id, job_id)
    if view is None:
        raise NotFound("Generation not found.")
    return view


async def load_views(
    ctx: GenerationContext, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, jobs.JobView]:
    """The jobs named, by id, whoever owns them (the change feed's; missing ones left
    out): one read for a whole burst of changes."""
    async with ctx.reads() as stores:
        return await stores.reads.views(job_ids)


async def get_generation(
    ctx: GenerationContext, owner_id: uuid.UUID, job_id: uuid.UUID
) -> jobs.JobView:
    """The job; a stale in-flight one is refreshed from the provider first."""
    view = await load_view(ctx, owner_id, job_id)
    if await refresh_if_stale(ctx, view):
        view = await load_view(ctx, owner_id, job_id)
    return view
