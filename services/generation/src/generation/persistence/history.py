"""The SQL of a user's history (one keyset page of jobs and their visible variants) and
of any set of jobs as clients see them (what the change feed carries).

Two statements per page whatever its size: the jobs (an index range scan on
``(owner_id, created_at DESC, id DESC)``, or with the status first when filtered,
so a page costs the same at 1k or 1M rows), then the live renders' variants of
the page's succeeded jobs.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from generation.domain.jobs import JobView, VariantRef
from generation.domain.states import JobStatus
from generation.persistence.models import GenerationJob, Render, RenderVariant
from generation.persistence.repositories import (
    VIEW_COLUMNS,
    variant_columns,
    variant_ref,
    view_columns,
)

_JOB = GenerationJob.__table__.c


async def load_job_page(
    session: AsyncSession,
    owner_id: uuid.UUID,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[JobView]:
    """Up to ``limit`` of the owner's jobs older than ``before``, newest first."""
    query = (
        select(*view_columns(_JOB))
        .where(_JOB.owner_id == owner_id)
        .order_by(_JOB.created_at.desc(), _JOB.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(_JOB.status == status)
    if before is not None:
        query = query.where(tuple_(_JOB.created_at, _JOB.id) < tuple_(*before))
    connection = await session.connection()
    rows = (await connection.execute(query)).all()
    jobs = [{name: row._mapping[name] for name in VIEW_COLUMNS} for row in rows]
    succeeded = [job["id"] for job in jobs if job["status"] == JobStatus.SUCCEEDED]
    return list(_with_renders(jobs, await _live_renders(session, succeeded)).values())


async def load_job_views(
    session: AsyncSession, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, JobView]:
    """The jobs named, as clients see them, by id (any owner's: the caller names the
    jobs it may show). Two statements for any number of jobs."""
    if not job_ids:
        return {}
    query = select(*view_columns(_JOB)).where(_JOB.id.in_(job_ids))
    connection = await session.connection()
    rows = (await connection.execute(query)).all()
    return _with_renders(
        [{name: row._mapping[name] for name in VIEW_COLUMNS} for row in rows],
        await _live_renders(session, [row.id for row in rows if row.status == JobStatus.SUCCEEDED]),
    )


def _with_renders(
    jobs: list[dict[str, Any]],
    renders: dict[uuid.UUID, tuple[uuid.UUID, tuple[VariantRef, ...]]],
) -> dict[uuid.UUID, JobView]:
    views = {}
    for job in jobs:
        render_id, variants = renders.get(job["id"], (None, ()))
        views[job["id"]] = JobView(**job, render_id=render_id, variants=variants)
    return views


async def _live_renders(
    session: AsyncSession, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID, tuple[VariantRef, ...]]]:
    """job id -> (render id, variants in order) for renders not deleted."""
    if not job_ids:
        return {}
    render, variant = Render.__table__.c, RenderVariant.__table__.c
    joined = Render.__table__.outerjoin(RenderVariant.__table__, variant.render_id == render.id)
    query = (
        select(render.job_id, render.id, *variant_columns())
        .select_from(joined)
        .where(and_(render.job_id.in_(job_ids), render.deleted_at.is_(None)))
        .order_by(render.job_id, variant.idx)
    )
    connection = await session.connection()
    found: dict[uuid.UUID, uuid.UUID] = {}
    variants: dict[uuid.UUID, list[VariantRef]] = defaultdict(list)
    for row in (await connection.execute(query)).all():
        found[row.job_id] = row.id
        if row.object_key is not None:
            variants[row.job_id].append(variant_ref(row))
    return {job_id: (render_id, tuple(variants[job_id])) for job_id, render_id in found.items()}
