"""The ledger audit: the books checked against the generation jobs.

Findings (``Discrepancy.kind``):

- ``DEBIT_WITHOUT_JOB``: a debit for a job the generation service does not know
  (or that belongs to another user).
- ``JOB_NOT_CHARGED``: a ``succeeded`` job without a debit, or a job the
  generation service marks as charged while the ledger has no debit for it.
- ``WAIVED_BUT_DEBITED``: a ``succeeded`` job the generation service settled
  without a charge (waived) while the ledger holds its debit.
- ``MISSING_REFUND``: a ``failed``/``canceled`` job without output that was
  debited but has no credit (or is marked refunded without a credit).
- ``DUPLICATE_REFUND``: more than one credit for one job (the database forbids
  it; reported should the constraint ever be lost).
- ``REFUND_WITHOUT_DEBIT``: a credit for a job that has no debit.
- ``UNEXPECTED_REFUND``: a credit for a job that succeeded or is still in flight.
- ``OVER_PLAN``: a month in which a debit was taken while the owner's net use had
  already reached the monthly limit that debit was checked against (recorded with
  it; a debit from before that was recorded is held to the owner's plan today). A
  downgrade below what was used, mid-month or after a busy one, is no finding. The
  month is replayed in the order its entries were written (the ledger's ids: every
  entry of an owner is written under the owner's lock), not by their times, which
  each instance reads from its own clock before it waits for that lock.

The system keeps running while the jobs are listed, page by page, so the ledger is
read after the last page: every entry a listed job's state implies (the debit of a
job marked charged or succeeded, the credit of one marked refunded) was written
before that job's page was read, and is there. Entries written after the audit began
may belong to what the listing could not see: a debit whose job was submitted after
its page was read is not a ``DEBIT_WITHOUT_JOB``, and a credit of a job listed in
flight (it failed later) is not an ``UNEXPECTED_REFUND``. A job that fails during the
audit may show a transient ``MISSING_REFUND``; run the audit again to confirm.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from kit.clock import Clock
from kit.logging import get_logger
from usage.domain.model import (
    AuditReport,
    Discrepancy,
    EntryKind,
    JobFacts,
    JobState,
    LedgerEntry,
)
from usage.domain.periods import month_of
from usage.domain.plans import PlanCatalog
from usage.domain.ports import JobOutcomeSource, Transactions

log = get_logger("usage.audit")

_REFUNDABLE = {JobState.FAILED, JobState.CANCELED}


class LedgerAuditor:
    """Runs the audit: lists the jobs, reads the ledger, reports discrepancies."""

    def __init__(
        self, transactions: Transactions, plans: PlanCatalog, jobs: JobOutcomeSource, clock: Clock
    ) -> None:
        self._transactions = transactions
        self._plans = plans
        self._jobs = jobs
        self._clock = clock

    async def run(self) -> AuditReport:
        """One full audit; UPSTREAM_ERROR when the generation service cannot answer."""
        started = self._clock.now()
        jobs = await self._jobs.list_all()
        async with self._transactions() as uow:
            entries = await uow.ledger.all_entries()
            price_ids = await uow.profiles.all_price_ids()
        found = find_discrepancies(
            jobs,
            entries,
            lambda owner: self._plans.resolve(price_ids.get(owner)).monthly_generations,
            listed_after=started,
        )
        log.info(
            "ledger.audited",
            jobsChecked=len(jobs),
            entriesChecked=len(entries),
            discrepancies=len(found),
        )
        return AuditReport(
            discrepancies=found, jobs_checked=len(jobs), entries_checked=len(entries)
        )


def find_discrepancies(
    jobs: Sequence[JobFacts],
    entries: Sequence[LedgerEntry],
    monthly_for: Callable[[uuid.UUID], int],
    listed_after: datetime | None = None,
) -> list[Discrepancy]:
    """Every discrepancy between ``jobs`` and ``entries``, in a stable order.

    ``listed_after``: when the listing of ``jobs`` began (``entries`` read after it
    ended); an entry recorded later may concern what the listing could not see yet
    (see the module docstring). None: ``jobs`` and ``entries`` are one snapshot.
    """

    def late(entry: LedgerEntry) -> bool:
        return listed_after is not None and entry.created_at > listed_after

    by_job = {job.job_id: job for job in jobs}
    debits = {e.job_id: e for e in entries if e.kind is EntryKind.DEBIT}
    credits = [e for e in entries if e.kind is EntryKind.CREDIT]
    # A credit gives back its own owner's debit only, as the quota counts it
    # (usage_used_in joins on the owner too): one filed under another owner gives
    # nothing back, and must not hide a missing refund or a month over its plan.
    refunded = {(e.owner_id, e.job_id) for e in credits}
    found = [
        *_check_debits(debits.values(), by_job, late),
        *_check_credits(credits, debits, by_job, late),
        *_check_jobs(jobs, debits, refunded, late),
        *_check_periods(debits.values(), credits, monthly_for),
    ]
    return found


def _finding(kind: str, owner_id: uuid.UUID, job_id: uuid.UUID | None, detail: str) -> Discrepancy:
    return Discrepancy(kind, str(owner_id), str(job_id) if job_id else "", detail)


def _check_debits(
    debits: Iterable[LedgerEntry],
    by_job: dict[uuid.UUID, JobFacts],
    late: Callable[[LedgerEntry], bool],
) -> Iterable[Discrepancy]:
    for debit in debits:
        job = by_job.get(debit.job_id)
        if job is None:
            # A job submitted after its page was listed is debited meanwhile.
            if not late(debit):
                yield _finding("DEBIT_WITHOUT_JOB", debit.owner_id, debit.job_id, "no such job")
        elif job.owner_id != debit.owner_id:
            yield _finding(
                "DEBIT_WITHOUT_JOB", debit.owner_id, debit.job_id, "the job belongs to another user"
            )


def _check_credits(
    credits: Sequence[LedgerEntry],
    debits: dict[uuid.UUID, LedgerEntry],
    by_job: dict[uuid.UUID, JobFacts],
    late: Callable[[LedgerEntry], bool],
) -> Iterable[Discrepancy]:
    credited = Counter(credit.job_id for credit in credits)
    reported: set[uuid.UUID] = set()
    for credit in credits:
        if credit.job_id in reported:
            continue
        reported.add(credit.job_id)
        job = by_job.get(credit.job_id)
        if credited[credit.job_id] > 1:
            yield _finding(
                "DUPLICATE_REFUND",
                credit.owner_id,
                credit.job_id,
                f"{credited[credit.job_id]} credits for one job",
            )
        debit = debits.get(credit.job_id)
        if debit is None:
            yield _finding("REFUND_WITHOUT_DEBIT", credit.owner_id, credit.job_id, "no debit")
        elif debit.owner_id != credit.owner_id:
            yield _finding(
                "REFUND_WITHOUT_DEBIT",
                credit.owner_id,
                credit.job_id,
                "the job's debit is another user's",
            )
        # A job listed in flight may have failed and been refunded since its page.
        in_flight_then = job is not None and job.status.in_flight and late(credit)
        if (
            job is not None
            and not in_flight_then
            and (job.status is JobState.SUCCEEDED or job.status.in_flight)
        ):
            yield _finding(
                "UNEXPECTED_REFUND",
                credit.owner_id,
                credit.job_id,
                f"the job is {job.status.value}",
            )


def _check_jobs(
    jobs: Iterable[JobFacts],
    debits: dict[uuid.UUID, LedgerEntry],
    refunded: set[tuple[uuid.UUID, uuid.UUID]],
    late: Callable[[LedgerEntry], bool],
) -> Iterable[Discrepancy]:
    for job in jobs:
        debit = debits.get(job.job_id)
        # A debit charged to someone else does not pay for this user's job.
        debited = debit is not None and debit.owner_id == job.owner_id
        if job.status is JobState.SUCCEEDED and not debited and not job.waived:
            yield _finding("JOB_NOT_CHARGED", job.owner_id, job.job_id, "succeeded without a debit")
        elif (
            job.status is JobState.SUCCEEDED
            and job.waived
            and debit is not None
            and debited
            # A debit that came late records the job charged after its page was read.
            and not late(debit)
        ):
            yield _finding(
                "WAIVED_BUT_DEBITED",
                job.owner_id,
                job.job_id,
                "settled without a charge but the ledger has its debit",
            )
        elif job.charged and not debited:
            yield _finding(
                "JOB_NOT_CHARGED",
                job.owner_id,
                job.job_id,
                "marked charged but the ledger has no debit",
            )
        refundable = job.status in _REFUNDABLE and not job.has_output
        if debited and (job.owner_id, job.job_id) not in refunded and (refundable or job.refunded):
            detail = (
                f"{job.status.value} without output"
                if refundable
                else "marked refunded but the ledger has no credit"
            )
            yield _finding("MISSING_REFUND", job.owner_id, job.job_id, detail)


def _check_periods(
    debits: Iterable[LedgerEntry],
    credits: Iterable[LedgerEntry],
    monthly_for: Callable[[uuid.UUID], int],
) -> Iterable[Discrepancy]:
    """Each owner's months replayed in time order, as ``usage_debit`` saw them: a debit
    taken while the month's net use had already reached the limit it was checked
    against is over the plan. A credit gives back its own owner's debit, in that
    debit's month, from the credit's time on (see usage.domain.ledger). A debit written
    before limits were recorded is held to the owner's plan today."""
    debit_month: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
    events: defaultdict[tuple[uuid.UUID, str], list[LedgerEntry]] = defaultdict(list)
    for debit in debits:
        label = month_of(debit.created_at).label
        debit_month[(debit.owner_id, debit.job_id)] = label
        events[(debit.owner_id, label)].append(debit)
    for credit in credits:
        given_back = debit_month.get((credit.owner_id, credit.job_id))
        if given_back is not None:
            events[(credit.owner_id, given_back)].append(credit)
    for (owner_id, label), month in sorted(
        events.items(), key=lambda item: (str(item[0][0]), item[0][1])
    ):
        used, over = 0, None  # over: (use after the first debit past its limit, limit)
        for entry in sorted(month, key=_written_order):
            if entry.kind is EntryKind.CREDIT:
                used -= entry.amount
                continue
            limit = entry.plan_limit if entry.plan_limit is not None else monthly_for(owner_id)
            used += entry.amount
            if over is None and limit - (used - entry.amount) < entry.amount:
                over = (used, limit)
        if over is not None:
            yield _finding(
                "OVER_PLAN",
                owner_id,
                None,
                f"{label}: {over[0]} generations used on a plan of {over[1]}",
            )


def _written_order(entry: LedgerEntry) -> tuple[int, datetime, bool]:
    """The order an owner's entries were written in: the ledger's ids, taken under the
    owner's lock. (Entries built outside the ledger have none: by their times, a credit
    first at the same instant, since the debit may have seen it.)"""
    written = entry.sequence if entry.sequence is not None else -1
    return (written, entry.created_at, entry.kind is EntryKind.DEBIT)
