"""SQL of ``renders`` and ``render_variants``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from generation.domain.jobs import VariantRef
from generation.domain.records import StoredVariant
from generation.persistence.models import Render, RenderVariant
from generation.persistence.rows import update_matched


class RenderRepository:
    """``renders`` and ``render_variants``: inserted once, never duplicated."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def variants_without_thumbnail(self, limit: int) -> Sequence[StoredVariant]:
        """Variants of live renders stored before thumbnails existed (oldest first)."""
        variant = RenderVariant.__table__.c
        result = await self._session.execute(
            select(variant.render_id, variant.idx, variant.object_key, Render.job_id)
            .join(Render, Render.id == RenderVariant.render_id)
            .where(RenderVariant.thumbnail_key.is_(None), Render.deleted_at.is_(None))
            .order_by(RenderVariant.created_at, RenderVariant.id)
            .limit(limit)
        )
        return [
            StoredVariant(row.render_id, row.idx, row.object_key, row.job_id)
            for row in result.all()
        ]

    async def set_thumbnail(self, variant: VariantRef, render_id: uuid.UUID) -> bool:
        """Record a variant's thumbnail and size, unless another run already did or the
        render was deleted meanwhile."""
        live = select(Render.id).where(Render.id == render_id, Render.deleted_at.is_(None))
        return await update_matched(
            self._session,
            update(RenderVariant)
            .where(
                RenderVariant.render_id == render_id,
                RenderVariant.idx == variant.idx,
                RenderVariant.thumbnail_key.is_(None),
                RenderVariant.render_id.in_(live),
            )
            .values(
                thumbnail_key=variant.thumbnail_key, width=variant.width, height=variant.height
            ),
        )

    async def soft_delete(self, job_id: uuid.UUID, now: datetime) -> bool:
        return await update_matched(
            self._session,
            update(Render)
            .where(Render.job_id == job_id, Render.deleted_at.is_(None))
            .values(deleted_at=now),
        )

    async def outputs_of(self, job_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these jobs have at least one stored variant."""
        if not job_ids:
            return set()
        result = await self._session.scalars(
            select(Render.job_id)
            .join(RenderVariant, RenderVariant.render_id == Render.id)
            .where(Render.job_id.in_(job_ids))
            .distinct()
        )
        return set(result.all())
