"""Invariant probes for the concurrency suite: DB samples while running, books at the end."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from generation.domain.sweep import sweep_once
from generation.persistence.models import (
    INFLIGHT_STATUSES,
    GenerationJob,
    Render,
    RenderVariant,
)
from generation.wiring import WiredContext
from kit.db import session_scope


class InflightSampler:
    """Samples the generation DB: never more than one in-flight job per owner.

    It has its own connection, so it never takes one from the services' pools.
    """

    def __init__(self, database_url: str) -> None:
        self._engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
        self._sessions = async_sessionmaker(self._engine)
        self.samples = 0
        self.max_inflight_total = 0
        self.violations: list[tuple[str, int]] = []

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                counts = await inflight_counts(self._sessions)
                self.samples += 1
                self.max_inflight_total = max(self.max_inflight_total, len(counts))
                self.violations += [(str(owner), n) for owner, n in counts.items() if n > 1]
                await asyncio.sleep(0.05)
        finally:
            await self._engine.dispose()


async def inflight_counts(sessions: async_sessionmaker[AsyncSession]) -> dict[uuid.UUID, int]:
    """In-flight (starting/processing) jobs per owner, right now."""
    async with session_scope(sessions) as session:
        rows = (
            await session.execute(
                select(GenerationJob.owner_id, func.count())
                .where(GenerationJob.status.in_(INFLIGHT_STATUSES))
                .group_by(GenerationJob.owner_id)
            )
        ).all()
    return {owner: count for owner, count in rows}


async def extra_sweeps(contexts: Iterable[WiredContext], stop: asyncio.Event) -> int:
    """More sweep passes on every instance, racing the services' own sweepers."""
    passes = 0
    while not stop.is_set():
        for ctx in contexts:
            await sweep_once(ctx)
            passes += 1
        await asyncio.sleep(0.3)
    return passes


async def jobs_of(ctx: WiredContext, owners: Iterable[uuid.UUID]) -> list[GenerationJob]:
    async with session_scope(ctx.sessions) as session:
        result = await session.scalars(
            select(GenerationJob).where(GenerationJob.owner_id.in_(list(owners)))
        )
        return list(result.all())


async def render_counts(ctx: WiredContext, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Renders per job (every job listed, 0 when none)."""
    async with session_scope(ctx.sessions) as session:
        rows = (
            await session.execute(
                select(Render.job_id, func.count())
                .where(Render.job_id.in_(job_ids))
                .group_by(Render.job_id)
            )
        ).all()
    counts = dict.fromkeys(job_ids, 0)
    counts.update({job_id: count for job_id, count in rows})
    return counts


async def variant_keys(ctx: WiredContext, job_id: uuid.UUID) -> list[str]:
    async with session_scope(ctx.sessions) as session:
        result = await session.scalars(
            select(RenderVariant.object_key)
            .join(Render, Render.id == RenderVariant.render_id)
            .where(Render.job_id == job_id)
        )
        return list(result.all())


async def ledger_entries(usage_url: str, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, Counter[str]]:
    """Debits and credits per job, read from the usage service's own table."""
    engine = create_async_engine(usage_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text("SELECT job_id, kind FROM usage_ledger WHERE job_id = ANY(:ids)"),
                    {"ids": job_ids},
                )
            ).all()
    finally:
        await engine.dispose()
    entries: dict[uuid.UUID, Counter[str]] = {job_id: Counter() for job_id in job_ids}
    for job_id, kind in rows:
        entries[job_id][kind] += 1
    return entries
