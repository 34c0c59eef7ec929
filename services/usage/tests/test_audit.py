"""AuditLedger against a real gRPC server that answers ListJobOutcomes.

The generation service's data is the only stand-in: a real gRPC server on
port 0 serving an in-memory list of job outcomes, paged like the real one.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from interior.usage.v1 import usage_pb2
from kit.grpc_server import GrpcServer, ServiceBinding
from launcher.components import free_port
from usage import cli
from usage.wiring import migrate

S = generation_pb2
OCTOBER = datetime(2026, 10, 10, 9, 0, tzinfo=UTC)


class JobOutcomesStandIn(generation_pb2_grpc.GenerationServiceServicer):
    """ListJobOutcomes over an in-memory list; the page token is an offset."""

    def __init__(self) -> None:
        self.jobs: list[generation_pb2.JobOutcome] = []
        self.page_sizes: list[int] = []
        # Runs before a page is answered, with its offset: what the rest of the system
        # does while an audit lists the jobs.
        self.meanwhile: Callable[[int], Awaitable[None]] | None = None

    async def ListJobOutcomes(
        self, request: generation_pb2.ListJobOutcomesRequest, context: Any
    ) -> generation_pb2.ListJobOutcomesResponse:
        self.page_sizes.append(request.page_size)
        start = int(request.page_token or "0")
        if self.meanwhile is not None:
            await self.meanwhile(start)
        end = start + (request.page_size or 100)
        return generation_pb2.ListJobOutcomesResponse(
            jobs=self.jobs[start:end], next_page_token=str(end) if end < len(self.jobs) else ""
        )

    def add(
        self,
        owner: str,
        status: generation_pb2.JobStatus.ValueType,
        *,
        has_output: bool = False,
        **flags: bool,
    ) -> str:
        return self.add_outcome(owner, status, has_output=has_output, **flags).job_id

    def add_outcome(
        self,
        owner: str,
        status: generation_pb2.JobStatus.ValueType,
        *,
        has_output: bool = False,
        **flags: bool,
    ) -> generation_pb2.JobOutcome:
        """The job's outcome as listed (changed in place, it is listed as changed)."""
        created = Timestamp()
        created.FromDatetime(OCTOBER)
        outcome = generation_pb2.JobOutcome(
            job_id=str(uuid.uuid4()),
            owner_id=owner,
            status=status,
            created_at=created,
            has_output=has_output,
            **flags,
        )
        self.jobs.append(outcome)
        return outcome


@pytest.fixture(scope="module")
async def generation() -> AsyncIterator[tuple[JobOutcomesStandIn, str]]:
    standin = JobOutcomesStandIn()  # type: ignore[abstract]  # only ListJobOutcomes is served
    binding = ServiceBinding(
        generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
        lambda server: generation_pb2_grpc.add_GenerationServiceServicer_to_server(standin, server),
    )
    server = GrpcServer([binding], host="127.0.0.1", port=0, max_message_bytes=4 * 1024 * 1024)
    port = await server.start()
    yield standin, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def book(
    generation: tuple[JobOutcomesStandIn, str],
    database_factory: Callable[[str], str],
    server_factory,
    clock,
) -> AsyncIterator[tuple[JobOutcomesStandIn, Any, AsyncEngine]]:
    """An empty ledger, its usage server, and the (emptied) list of jobs."""
    standin, target = generation
    standin.jobs.clear()
    standin.meanwhile = None
    url = database_factory("usage_audit")
    await migrate(url)
    engine = create_async_engine(url)
    async with server_factory(
        url, clock, GENERATION_GRPC_TARGET=target, AUDIT_PAGE_SIZE=2
    ) as client:
        yield standin, client, engine
    await engine.dispose()


