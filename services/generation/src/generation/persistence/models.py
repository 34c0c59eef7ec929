"""ORM models of the generation service: jobs, renders, render variants.

The constraints the invariants rely on live in the database (see the first
migration): one idempotency key per owner, one `starting|processing` job per
owner (partial unique index), one render per job, one variant per index.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from generation.domain.states import INFLIGHT, ChargeState, JobStatus, RefundState, sql_list
from kit.db import naming_metadata

JOB_STATUSES = tuple(JobStatus)
INFLIGHT_STATUSES = INFLIGHT
# Whether the job's generation was debited (or, refused by a plan change, waived) and
# given back at the usage service.
CHARGE_STATES = tuple(ChargeState)
REFUND_STATES = tuple(RefundState)
# Deleted jobs whose inputs, and jobs whose render files, are still to be removed.
INPUTS_PENDING = "deleted_at IS NOT NULL AND inputs_removed_at IS NULL"
FILES_PENDING = "files_due_at IS NOT NULL AND files_removed_at IS NULL"
# Succeeded, but its debit is not recorded yet (deferred while usage was unreachable).
DEBIT_DEFERRED = (
    f"status = '{JobStatus.SUCCEEDED.value}' AND charge_state = '{ChargeState.NONE.value}'"
    " AND prediction_id IS NOT NULL"
)
CHARGE_UNSETTLED = f"charge_state = '{ChargeState.NONE.value}' AND prediction_id IS NOT NULL"


class Base(DeclarativeBase):
    metadata = naming_metadata()


class GenerationJob(Base):
    __tablename__ = "generation_jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # Hash of the request (fields + input bytes): a key reused for another request is refused.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    room_type: Mapped[str | None] = mapped_column(String(64))
    style: Mapped[str | None] = mapped_column(String(64))
    prompt: Mapped[str | None] = mapped_column(Text)
    # Object keys in the private bucket, in input order.
    input_keys: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    prediction_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    charge_state: Mapped[str] = mapped_column(String(8), server_default=ChargeState.NONE.value)
    refund_state: Mapped[str] = mapped_column(String(8), server_default=RefundState.NONE.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Per-prediction poll throttle shared by all instances (conditional update).
    last_polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Taken from the sequence job_versions on every visible change (a trigger; see the
    # 0002 migration): the change feed's version of this job.
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('job_versions')"))
    # The prompt the model was sent, for support; never logged nor answered.
    composed_prompt: Mapped[str | None] = mapped_column(Text)
    # Refine: the owner's earlier job and variant whose image became input1.
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    source_variant_idx: Mapped[int | None] = mapped_column(Integer)
    # Set by DELETE (the job stays visible). Its inputs are then removed from storage;
    # inputs_removed_at records that this is done (the sweep retries until then).
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    inputs_removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Everything under the render's prefix (renders/<renderId>/) is to be removed since
    # files_due_at (a DELETE, a job that ended without output, a late applier's copy),
    # and was found removed at files_removed_at. files_round is bumped by every late
    # writer: a removal that read an older round may have listed before that write, so
    # it cannot mark the files removed. A removal within cleanup.LATE_WRITERS of the
    # job's last change is not recorded either: the prefix is listed once more at
    # files_look_again_at, that time's end (see domain/cleanup.py).
    files_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    files_removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    files_look_again_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    files_round: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The W3C traceparent of the submission (tracing on only): the webhook's and the
    # sweep's spans link to it (kit/tracing.py).
    traceparent: Mapped[str | None] = mapped_column(String(64))
    # When its owner asked to cancel it (before the provider is asked): the provider's
    # ``canceled`` webhook, should it end the job first, then says the owner canceled.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN {sql_list(JOB_STATUSES)}", name="status_known"),
        CheckConstraint(f"charge_state IN {sql_list(CHARGE_STATES)}", name="charge_state_known"),
        CheckConstraint(f"refund_state IN {sql_list(REFUND_STATES)}", name="refund_state_known"),
        UniqueConstraint("owner_id", "idempotency_key", name="uq_generation_jobs_owner_key"),
        UniqueConstraint("prediction_id", name="uq_generation_jobs_prediction_id"),
        Index(
            "uq_generation_jobs_one_inflight_per_owner",
            "owner_id",
            unique=True,
            postgresql_where=text(f"status IN {sql_list(INFLIGHT)}"),
        ),
        # Keyset pages of one owner's history, newest first (with and without a status).
        Index(
            "ix_generation_jobs_owner_history",
            "owner_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index(
            "ix_generation_jobs_owner_status_history",
            "owner_id",
            "status",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index(
            "ix_generation_jobs_inflight_updated",
            "updated_at",
            postgresql_where=text(f"status IN {sql_list(INFLIGHT)}"),
        ),
        Index(
            "ix_generation_jobs_refund_pending",
            "updated_at",
            postgresql_where=text(f"refund_state = '{RefundState.PENDING.value}'"),
        ),
        Index(
            "ix_generation_jobs_inputs_pending",
            "deleted_at",
            postgresql_where=text(INPUTS_PENDING),
        ),
        Index(
            "ix_generation_jobs_files_pending",
            "files_due_at",
            postgresql_where=text(FILES_PENDING),
        ),
        # Admission counts an owner's deferred debits (a handful at most, usually none).
        Index(
            "ix_generation_jobs_debit_deferred",
            "owner_id",
            postgresql_where=text(DEBIT_DEFERRED),
        ),
        # The sweep's settlement pass: jobs that reached the provider, not charged yet
        # (with ix_generation_jobs_refund_pending, so a pass reads no settled job).
        Index(
            "ix_generation_jobs_charge_unsettled",
            "updated_at",
            postgresql_where=text(CHARGE_UNSETTLED),
        ),
    )


class Render(Base):
    __tablename__ = "renders"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("generation_jobs.id", ondelete="CASCADE")
    )
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    mode: Mapped[str] = mapped_column(String(16))
    room_type: Mapped[str | None] = mapped_column(String(64))
    style: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("job_id", name="uq_renders_job_id"),
        Index("ix_renders_owner_created", "owner_id", "created_at"),
    )


class RenderVariant(Base):
    __tablename__ = "render_variants"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    render_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("renders.id", ondelete="CASCADE")
    )
    idx: Mapped[int] = mapped_column(Integer)
    # Key inside the public bucket: renders/<renderId>/<idx>.jpg
    object_key: Mapped[str] = mapped_column(String(200))
    # renders/<renderId>/<idx>.thumb.jpg (at most 512 px on its long side); the stored
    # image's size. None for variants stored before thumbnails existed (see backfill).
    thumbnail_key: Mapped[str | None] = mapped_column(String(200))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("render_id", "idx", name="uq_render_variants_render_idx"),
        CheckConstraint("idx >= 0", name="idx_non_negative"),
    )


class JobEvent(Base):
    """One visible change of a job, written by a trigger (see the 0002 migration).

    The change feed resumes from here; rows older than the feed's retention are pruned.
    """

    __tablename__ = "job_events"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (Index("ix_job_events_recorded_at", "recorded_at"),)


class HistoryCursorKey(Base):
    """The one key that signs history page tokens (see persistence/cursor_key.py)."""

    __tablename__ = "history_cursor_keys"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)
