"""SQL of ``generation_jobs``: the submission's prebuilt statements and the job store.
Renders (``renders.py``), the views clients see (``views.py``), the removal queue,
the change feed and the cursor key have modules of their own.

Repositories are built from a session and never commit: the caller's
``session_scope`` is the transaction. Status changes are conditional updates
(``WHERE status IN (...)``), so concurrent appliers cannot move a job backwards
or finish it twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    String,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from generation.domain.jobs import VariantRef
from generation.domain.ports import PENDING_IDS_NAMED, AdmissionFacts
from generation.domain.records import (
    ChargeUpdate,
    Inserted,
    InsertOutcome,
    Job,
    KeyTaken,
    NewJob,
    SlotTaken,
    TerminalUpdate,
)
from generation.domain.states import (
    ENDED_WITHOUT_OUTPUT,
    INFLIGHT,
    ChargeState,
    JobStatus,
    RefundState,
    sql_list,
)
from generation.persistence.models import (
    DEBIT_DEFERRED,
    INFLIGHT_STATUSES,
    GenerationJob,
)
from generation.persistence.rows import JOB_COLUMNS, to_job, to_jobs, update_matched

# A job's success: the conditional update, then its render and variants from the row it
# returned (so nothing is inserted when the job was no longer in flight). The renders
# trigger bumps the job's version after the statement, as it does for any render insert.
_SUCCEEDED_WITH_RENDER = text(
    f"""
WITH job AS (
    UPDATE generation_jobs
       SET status = '{JobStatus.SUCCEEDED.value}', completed_at = :completed_at, updated_at = :now
     WHERE id = :job_id AND status IN {sql_list(INFLIGHT)}
 RETURNING id, owner_id, mode, room_type, style
), render AS (
    INSERT INTO renders (id, job_id, owner_id, mode, room_type, style)
    SELECT :render_id, id, owner_id, mode, room_type, style FROM job
    ON CONFLICT (job_id) DO NOTHING
), variants AS (
    INSERT INTO render_variants (id, render_id, idx, object_key, thumbnail_key, width, height)
    SELECT v.id, :render_id, v.idx, v.object_key, v.thumbnail_key, v.width, v.height
      FROM job CROSS JOIN jsonb_to_recordset(CAST(:variants AS jsonb)) AS v(
           id uuid, idx integer, object_key text, thumbnail_key text, width integer,
           height integer)
    ON CONFLICT (render_id, idx) DO NOTHING
)
SELECT count(*) FROM job
"""  # noqa: S608 (only our own status constants are formatted in)
).bindparams(
    bindparam("job_id", type_=PG_UUID(as_uuid=True)),
    bindparam("render_id", type_=PG_UUID(as_uuid=True)),
    bindparam("completed_at", type_=DateTime(timezone=True)),
    bindparam("now", type_=DateTime(timezone=True)),
    bindparam("variants", type_=String()),
)


_TABLE = cast("Table", GenerationJob.__table__)
_JOBS = _TABLE.c
_RETURNED = [_JOBS[name] for name in JOB_COLUMNS]


# The submission's statements, built once as Core (no ORM execution, no statement
# building or cache-key walk per call): the in-flight pre-check, the insert, the attach
# and the charge. The writes return the row, so nobody reads it back.
_OWNER = _JOBS.owner_id == bindparam("owner_id")
_ENDED = _JOBS.status.in_(ENDED_WITHOUT_OUTPUT)


def _admission_facts() -> Any:
    """Whether the owner has a job in flight, and their jobs whose debit is deferred."""
    inflight = exists().where(_OWNER, _JOBS.status.in_(INFLIGHT_STATUSES))
    deferred = (
        select(func.count())
        .select_from(_TABLE)
        # As constants, the index's own predicate: with bound values a generic plan
        # could not use the partial index.
        .where(_OWNER, text(DEBIT_DEFERRED))
        .scalar_subquery()
    )
    deferred_ids = func.array(
        select(_JOBS.id)
        .where(_OWNER, text(DEBIT_DEFERRED))
        .limit(PENDING_IDS_NAMED)
        .scalar_subquery()
    )
    return select(
        inflight.label("inflight"),
        deferred.label("pending_debits"),
        deferred_ids.label("pending_job_ids"),
    )


def _attach_prediction() -> Any:
    """The run attached to a job still starting without one; the row, or nothing."""
    return (
        update(_TABLE)
        .where(
            _JOBS.id == bindparam("job_id"),
            _JOBS.status == JobStatus.STARTING,
            _JOBS.prediction_id.is_(None),
        )
        .values(prediction_id=bindparam("new_prediction_id"), updated_at=bindparam("now"))
        .returning(*_RETURNED)
    )


def _mark_charged() -> Any:
    """The debit recorded and, for a job that ended meanwhile, its refund requested, in
    one statement (a job already charged matches only while its refund is still to be
    requested). A refund is pending only once charged, so PENDING returned here was
    set here. A job that ends after its charge has its refund requested by
    ``JobRepository._request_refund_if_charged``, in the transaction that ends it."""
    return (
        update(_TABLE)
        .where(
            _JOBS.id == bindparam("job_id"),
            or_(
                _JOBS.charge_state == ChargeState.NONE,
                # Waived as never debited after it ended, and its late debit landed
                # after all: recorded, and given back like any ended job's.
                and_(_JOBS.charge_state == ChargeState.WAIVED, _ENDED),
                and_(
                    _JOBS.charge_state == ChargeState.CHARGED,
                    _ENDED,
                    _JOBS.refund_state == RefundState.NONE,
                ),
            ),
        )
        .values(
            charge_state=ChargeState.CHARGED,
            refund_state=case(
                (and_(_ENDED, _JOBS.refund_state == RefundState.NONE), RefundState.PENDING),
                else_=_JOBS.refund_state,
            ),
            # Not updated_at: the charge is bookkeeping, not part of the job as shown,
            # and a change the feed gives no version must not show in updatedAt either.
        )
        .returning(*_RETURNED)
    )


_ADMISSION_FACTS = _admission_facts()
_INSERT_JOB = insert(_TABLE).on_conflict_do_nothing().returning(_JOBS.id)
_ATTACH_PREDICTION = _attach_prediction()
_MARK_CHARGED = _mark_charged()


def _job_lookup(*conditions: Any) -> Any:
    """One job's JOB_COLUMNS by ``conditions``: Core, built once (no ORM load per read)."""
    return select(*_RETURNED).where(*conditions)