async def _insert(
    engine: AsyncEngine,
    owner: str,
    job: str,
    kind: str,
    at: datetime = OCTOBER,
    plan_limit: int | None = None,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO usage_ledger (owner_id, kind, amount, job_id, idempotency_key, "
                "reason, created_at, plan_limit)"
                " VALUES (:owner, :kind, 1, :job, :key, 'test', :at, :limit)"
            ),
            {
                "owner": owner,
                "kind": kind,
                "job": job,
                "key": f"{kind}:{uuid.uuid4()}",
                "at": at,
                "limit": plan_limit,
            },
        )


async def _audit(client: Any) -> usage_pb2.AuditLedgerResponse:
    response: usage_pb2.AuditLedgerResponse = await client.stub.AuditLedger(
        usage_pb2.AuditLedgerRequest(), timeout=20
    )
    return response


async def _run_cli(client: Any) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--target", client.target, "audit"], out)
    return code, json.loads(out.getvalue())


async def test_a_clean_book_reports_nothing(book, new_id: Callable[[], str]) -> None:
    jobs, usage, engine = book
    owner = new_id()
    succeeded = jobs.add(owner, S.JOB_STATUS_SUCCEEDED, has_output=True, charged=True)
    failed = jobs.add(owner, S.JOB_STATUS_FAILED, charged=True, refunded=True)
    canceled = jobs.add(owner, S.JOB_STATUS_CANCELED, charged=True, refunded=True)
    running = jobs.add(owner, S.JOB_STATUS_PROCESSING, charged=True)
    failed_with_output = jobs.add(owner, S.JOB_STATUS_FAILED, has_output=True, charged=True)
    jobs.add(owner, S.JOB_STATUS_STARTING)  # not charged yet: fine while in flight
    jobs.add(owner, S.JOB_STATUS_FAILED)  # failed before it was charged
    # Its render was made before its debit was refused (the plan shrank): waived.
    jobs.add(owner, S.JOB_STATUS_SUCCEEDED, has_output=True, waived=True)
    for job in (succeeded, failed, canceled, running, failed_with_output):
        await usage.debit(owner, job)
    for job in (failed, canceled):
        await usage.credit(owner, job)
    # Recorded after the audit began (a job submitted meanwhile): not judged.
    await _insert(engine, owner, new_id(), "debit", at=datetime(2026, 10, 16, tzinfo=UTC))

    report = await _audit(usage)
    code, printed = await _run_cli(usage)

    assert list(report.discrepancies) == []
    assert (report.jobs_checked, report.entries_checked) == (8, 8)
    assert (code, printed["discrepancies"], printed["jobsChecked"]) == (0, [], 8)
    assert set(jobs.page_sizes) == {2}


