"""What a job's owner is shown beyond the row: short-lived links to their own inputs.

Inputs stay private; their owner gets signed GET URLs that expire after the runtime
config's signed URL TTL, for a before/after view. The owner check is not here: the
owner's own RPCs (GetGeneration, ListGenerations, ...) read owner-scoped, while GetJobs
and WatchJobs return any owner's jobs, so they are allowed to the edge alone (its
service identity, ``ALLOWED_CALLERS``), which shows a job only to its owner.
"""

from __future__ import annotations

from dataclasses import dataclass

from generation.domain.context import GenerationContext
from generation.domain.jobs import JobView


@dataclass(frozen=True)
class SignedInput:
    idx: int
    url: str


def signed_inputs(ctx: GenerationContext, view: JobView) -> tuple[SignedInput, ...]:
    """One signed URL per input of ``view``, in input order."""
    ttl = ctx.config.uploads.signed_url_ttl_seconds
    return tuple(
        SignedInput(idx, ctx.storage.sign_get_url(ctx.private_bucket, key, ttl))
        for idx, key in enumerate(view.input_keys)
    )
