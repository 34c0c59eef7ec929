"""Refine: an earlier result of the owner's becomes input1 of a new submission.

People iterate with an editing model ("now make the sofa green"). The source must
be one of the owner's own succeeded jobs whose render is not deleted, and name one
of its variants; anything else is NOT_FOUND (someone else's job looks exactly like a
missing one). The variant is copied into the owner's private inputs under a new key,
so the new job owns its input: deleting either job never takes the other's away.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from generation.domain import jobs
from generation.domain.context import GenerationContext
from kit.errors import NotFound, UpstreamError
from kit.storage import StorageError

_CONTENT_TYPE = "image/jpeg"


@dataclass(frozen=True)
class SourceRef:
    """The earlier job and which of its variants to refine."""

    job_id: uuid.UUID
    variant_idx: int


async def source_variant(
    ctx: GenerationContext, owner_id: uuid.UUID, source: SourceRef
) -> jobs.VariantRef:
    """The variant to refine; NotFound unless the source is the owner's succeeded,
    undeleted job and has that variant."""
    async with ctx.reads() as stores:
        view = await stores.reads.view(owner_id, source.job_id)
    return _variant_of(view, source.variant_idx)


async def copy_variant(
    ctx: GenerationContext,
    owner_id: uuid.UUID,
    source: SourceRef,
    variant: jobs.VariantRef,
    key: str,
) -> None:
    """``variant`` copied to the owner's private input ``key``. Whatever it raises, the
    object may be stored: the caller removes ``key``."""
    try:
        copied = await ctx.storage.copy(
            (ctx.public_bucket, variant.object_key),
            (ctx.private_bucket, key),
            _CONTENT_TYPE,
            ctx.config.replicate.output_max_bytes,
        )
    except StorageError as error:
        # A DELETE whose files went while this copy read them cuts the stream: the source
        # is gone (the deletion commits before its files go), not the storage: 404.
        await source_variant(ctx, owner_id, source)
        raise UpstreamError("Your images could not be stored. Please try again.") from error
    if not copied:  # deleted meanwhile
        raise _not_found()
    # A DELETE that committed between the first read and the copy, before its files
    # were removed, let the copy take a deleted render: read again. One committed after
    # this read came after the copy.
    await source_variant(ctx, owner_id, source)


def _variant_of(view: jobs.JobView | None, idx: int) -> jobs.VariantRef:
    if view is None or view.status != jobs.SUCCEEDED:
        raise _not_found()
    for variant in view.variants:
        if variant.idx == idx:
            return variant
    raise _not_found()


def _not_found() -> NotFound:
    return NotFound("The generation to refine was not found.")