async def test_every_kind_of_discrepancy_is_reported(book, new_id: Callable[[], str]) -> None:
    jobs, usage, engine = book
    owner, other, heavy = new_id(), new_id(), new_id()
    expected: set[tuple[str, str]] = set()

    def expect(kind: str, job: str) -> str:
        expected.add((kind, job))
        return job

    ghost = expect("DEBIT_WITHOUT_JOB", new_id())
    await usage.debit(owner, ghost)
    foreign = expect("DEBIT_WITHOUT_JOB", jobs.add(other, S.JOB_STATUS_SUCCEEDED, has_output=True))
    await usage.debit(owner, foreign)
    expected.add(("JOB_NOT_CHARGED", foreign))  # `other` was never charged for it
    unrefunded = expect("MISSING_REFUND", jobs.add(owner, S.JOB_STATUS_FAILED, charged=True))
    await usage.debit(owner, unrefunded)
    marked = expect(
        "MISSING_REFUND",
        jobs.add(owner, S.JOB_STATUS_FAILED, has_output=True, charged=True, refunded=True),
    )
    await usage.debit(owner, marked)
    orphan = expect("REFUND_WITHOUT_DEBIT", jobs.add(owner, S.JOB_STATUS_FAILED))
    await _insert(engine, owner, orphan, "credit")
    for status in (S.JOB_STATUS_SUCCEEDED, S.JOB_STATUS_PROCESSING):
        refunded = expect("UNEXPECTED_REFUND", jobs.add(owner, status, has_output=True))
        await usage.debit(owner, refunded)
        await usage.credit(owner, refunded)
    expect("JOB_NOT_CHARGED", jobs.add(owner, S.JOB_STATUS_SUCCEEDED, has_output=True))
    expect("JOB_NOT_CHARGED", jobs.add(owner, S.JOB_STATUS_PROCESSING, charged=True))
    twice = expect("DUPLICATE_REFUND", jobs.add(owner, S.JOB_STATUS_CANCELED, refunded=True))
    await usage.debit(owner, twice)
    async with engine.begin() as connection:  # a lost constraint, to prove the check
        await connection.execute(text("DROP INDEX ux_usage_ledger_credit_job_id"))
    await _insert(engine, owner, twice, "credit")
    await _insert(engine, owner, twice, "credit")
    for _ in range(6):  # one over the free plan, written behind the service's back
        await _insert(
            engine, heavy, jobs.add(heavy, S.JOB_STATUS_SUCCEEDED, has_output=True), "debit"
        )
    expected.add(("OVER_PLAN", heavy))

    report = await _audit(usage)
    code, printed = await _run_cli(usage)

    found = {(d.kind, d.job_id or d.owner_id) for d in report.discrepancies}
    assert found == expected
    assert all(d.owner_id and d.detail for d in report.discrepancies)
    over_plan = next(d for d in report.discrepancies if d.kind == "OVER_PLAN")
    assert over_plan.detail == "2026-10: 6 generations used on a plan of 5"
    assert code == 1
    assert {d["kind"] for d in printed["discrepancies"]} == {kind for kind, _ in expected}


async def test_a_credit_filed_under_another_owner_gives_nothing_back(
    book, new_id: Callable[[], str]
) -> None:
    """The quota joins a credit to its own owner's debit only: the audit did not, so a
    credit under another owner hid A's missing refund and a month over its plan."""
    jobs, usage, engine = book
    owner, stranger, heavy = new_id(), new_id(), new_id()
    failed = jobs.add(owner, S.JOB_STATUS_FAILED, charged=True, refunded=True)
    await usage.debit(owner, failed)
    await _insert(engine, stranger, failed, "credit")
    busy = [jobs.add(heavy, S.JOB_STATUS_SUCCEEDED, has_output=True) for _ in range(6)]
    for job in busy:  # one over the free plan, written behind the service's back
        await _insert(engine, heavy, job, "debit")
    await _insert(engine, stranger, busy[0], "credit")
    assert (await usage.quota(owner)).used == 1  # the service: A's generation not back

    report = await _audit(usage)

    found = {(d.kind, d.owner_id, d.job_id) for d in report.discrepancies}
    assert found == {
        ("MISSING_REFUND", owner, failed),
        ("REFUND_WITHOUT_DEBIT", stranger, failed),
        ("REFUND_WITHOUT_DEBIT", stranger, busy[0]),
        ("UNEXPECTED_REFUND", stranger, busy[0]),  # and the job succeeded
        ("OVER_PLAN", heavy, ""),
    }


@pytest.mark.parametrize("change", ["mid-month", "next month", "plan retired"])
async def test_a_downgrade_below_what_was_used_is_no_discrepancy(
    book, clock, new_id: Callable[[], str], change: str
) -> None:
    """Usage never goes back: 7 on basic (8), then the owner is on free (5). The audit
    judged October by the plan of the day it ran, and reported OVER_PLAN for good."""
    jobs, usage, engine = book
    owner = new_id()
    await usage.set_plan(owner, "price_basic")
    for _ in range(7):
        await usage.debit(owner, jobs.add(owner, S.JOB_STATUS_SUCCEEDED, charged=True))
    if change == "next month":
        clock.current = datetime(2026, 11, 3, tzinfo=UTC)
    if change == "plan retired":  # removed from the config: its owners are on free
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE profiles SET price_id = 'price_retired' WHERE owner_id = :owner"),
                {"owner": owner},
            )
    else:
        await usage.set_plan(owner, "")

    assert list((await _audit(usage)).discrepancies) == []
    assert (await _run_cli(usage))[0] == 0


