"""A refine's source is part of what an idempotency key stands for: the same key with
the same text but another source job or variant is a reused key (422), not a replay
of a refine of the wrong image."""

from __future__ import annotations

import uuid

from generation.domain.refine import SourceRef
from generation.domain.submit_request import SubmitCommand, fingerprint


def _command(source: SourceRef | None) -> SubmitCommand:
    return SubmitCommand(
        owner_id=uuid.uuid4(),
        idempotency_key="k",
        mode="redesign",
        prompt="Warmer light",
        room_type=None,
        style=None,
        inputs=(),
        request_base_url=None,
        source=source,
    )


def test_the_refine_source_is_part_of_the_fingerprint() -> None:
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    prints = {
        fingerprint(_command(None)),
        fingerprint(_command(SourceRef(job_id=job_a, variant_idx=0))),
        fingerprint(_command(SourceRef(job_id=job_a, variant_idx=1))),
        fingerprint(_command(SourceRef(job_id=job_b, variant_idx=0))),
    }
    assert len(prints) == 4
