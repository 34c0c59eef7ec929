"""Admission asks the in-flight slot and the quota at once, and answers in the documented
order: 409 (a job in flight) before 402 (no quota) or an unreachable usage service."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from generation.domain import submission
from generation.domain.admission import admit_or_replay
from generation.domain.context import GenerationContext
from generation.domain.ports import AdmissionFacts, QuotaSnapshot
from kit.errors import (
    IdempotencyKeyReused,
    LimitExceeded,
    TooManyInflight,
    UnsupportedMediaType,
    UpstreamError,
)
from services.generation.tests.rpc.fakes import FakeStores, fake_context, imagine_command

PERIOD_END = datetime(2027, 1, 1, tzinfo=UTC)
# Far longer than either step takes; a step that waits for the other one in turn
# (asked one after the other) never sees it start.
OVERLAP_TIMEOUT = 5.0


class Slot(FakeStores):
    """The in-flight lookup; with ``other`` it answers only once that step has started."""

    def __init__(
        self,
        inflight: bool,
        other: asyncio.Event | None = None,
        pending_debits: int = 0,
        pending_job_ids: tuple[uuid.UUID, ...] = (),
    ) -> None:
        super().__init__()
        self.inflight = inflight
        self.pending_debits = pending_debits
        self.pending_job_ids = pending_job_ids
        self.other = other
        self.started = asyncio.Event()

    async def admission_facts(self, owner_id: uuid.UUID) -> AdmissionFacts:
        self.started.set()
        if self.other is not None:
            await asyncio.wait_for(self.other.wait(), OVERLAP_TIMEOUT)
        return AdmissionFacts(self.inflight, self.pending_debits, self.pending_job_ids)


class Usage:
    """The quota (None: the usage service cannot be reached); with ``other`` it answers
    only once that step has started. ``recorded``: the jobs whose debit the ledger holds
    (counted in ``remaining`` already); a pending job named and not among them counts."""

    def __init__(
        self,
        remaining: int | None,
        other: asyncio.Event | None = None,
        recorded: frozenset[uuid.UUID] = frozenset(),
        reads_pending: bool = True,
    ) -> None:
        self.remaining = remaining
        self.other = other
        self.recorded = recorded
        # False: a usage service deployed before pending_job_ids, which ignores them.
        self.reads_pending = reads_pending
        self.started = asyncio.Event()
        self.asked: list[tuple[uuid.UUID, ...]] = []

    async def quota(
        self, owner_id: uuid.UUID, pending_job_ids: Sequence[uuid.UUID] = ()
    ) -> QuotaSnapshot:
        self.asked.append(tuple(pending_job_ids))
        self.started.set()
        if self.other is not None:
            await asyncio.wait_for(self.other.wait(), OVERLAP_TIMEOUT)
        if self.remaining is None:
            raise UpstreamError()
        if not self.reads_pending:
            return QuotaSnapshot(remaining=self.remaining, period_end=PERIOD_END)
        unrecorded = len(set(pending_job_ids) - self.recorded)
        return QuotaSnapshot(
            remaining=max(0, self.remaining - unrecorded),
            period_end=PERIOD_END,
            pending_counted=bool(pending_job_ids),
        )


def _context(stores: FakeStores, usage: Usage) -> GenerationContext:
    return dataclasses.replace(fake_context(stores), usage=usage)  # type: ignore[arg-type]


async def test_the_slot_and_the_quota_are_asked_at_once() -> None:
    usage = Usage(remaining=3)
    slot = Slot(inflight=False, other=usage.started)
    usage.other = slot.started
    # Each step waits for the other to have started: asked in turn, neither would.
    assert await admit_or_replay(_context(slot, usage), imagine_command(), "f" * 64) is None


@pytest.mark.parametrize("remaining", [0, None])
async def test_a_job_in_flight_is_409_whatever_the_quota_says(remaining: int | None) -> None:
    with pytest.raises(TooManyInflight):
        await admit_or_replay(
            _context(Slot(inflight=True), Usage(remaining)), imagine_command(), "f"
        )


async def test_no_quota_left_is_402_and_an_unreachable_usage_is_upstream() -> None:
    with pytest.raises(LimitExceeded):
        await admit_or_replay(_context(Slot(inflight=False), Usage(0)), imagine_command(), "f")
    with pytest.raises(UpstreamError):
        await admit_or_replay(_context(Slot(inflight=False), Usage(None)), imagine_command(), "f")


async def test_a_succeeded_job_whose_debit_is_pending_counts_as_a_generation_used() -> None:
    """Usage was unreachable when a job's debit was due (the sweep records it later):
    the usage service's remaining does not count it yet, admission does."""
    job = uuid.uuid4()
    usage = Usage(1)
    with pytest.raises(LimitExceeded):
        await admit_or_replay(
            _context(Slot(inflight=False, pending_debits=1, pending_job_ids=(job,)), usage),
            imagine_command(),
            "f",
        )
    assert usage.asked == [(), (job,)]  # asked again, naming it: the ledger lacks it
    usage = Usage(2)
    admitted = _context(Slot(inflight=False, pending_debits=1, pending_job_ids=(job,)), usage)
    assert await admit_or_replay(admitted, imagine_command(), "f") is None
    assert usage.asked == [()]  # one left after it: no second question