async def test_a_month_over_its_plan_stays_over_it_after_an_upgrade(
    book, clock, new_id: Callable[[], str]
) -> None:
    """Six October debits each held to free's 5 (written behind the service's back):
    an upgrade in November made October look clean."""
    jobs, usage, engine = book
    heavy = new_id()
    for _ in range(6):
        job = jobs.add(heavy, S.JOB_STATUS_SUCCEEDED, charged=True)
        await _insert(engine, heavy, job, "debit", plan_limit=5)
    clock.current = datetime(2026, 11, 3, tzinfo=UTC)
    await usage.set_plan(heavy, "price_basic")

    [finding] = (await _audit(usage)).discrepancies

    assert (finding.kind, finding.owner_id) == ("OVER_PLAN", heavy)
    assert finding.detail == "2026-10: 6 generations used on a plan of 5"


async def test_a_generation_given_back_makes_room_from_its_credit_on(
    book, new_id: Callable[[], str]
) -> None:
    """Replayed in time order: the sixth debit on free is fine after a credit, not
    before it."""
    jobs, usage, engine = book
    fine, early = new_id(), new_id()
    for owner, credit_first in ((fine, True), (early, False)):
        failed = jobs.add(owner, S.JOB_STATUS_FAILED, charged=True, refunded=True)
        await _insert(engine, owner, failed, "debit", at=OCTOBER, plan_limit=5)
        for day in range(4):
            job = jobs.add(owner, S.JOB_STATUS_SUCCEEDED, charged=True)
            await _insert(engine, owner, job, "debit", OCTOBER + timedelta(days=day), 5)
        sixth = jobs.add(owner, S.JOB_STATUS_SUCCEEDED, charged=True)
        # Written in the order they happened (the ledger's ids are that order).
        if credit_first:
            await _insert(engine, owner, failed, "credit", at=OCTOBER + timedelta(days=5))
        await _insert(engine, owner, sixth, "debit", OCTOBER + timedelta(days=6), plan_limit=5)
        if not credit_first:
            await _insert(engine, owner, failed, "credit", at=OCTOBER + timedelta(days=7))

    found = {(d.kind, d.owner_id) for d in (await _audit(usage)).discrepancies}

    assert found == {("OVER_PLAN", early)}


async def test_a_month_is_replayed_in_the_order_its_entries_were_written(
    book, new_id: Callable[[], str], clock, server_factory
) -> None:
    """Two instances whose clocks are 200 ms apart: A records a refund, then B the next
    debit (5 of 5, legal: the refund had made room). By their times the debit came
    first, over the plan; the ledger's ids, taken under the owner's lock, say what the
    service saw."""
    jobs, replica_a, engine = book
    owner = new_id()
    failed = jobs.add(owner, S.JOB_STATUS_FAILED, charged=True, refunded=True)
    for job in [failed, *(jobs.add(owner, S.JOB_STATUS_SUCCEEDED, charged=True) for _ in range(4))]:
        assert (await replica_a.debit(owner, job)).recorded
    sixth = jobs.add(owner, S.JOB_STATUS_SUCCEEDED, charged=True)
    clock.current += timedelta(hours=1)
    behind = type(clock)(clock.current - timedelta(milliseconds=200))
    url = engine.url.render_as_string(hide_password=False)
    async with server_factory(url, behind) as replica_b:
        assert (await replica_a.credit(owner, failed)).recorded
        assert (await replica_b.debit(owner, sixth)).recorded

    assert [(d.kind, d.detail) for d in (await _audit(replica_a)).discrepancies] == []


async def test_a_succeeded_job_settled_without_a_charge_but_debited_is_reported(
    book, new_id: Callable[[], str]
) -> None:
    jobs, usage, _ = book
    owner = new_id()
    waived = jobs.add(owner, S.JOB_STATUS_SUCCEEDED, has_output=True, waived=True)
    assert (await usage.debit(owner, waived)).recorded

    found = [(d.kind, d.job_id) for d in (await _audit(usage)).discrepancies]

    assert found == [("WAIVED_BUT_DEBITED", waived)]


