"""Rows of generation's tables as the domain's values, shared by every SQL module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Update, case, literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import CursorResult, Row
from sqlalchemy.ext.asyncio import AsyncSession

from generation.domain.jobs import JobView, VariantRef
from generation.domain.records import Job
from generation.persistence.models import GenerationJob, RenderVariant

# The row's columns a JobView carries, by name (the rest is its render and variants).
VIEW_COLUMNS = (
    "id",
    "owner_id",
    "prediction_id",
    "status",
    "mode",
    "room_type",
    "style",
    "error_code",
    "error_message",
    "created_at",
    "updated_at",
    "completed_at",
    "version",
    "input_keys",
    "source_job_id",
)


def view_columns(table: Any) -> list[Any]:
    """VIEW_COLUMNS of ``table`` (the jobs table's columns) as a view shows them: a
    deleted job's inputs are gone (or going) from storage, so it shows none."""
    columns = [table[name] for name in VIEW_COLUMNS]
    columns[VIEW_COLUMNS.index("input_keys")] = case(
        (table.deleted_at.is_(None), table.input_keys), else_=literal([], JSONB)
    ).label("input_keys")
    return columns


# The row's columns a Job carries (``to_job``), for statements that return the row.
JOB_COLUMNS = (
    *VIEW_COLUMNS,
    "request_fingerprint",
    "charge_state",
    "refund_state",
    "traceparent",
)


def to_job(row: GenerationJob | Row[Any]) -> Job:
    """The domain's snapshot of a loaded row (an ORM object or a Core row of JOB_COLUMNS)."""
    return Job(
        id=row.id,
        owner_id=row.owner_id,
        prediction_id=row.prediction_id,
        status=row.status,
        mode=row.mode,
        room_type=row.room_type,
        style=row.style,
        error_code=row.error_code,
        error_message=row.error_message,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        version=row.version,
        input_keys=tuple(row.input_keys),
        source_job_id=row.source_job_id,
        request_fingerprint=row.request_fingerprint,
        charge_state=row.charge_state,
        refund_state=row.refund_state,
        traceparent=row.traceparent,
    )


def to_jobs(rows: Sequence[GenerationJob]) -> list[Job]:
    return [to_job(row) for row in rows]


async def update_matched(session: AsyncSession, statement: Update) -> bool:
    """Run a conditional update; True when it matched a row."""
    result = cast("CursorResult[Any]", await session.execute(statement))
    return result.rowcount > 0


def variant_columns() -> tuple[Any, ...]:
    """The columns a VariantRef is read from (``variant_ref`` builds it from a row)."""
    variant = RenderVariant.__table__.c
    return (variant.idx, variant.object_key, variant.thumbnail_key, variant.width, variant.height)


def variant_ref(row: Any) -> VariantRef:
    """A VariantRef from a row that selected ``variant_columns()``."""
    return VariantRef(row.idx, row.object_key, row.thumbnail_key, row.width, row.height)


def view_fields(row: Row[Any]) -> dict[str, Any]:
    """A row that selected ``view_columns`` as JobView's own fields (no render yet)."""
    return {name: row._mapping[name] for name in VIEW_COLUMNS}


def job_view(fields: dict[str, Any], render_id: Any, variants: tuple[VariantRef, ...]) -> JobView:
    """A JobView from ``view_fields`` and its live render."""
    return JobView(**fields, render_id=render_id, variants=variants)
