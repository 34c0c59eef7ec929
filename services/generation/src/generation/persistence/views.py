"""The SQL of jobs as clients see them: one of an owner's jobs, a keyset page of their
history, and any set of jobs (what the change feed carries), each with its live
render's variants.

One job is one statement (the job joined to its render and variants). A history page
is two statements whatever its size: the jobs (an index range scan on
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

from sqlalchemy import Select, and_, bindparam, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from generation.domain.jobs import JobView, VariantRef
from generation.domain.states import JobStatus
from generation.persistence.models import GenerationJob, Render, RenderVariant
from generation.persistence.rows import (
    job_view,
    variant_columns,
    variant_ref,
    view_columns,
    view_fields,
)

_JOB = GenerationJob.__table__.c


def _job_view_statement() -> Select[Any]:
    """The owner's job, its live render and that render's variants: one SELECT.

    A render shows only for a succeeded job and until it is soft-deleted; one row
    comes back per variant (the job repeated), or one row with no render. Core
    columns, built once: no ORM identity map or statement building per GET.
    """
    job, render, variant = GenerationJob.__table__.c, Render.__table__.c, RenderVariant.__table__.c
    joined = GenerationJob.__table__.outerjoin(
        Render.__table__,
        and_(
            render.job_id == job.id, job.status == JobStatus.SUCCEEDED, render.deleted_at.is_(None)
        ),
    ).outerjoin(RenderVariant.__table__, variant.render_id == render.id)
    return (
        select(
            *view_columns(job),
            render.id.label("render_id"),
            *variant_columns(),
        )
        .select_from(joined)
        .where(job.id == bindparam("job_id"), job.owner_id == bindparam("owner_id"))
        .order_by(variant.idx)
    )


_JOB_VIEW = _job_view_statement()


async def load_job_view(
    session: AsyncSession, owner_id: uuid.UUID, job_id: uuid.UUID
) -> JobView | None:
    """The owner's job as clients see it, or None (missing, or someone else's)."""
    connection = await session.connection()
    rows = (await connection.execute(_JOB_VIEW, {"job_id": job_id, "owner_id": owner_id})).all()
    if not rows:
        return None
    first = rows[0]
    return job_view(
        view_fields(first),
        first.render_id,
        tuple(variant_ref(row) for row in rows if row.object_key is not None),
    )


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
    jobs = [view_fields(row) for row in rows]
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
        [view_fields(row) for row in rows],
        await _live_renders(session, [row.id for row in rows if row.status == JobStatus.SUCCEEDED]),
    )


def _with_renders(
    jobs: list[dict[str, Any]],
    renders: dict[uuid.UUID, tuple[uuid.UUID, tuple[VariantRef, ...]]],
) -> dict[uuid.UUID, JobView]:
    views = {}
    for job in jobs:
        render_id, variants = renders.get(job["id"], (None, ()))
        views[job["id"]] = job_view(job, render_id, variants)
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
