"""SQL of removing what a job must not keep in storage (see domain/cleanup.py).

Every write is a conditional update, so any number of instances may run the
removals at once; the transaction is the caller's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from generation.domain.records import Job, PendingFiles
from generation.domain.states import TERMINAL
from generation.persistence.models import GenerationJob, Render
from generation.persistence.rows import to_job, update_matched

TERMINAL_STATUSES = TERMINAL


class RemovalRepository:
    """What ``generation_jobs`` records about files still to remove from storage."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def mark_deleted(self, job_id: uuid.UUID, now: datetime) -> bool:
        """Record a finished job's deletion (once): its inputs and render files become due."""
        return await update_matched(
            self._session,
            update(GenerationJob)
            .where(
                GenerationJob.id == job_id,
                GenerationJob.status.in_(TERMINAL_STATUSES),
                GenerationJob.deleted_at.is_(None),
            )
            .values(
                deleted_at=now,
                # The job as shown changed (no variants, no inputs): so says updatedAt.
                updated_at=now,
                files_due_at=func.coalesce(GenerationJob.files_due_at, now),
                files_look_again_at=None,
            ),
        )

    async def files_pending_removal(
        self, job_id: uuid.UUID | None, limit: int, now: datetime
    ) -> Sequence[PendingFiles]:
        """Jobs whose render files are due for removal and not yet known to be gone
        (one removed while a late writer could still come: once that time is over)."""
        query = (
            select(GenerationJob.id, GenerationJob.owner_id, GenerationJob.files_round)
            .where(
                GenerationJob.files_due_at.is_not(None),
                GenerationJob.files_removed_at.is_(None),
                or_(
                    GenerationJob.files_look_again_at.is_(None),
                    GenerationJob.files_look_again_at <= now,
                ),
            )
            .order_by(GenerationJob.files_due_at)
            .limit(limit)
        )
        if job_id is not None:
            query = query.where(GenerationJob.id == job_id)
        rows = (await self._session.execute(query)).all()
        return [PendingFiles(row.id, row.owner_id, row.files_round) for row in rows]

    async def mark_files_removed(
        self, pending: PendingFiles, now: datetime, late_writers: timedelta
    ) -> bool:
        """Record the removal, unless a late writer stored files after it was read
        (False: the prefix stays due).

        Nor while a late writer may still come: an applier that read the job in flight
        stores its copy up to ``late_writers`` after the job last changed, and claims
        the files only after storing them, so one that dies in between would leave
        them for good. Within that time the prefix is to be listed once more at its
        end (``files_look_again_at``; False); that last look finds what such a writer
        left.
        """
        settled = GenerationJob.updated_at <= now - late_writers
        row = (
            await self._session.execute(
                update(GenerationJob)
                .where(
                    GenerationJob.id == pending.job_id,
                    GenerationJob.files_due_at.is_not(None),
                    GenerationJob.files_removed_at.is_(None),
                    GenerationJob.files_round == pending.files_round,
                )
                .values(
                    files_removed_at=case((settled, now), else_=None),
                    files_look_again_at=case(
                        (settled, None), else_=GenerationJob.updated_at + late_writers
                    ),
                )
                .returning(GenerationJob.files_removed_at)
            )
        ).first()
        return row is not None and row.files_removed_at is not None

    async def claim_stray_files(self, job_id: uuid.UUID, now: datetime) -> PendingFiles | None:
        """A writer stored render files for a job that has already ended: unless the job
        has a live render, make its files due for removal (again) and bump the round.

        None when a live render exists: the files are its own. Seeing it live is
        safe even if a DELETE commits right after: that DELETE lists the prefix only
        after its commit, so after this writer's files were stored.
        """
        live_render = (
            select(Render.id)
            .where(Render.job_id == GenerationJob.id, Render.deleted_at.is_(None))
            .exists()
        )
        statement = (
            update(GenerationJob)
            .where(GenerationJob.id == job_id, ~live_render)
            .values(
                files_due_at=func.coalesce(GenerationJob.files_due_at, now),
                # Listed by the next sweep should the writer's own removal fail, not at
                # the end of a late writers' time (mark_files_removed).
                files_look_again_at=None,
                files_removed_at=None,
                files_round=GenerationJob.files_round + 1,
            )
            .returning(GenerationJob.id, GenerationJob.owner_id, GenerationJob.files_round)
        )
        row = (await self._session.execute(statement)).first()
        return None if row is None else PendingFiles(row.id, row.owner_id, row.files_round)

    async def postpone_removal(self, job_id: uuid.UUID, now: datetime) -> None:
        """Send a job whose removal storage refused behind every job due before ``now``:
        ``files_due_at`` orders both queues, its render files' and (for a deleted job)
        its inputs', and nothing else (each pass takes the oldest due)."""
        await self._session.execute(
            update(GenerationJob)
            .where(GenerationJob.id == job_id, GenerationJob.files_due_at.is_not(None))
            .values(files_due_at=now)
        )

    async def inputs_pending_removal(
        self, job_ids: Sequence[uuid.UUID] | None, limit: int
    ) -> Sequence[Job]:
        """Deleted jobs whose inputs are not yet known to be removed (longest due first)."""
        query = (
            select(GenerationJob)
            .where(GenerationJob.deleted_at.is_not(None), GenerationJob.inputs_removed_at.is_(None))
            # Due since the deletion, unless a refused removal sent the job back.
            .order_by(func.coalesce(GenerationJob.files_due_at, GenerationJob.deleted_at))
            .limit(limit)
        )
        if job_ids is not None:
            query = query.where(GenerationJob.id.in_(job_ids))
        result = await self._session.scalars(query)
        return [to_job(row) for row in result.all()]

    async def keys_in_use(
        self, owner_id: uuid.UUID, job_id: uuid.UUID, keys: Sequence[str]
    ) -> set[str]:
        """Which of ``keys`` another undeleted job of the same owner still names as input."""
        if not keys:
            return set()
        key = func.jsonb_array_elements_text(GenerationJob.input_keys).table_valued("value")
        result = await self._session.scalars(
            select(key.c.value)
            .select_from(GenerationJob)
            .join(key, key.c.value.in_(list(keys)))
            .where(
                GenerationJob.owner_id == owner_id,
                GenerationJob.id != job_id,
                GenerationJob.deleted_at.is_(None),
            )
            .distinct()
        )
        return set(result.all())

    async def mark_inputs_removed(self, job_id: uuid.UUID, now: datetime) -> None:
        await self._session.execute(
            update(GenerationJob)
            .where(GenerationJob.id == job_id, GenerationJob.inputs_removed_at.is_(None))
            .values(inputs_removed_at=now)
        )