async def test_a_pending_debit_the_ledger_holds_after_all_counts_once() -> None:
    """The debit was recorded but its answer was lost: the usage service's remaining
    counts it already, so subtracting it again would refuse the owner's last one (402
    while GET /usage shows it left)."""
    job = uuid.uuid4()
    usage = Usage(1, recorded=frozenset({job}))
    slot = Slot(inflight=False, pending_debits=1, pending_job_ids=(job,))
    assert await admit_or_replay(_context(slot, usage), imagine_command(), "f") is None
    assert usage.asked == [(), (job,)]


async def test_a_usage_service_that_ignores_the_named_jobs_leaves_them_all_counted() -> None:
    """Deployed before pending_job_ids, it answers as if none were named: admission
    then counts every pending job, as before, rather than let one past the plan."""
    job = uuid.uuid4()
    usage = Usage(1, reads_pending=False)
    slot = Slot(inflight=False, pending_debits=1, pending_job_ids=(job,))
    with pytest.raises(LimitExceeded):
        await admit_or_replay(_context(slot, usage), imagine_command(), "f")
    assert usage.asked == [(), (job,)]


async def test_an_unanswered_second_question_leaves_the_first_answer_a_402() -> None:
    class Flaky(Usage):
        async def quota(
            self, owner_id: uuid.UUID, pending_job_ids: Sequence[uuid.UUID] = ()
        ) -> QuotaSnapshot:
            if pending_job_ids:
                self.asked.append(tuple(pending_job_ids))
                raise UpstreamError()
            return await super().quota(owner_id)

    job = uuid.uuid4()
    usage = Flaky(1, recorded=frozenset({job}))
    slot = Slot(inflight=False, pending_debits=1, pending_job_ids=(job,))
    with pytest.raises(LimitExceeded):  # not a 503: the owner is told what we know
        await admit_or_replay(_context(slot, usage), imagine_command(), "f")
    assert usage.asked == [(), (job,)]


async def test_pending_jobs_beyond_those_named_count_unasked() -> None:
    named, recorded = uuid.uuid4(), uuid.uuid4()
    # Two pending, one named and held by the ledger; the unnamed one still counts.
    usage = Usage(1, recorded=frozenset({named, recorded}))
    slot = Slot(inflight=False, pending_debits=2, pending_job_ids=(named,))
    with pytest.raises(LimitExceeded):
        await admit_or_replay(_context(slot, usage), imagine_command(), "f")
    usage = Usage(2, recorded=frozenset({named}))
    slot = Slot(inflight=False, pending_debits=2, pending_job_ids=(named,))
    assert await admit_or_replay(_context(slot, usage), imagine_command(), "f") is None


async def test_a_key_used_meanwhile_after_the_sender_was_told_to_stop_is_a_reused_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The early answer found the key unused and told the edge to stop sending; then the
    # slot is taken by a parallel request under the same key. This request will not
    # come whole, so it cannot wait for it: it is answered as the whole request would.
    used = iter([False, True])
    told: list[bool] = []

    async def key_is_used(ctx: object, command: object) -> bool:
        return next(used)

    async def decided() -> None:
        told.append(True)

    monkeypatch.setattr(submission, "key_is_used", key_is_used)
    command = dataclasses.replace(imagine_command(), idempotency_key="k-1")
    context = _context(Slot(inflight=True), Usage(remaining=3))
    answer = await submission.early_answer(context, command, [], UnsupportedMediaType(), decided)
    assert isinstance(answer, IdempotencyKeyReused)
    assert told == [True]