@pytest.mark.parametrize("ends", ["processing", "succeeded"])
async def test_a_job_charged_while_the_jobs_are_listed_is_no_discrepancy(
    book, new_id: Callable[[], str], clock, ends: str
) -> None:
    """The system runs on while the audit pages through the jobs: a job on a later page
    debited (and marked charged, perhaps succeeded) meanwhile has its debit in the
    ledger the audit reads, which is read after the listing."""
    jobs, usage, _ = book
    owner = new_id()
    for _ in range(2):  # page 1 (pages of 2): settled and charged before the audit
        await usage.debit(
            owner, jobs.add(owner, S.JOB_STATUS_SUCCEEDED, has_output=True, charged=True)
        )
    live = jobs.add_outcome(owner, S.JOB_STATUS_STARTING)  # page 2

    async def submitted_meanwhile(offset: int) -> None:
        if offset == 0:
            clock.current += timedelta(seconds=1)
            await usage.debit(owner, live.job_id)  # generation's debit, then mark_charged
            live.status = S.JOB_STATUS_PROCESSING
            live.charged = True
            if ends == "succeeded":
                live.status, live.has_output = S.JOB_STATUS_SUCCEEDED, True

    jobs.meanwhile = submitted_meanwhile
    report = await _audit(usage)

    assert list(report.discrepancies) == []
    assert (report.jobs_checked, report.entries_checked) == (3, 3)


async def test_what_happens_while_the_jobs_are_listed_is_judged_as_the_listing_saw_it(
    book, new_id: Callable[[], str], clock
) -> None:
    """A debit of a job submitted after its page was listed, and the refund of a job
    listed in flight that failed afterwards, are not discrepancies; the same entries
    written before the audit began still are."""
    jobs, usage, _ = book
    owner = new_id()
    running = jobs.add_outcome(owner, S.JOB_STATUS_PROCESSING, charged=True)
    await usage.debit(owner, running.job_id)
    jobs.add(owner, S.JOB_STATUS_STARTING)
    ghost = new_id()  # a debit from before the audit for a job nobody knows
    await usage.debit(owner, ghost)

    submitted = new_id()

    async def meanwhile(offset: int) -> None:
        if offset == 0:
            clock.current += timedelta(seconds=1)
            await usage.debit(owner, submitted)  # its job came after the listing began
            await usage.credit(owner, running.job_id)  # it failed after it was listed

    jobs.meanwhile = meanwhile
    report = await _audit(usage)

    assert [(d.kind, d.job_id) for d in report.discrepancies] == [("DEBIT_WITHOUT_JOB", ghost)]
    # Audited again as it stands (the refunded job listed failed): the debit of a job
    # generation still does not list is one now, the refund is not.
    jobs.meanwhile = None
    running.status, running.refunded = S.JOB_STATUS_FAILED, True
    again = await _audit(usage)
    assert sorted((d.kind, d.job_id) for d in again.discrepancies) == sorted(
        [("DEBIT_WITHOUT_JOB", ghost), ("DEBIT_WITHOUT_JOB", submitted)]
    )


async def test_the_audit_fails_cleanly_when_generation_is_unreachable(
    usage_db: str, server_factory, clock
) -> None:
    async with server_factory(
        usage_db, clock, GENERATION_GRPC_TARGET=f"127.0.0.1:{free_port()}"
    ) as usage:
        error = await usage.error_of(_audit(usage))
        printed = io.StringIO()
        code = await asyncio.to_thread(
            cli.main, ["--target", usage.target, "audit"], io.StringIO(), printed
        )

    assert error.code == "UPSTREAM_ERROR"
    assert code == 2
    # usage answered: the operator is told what it said, not to check the address.
    assert json.loads(printed.getvalue())["error"] == {
        "code": "UPSTREAM_ERROR",
        "message": error.message,
    }