_JOB_BY_ID = _job_lookup(_JOBS.id == bindparam("job_id"))
_JOB_BY_KEY = _job_lookup(
    _JOBS.owner_id == bindparam("owner_id"), _JOBS.idempotency_key == bindparam("key")
)
_JOB_BY_PREDICTION = _job_lookup(_JOBS.prediction_id == bindparam("prediction_id"))


# A generation to give back: a refund requested and not yet done, or a job that ended
# without output while its debit went unanswered (the sweep credits whatever it found).
_refund_pending = GenerationJob.refund_state == RefundState.PENDING
_ended_uncharged = and_(
    GenerationJob.charge_state == ChargeState.NONE,
    GenerationJob.prediction_id.is_not(None),
    GenerationJob.status.in_(ENDED_WITHOUT_OUTPUT),
)


class JobRepository:
    """Reads and conditional writes of ``generation_jobs``."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, job_id: uuid.UUID) -> Job | None:
        return await self._returned(_JOB_BY_ID, {"job_id": job_id})

    async def get_by_idempotency_key(self, owner_id: uuid.UUID, key: str) -> Job | None:
        return await self._returned(_JOB_BY_KEY, {"owner_id": owner_id, "key": key})

    async def get_by_prediction_id(self, prediction_id: str) -> Job | None:
        return await self._returned(_JOB_BY_PREDICTION, {"prediction_id": prediction_id})

    async def admission_facts(self, owner_id: uuid.UUID) -> AdmissionFacts:
        connection = await self._session.connection()
        row = (await connection.execute(_ADMISSION_FACTS, {"owner_id": owner_id})).one()
        return AdmissionFacts(
            inflight=bool(row.inflight),
            pending_debits=int(row.pending_debits),
            pending_job_ids=tuple(row.pending_job_ids),
        )

    async def insert(self, job: NewJob) -> InsertOutcome:
        """Write the job ``starting``; the database decides races no pre-check can see.

        ``ON CONFLICT DO NOTHING`` (no target) covers the owner's key and the partial
        unique index of one in-flight job per owner, and leaves the transaction usable;
        a refused row is then told apart by looking the key up.
        """
        connection = await self._session.connection()
        written = await connection.execute(
            _INSERT_JOB,
            {
                "id": job.id,
                "owner_id": job.owner_id,
                "idempotency_key": job.idempotency_key,
                "request_fingerprint": job.request_fingerprint,
                "mode": job.mode,
                "room_type": job.room_type,
                "style": job.style,
                "prompt": job.prompt,
                "composed_prompt": job.composed_prompt,
                "input_keys": list(job.input_keys),
                "source_job_id": job.source_job_id,
                "source_variant_idx": job.source_variant_idx,
                "status": JobStatus.STARTING,
                "charge_state": ChargeState.NONE,
                "refund_state": RefundState.NONE,
                "created_at": job.created_at,
                "updated_at": job.created_at,
                "traceparent": job.traceparent,
            },
        )
        if written.first() is not None:
            return Inserted()
        if job.idempotency_key is not None:
            taken = await self.get_by_idempotency_key(job.owner_id, job.idempotency_key)
            if taken is not None:
                return KeyTaken()
        return SlotTaken()

    async def attach_prediction(
        self, job_id: uuid.UUID, prediction_id: str, now: datetime
    ) -> Job | None:
        """Record the provider's id, only while the job is still ``starting`` without
        one; the job as written (one statement), or None when it had left ``starting``
        or already has a run (its create's answer and the run's webhook race to name
        it: see domain/run_claims.py)."""
        return await self._returned(
            _ATTACH_PREDICTION, {"job_id": job_id, "new_prediction_id": prediction_id, "now": now}
        )

    async def _returned(self, statement: Any, params: dict[str, Any]) -> Job | None:
        """Run a prebuilt Core statement that returns JOB_COLUMNS of at most one row."""
        connection = await self._session.connection()
        row = (await connection.execute(statement, params)).first()
        return None if row is None else to_job(row)

    async def mark_processing(self, job_id: uuid.UUID, started_at: datetime, now: datetime) -> bool:
        return await update_matched(
            self._session,
            update(GenerationJob)
            .where(GenerationJob.id == job_id, GenerationJob.status == JobStatus.STARTING)
            .values(status=JobStatus.PROCESSING, started_at=started_at, updated_at=now),
        )

    async def mark_succeeded(
        self,
        job_id: uuid.UUID,
        render_id: uuid.UUID,
        variants: Sequence[VariantRef],
        completed_at: datetime,
        now: datetime,
    ) -> bool:
        """An in-flight job to ``succeeded`` with its render and variants, in ONE statement.

        The conditional update takes the row lock and checks the job is still in flight;
        the render and its variants are inserted only from its returned row, so they
        commit with it or not at all, and duplicates are ignored. One statement is one
        round trip, and atomic even on an autocommit connection: no BEGIN or COMMIT.
        """
        rows = [
            {
                "id": str(uuid.uuid4()),
                "idx": variant.idx,
                "object_key": variant.object_key,
                "thumbnail_key": variant.thumbnail_key,
                "width": variant.width,
                "height": variant.height,
            }
            for variant in variants
        ]
        result = await self._session.execute(
            _SUCCEEDED_WITH_RENDER,
            {
                "job_id": job_id,
                "render_id": render_id,
                "completed_at": completed_at,
                "now": now,
                "variants": json.dumps(rows),
            },
        )
        changed: int = result.scalar_one()
        return changed > 0

    async def mark_ended_without_output(
        self,
        job_id: uuid.UUID,
        status: str,
        error_code: str,
        error_message: str,
        now: datetime,
        *,
        unless_attached: bool = False,
        message_if_owner_asked: str | None = None,
    ) -> TerminalUpdate:
        """End an in-flight job as failed/canceled; a charged job becomes refund-pending.

        ``unless_attached``: only while no run is attached (a submission whose create
        failed must not end a job whose run its webhook already named).
        ``message_if_owner_asked``: the message instead when its owner asked to cancel
        it (``request_cancel``), decided in the same statement.

        A job that reached the provider has its render prefix listed once (files
        due): an applier may have stored outputs and failed before it could commit
        them, and nothing will make them live now.
        """
        changed = await update_matched(
            self._session,
            update(GenerationJob)
            .where(
                GenerationJob.id == job_id,
                GenerationJob.status.in_(INFLIGHT_STATUSES),
                *([GenerationJob.prediction_id.is_(None)] if unless_attached else []),
            )
            .values(
                status=status,
                error_code=error_code,
                error_message=(
                    error_message
                    if message_if_owner_asked is None
                    else case(
                        (GenerationJob.cancel_requested_at.is_not(None), message_if_owner_asked),
                        else_=error_message,
                    )
                ),
                completed_at=now,
                updated_at=now,
                files_due_at=case((GenerationJob.prediction_id.is_not(None), now), else_=None),
            ),
        )
        if not changed:
            return TerminalUpdate(changed=False, refund_due=False)
        refund_due = await self._request_refund_if_charged(job_id)
        return TerminalUpdate(changed=True, refund_due=refund_due)

    async def request_cancel(self, job_id: uuid.UUID, now: datetime) -> None:
        await self._session.execute(
            update(GenerationJob)
            .where(
                GenerationJob.id == job_id,
                GenerationJob.status.in_(INFLIGHT_STATUSES),
                GenerationJob.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=now)  # bookkeeping: no visible change, no version
        )

    async def mark_charged(self, job_id: uuid.UUID) -> ChargeUpdate:
        """Record the debit, and request the refund of a job that already ended: one
        statement (``_MARK_CHARGED``)."""
        job = await self._returned(_MARK_CHARGED, {"job_id": job_id})
        refund_due = (
            job is not None
            and job.status in ENDED_WITHOUT_OUTPUT
            and job.refund_state == RefundState.PENDING
        )
        return ChargeUpdate(job=job, refund_due=refund_due)

    async def mark_charge_waived(self, job_id: uuid.UUID) -> None:
        await self._session.execute(
            update(GenerationJob)
            .where(GenerationJob.id == job_id, GenerationJob.charge_state == ChargeState.NONE)
            .values(charge_state=ChargeState.WAIVED)  # bookkeeping: updatedAt stays
        )

    async def settle_unanswered_debit(self, job_id: uuid.UUID, debited: bool) -> bool:
        """Record what the credit found; False when another writer settled it first."""
        settled = (
            {"charge_state": ChargeState.CHARGED, "refund_state": RefundState.DONE}
            if debited
            else {"charge_state": ChargeState.WAIVED}
        )
        return await update_matched(
            self._session,
            update(GenerationJob)
            .where(GenerationJob.id == job_id, GenerationJob.charge_state == ChargeState.NONE)
            .values(**settled),  # bookkeeping: updatedAt stays
        )

    async def _request_refund_if_charged(self, job_id: uuid.UUID) -> bool:
        """The refund of a job that has just ended (in the same transaction, which set its
        ``updated_at``) requested if it was charged."""
        return await update_matched(
            self._session,
            update(GenerationJob)
            .where(
                GenerationJob.id == job_id,
                GenerationJob.status.in_(ENDED_WITHOUT_OUTPUT),
                GenerationJob.charge_state == ChargeState.CHARGED,
                GenerationJob.refund_state == RefundState.NONE,
            )
            .values(refund_state=RefundState.PENDING),  # bookkeeping: updatedAt stays
        )

    async def mark_refunded(self, job_id: uuid.UUID) -> bool:
        """Record the refund; False when another writer recorded it first."""
        return await update_matched(
            self._session,
            update(GenerationJob)
            .where(GenerationJob.id == job_id, GenerationJob.refund_state == RefundState.PENDING)
            .values(refund_state=RefundState.DONE),
        )

    async def claim_poll(self, job_id: uuid.UUID, now: datetime, throttle: timedelta) -> bool:
        """Take the right to poll this prediction now; False while another poll is recent.

        A conditional update, so it holds across every instance of the service.
        """
        return await update_matched(
            self._session,
            update(GenerationJob)
            .where(
                GenerationJob.id == job_id,
                GenerationJob.status.in_(INFLIGHT_STATUSES),
                GenerationJob.prediction_id.is_not(None),
                or_(
                    GenerationJob.last_polled_at.is_(None),
                    GenerationJob.last_polled_at <= now - throttle,
                ),
            )
            .values(last_polled_at=now),
        )

    async def inflight_needing_poll(
        self, older_than: datetime, poll_before: datetime, limit: int
    ) -> Sequence[Job]:
        """In-flight jobs with a prediction whose state has not moved for a while."""
        result = await self._session.scalars(
            select(GenerationJob)
            .where(
                GenerationJob.status.in_(INFLIGHT_STATUSES),
                GenerationJob.prediction_id.is_not(None),
                GenerationJob.updated_at <= older_than,
                or_(
                    GenerationJob.last_polled_at.is_(None),
                    GenerationJob.last_polled_at <= poll_before,
                ),
            )
            .order_by(GenerationJob.updated_at)
            .limit(limit)
        )
        return to_jobs(result.all())

    async def overdue_inflight(
        self, created_before: datetime, unsubmitted_before: datetime, limit: int
    ) -> Sequence[Job]:
        """In-flight jobs past the overall timeout, or stuck without a prediction id."""
        result = await self._session.scalars(
            select(GenerationJob)
            .where(
                GenerationJob.status.in_(INFLIGHT_STATUSES),
                or_(
                    GenerationJob.created_at <= created_before,
                    and_(
                        GenerationJob.prediction_id.is_(None),
                        GenerationJob.created_at <= unsubmitted_before,
                    ),
                ),
            )
            .order_by(GenerationJob.created_at)
            .limit(limit)
        )
        return to_jobs(result.all())

    async def needing_settlement(self, older_than: datetime, limit: int) -> Sequence[Job]:
        """Jobs whose refund is pending, or that reached the provider but were never charged."""
        result = await self._session.scalars(
            select(GenerationJob)
            .where(
                GenerationJob.updated_at <= older_than,
                or_(
                    GenerationJob.refund_state == RefundState.PENDING,
                    # Reached the provider, so a debit may have been recorded whose
                    # answer never came back (in flight or succeeded: charge it; ended
                    # without output: give back whatever was debited).
                    and_(
                        GenerationJob.charge_state == ChargeState.NONE,
                        GenerationJob.prediction_id.is_not(None),
                    ),
                ),
            )
            # Give-backs first: a late debit the plan refuses may only be waiting for
            # one of the owner's (sweep._refused_for_the_plan), so none may be crowded
            # out of the batch by older debits.
            .order_by(
                case((or_(_refund_pending, _ended_uncharged), 0), else_=1),
                GenerationJob.updated_at,
            )
            .limit(limit)
        )
        return to_jobs(result.all())

    async def gives_back_due(self, owner_id: uuid.UUID, except_job: uuid.UUID) -> bool:
        """Whether another job of the owner still has a generation to give back: its
        refund is pending, or it ended without output while its debit went unanswered."""
        found = await self._session.scalar(
            select(
                exists().where(
                    GenerationJob.owner_id == owner_id,
                    GenerationJob.id != except_job,
                    or_(_refund_pending, _ended_uncharged),
                )
            )
        )
        return bool(found)

    async def audit_page(
        self, owner_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> Sequence[Job]:
        """Jobs ordered by id, for the usage audit."""
        query = select(GenerationJob).order_by(GenerationJob.id).limit(limit)
        if owner_id is not None:
            query = query.where(GenerationJob.owner_id == owner_id)
        if after is not None:
            query = query.where(GenerationJob.id > after)
        result = await self._session.scalars(query)
        return to_jobs(result.all())
