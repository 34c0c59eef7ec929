"""The change feed: WatchJobs on real gRPC servers, two instances on one real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import pytest
import structlog
from sqlalchemy import func, select, update

from generation.domain import queries
from generation.persistence.feed import ChangeFeed
from generation.persistence.models import GenerationJob, JobEvent, Render
from generation.settings import GenerationSettings
from generation.wiring import GenerationApp, build_app
from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit.db import session_scope
from kit.grpc_client import create_channel
from kit.wire import FEED_MARKS_WITHIN
from testkit.feed import end_listen_connections, frozen, listen_backends
from testkit.plugin import S3Endpoint

WAIT = 10.0
HEARTBEAT = 0.2


@dataclass
class Instance:
    app: GenerationApp
    channel: grpc.aio.Channel

    @property
    def stub(self) -> generation_pb2_grpc.GenerationServiceAsyncStub:
        return generation_pb2_grpc.GenerationServiceStub(self.channel)


@pytest.fixture
async def instances(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> AsyncIterator[list[Instance]]:
    url = database_factory("gen_feed")
    started: list[Instance] = []
    for _ in range(2):
        app = await build_app(
            GenerationSettings(
                GENERATION_DATABASE_URL=url,
                SWEEP_ENABLED=False,
                FEED_HEARTBEAT_SECONDS=HEARTBEAT,
                # cast: pydantic types each field; the S3 env names are all strings.
                **cast(dict[str, Any], s3_server.env()),
            ),
            port=0,
        )
        port = await app.server.start()
        started.append(Instance(app, create_channel(f"127.0.0.1:{port}")))
    yield started
    for instance in started:
        await instance.channel.close()
        await instance.app.server.stop(0)


def _new_job(owner: uuid.UUID) -> GenerationJob:
    now = datetime.now(UTC)
    return GenerationJob(
        id=uuid.uuid4(),
        owner_id=owner,
        request_fingerprint="f" * 64,
        mode="imagine",
        status="starting",
        charge_state="none",
        refund_state="none",
        created_at=now,
        updated_at=now,
    )


async def _insert_job(instance: Instance, owner: uuid.UUID) -> uuid.UUID:
    job = _new_job(owner)
    async with session_scope(instance.app.context.sessions) as session:
        session.add(job)
    return job.id


async def _set(instance: Instance, job_id: uuid.UUID, **values: object) -> None:
    async with session_scope(instance.app.context.sessions) as session:
        await session.execute(
            update(GenerationJob).where(GenerationJob.id == job_id).values(**values)
        )


class Follower:
    """One WatchJobs stream, read in the background into a list."""

    def __init__(
        self,
        instance: Instance,
        owner: uuid.UUID | None,
        from_version: int = 0,
        *,
        with_jobs: bool = False,
        heartbeats: bool = False,
    ):
        request = pb.WatchJobsRequest(
            owner_id=str(owner) if owner else "",
            from_version=from_version,
            with_jobs=with_jobs,
            heartbeats=heartbeats,
        )
        self.call = instance.stub.WatchJobs(request)
        self.changes: list[pb.JobChange] = []
        self.caught_up = asyncio.Event()
        self.marks = 0
        # Each mark's mark_age_ms, in order.
        self.ages: list[int] = []
        self.ended: grpc.aio.AioRpcError | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for item in self.call:
                if item.WhichOneof("item") == "caught_up":
                    self.marks += 1
                    self.ages.append(item.mark_age_ms)
                    self.caught_up.set()
                else:
                    self.changes.append(item.change)
        except grpc.aio.AioRpcError as error:
            self.ended = error

    async def until(self, done: Callable[[list[pb.JobChange]], bool]) -> list[pb.JobChange]:
        async with asyncio.timeout(WAIT):
            while not done(self.changes):
                await asyncio.sleep(0.01)
        return self.changes

    def versions_of(self, job_id: uuid.UUID) -> list[int]:
        return [c.version for c in self.changes if c.job_id == str(job_id)]

    def cancel(self) -> None:
        self.call.cancel()
        self._task.cancel()


async def test_every_visible_change_reaches_followers_on_every_instance(
    instances: list[Instance],
) -> None:
    owner = uuid.uuid4()
    followers = [Follower(instance, None) for instance in instances]
    await asyncio.gather(*(f.caught_up.wait() for f in followers))

    job_id = await _insert_job(instances[0], owner)
    await _set(instances[1], job_id, status="processing")
    await _set(instances[0], job_id, last_polled_at=datetime.now(UTC))  # invisible: no event
    await _set(instances[1], job_id, status="succeeded", completed_at=datetime.now(UTC))
    render_id = uuid.uuid4()
    async with session_scope(instances[0].app.context.sessions) as session:
        session.add(Render(id=render_id, job_id=job_id, owner_id=owner, mode="imagine"))
    async with session_scope(instances[0].app.context.sessions) as session:
        await session.execute(
            update(Render).where(Render.id == render_id).values(deleted_at=datetime.now(UTC))
        )

    for follower in followers:
        # A def, not a lambda: mypy cannot infer a lambda with a default argument.
        def five_versions(_: list[pb.JobChange], f: Follower = follower) -> bool:
            return len(f.versions_of(job_id)) == 5

        await follower.until(five_versions)
        versions = follower.versions_of(job_id)
        assert versions == sorted(versions)
        assert len(set(versions)) == 5  # insert, processing, succeeded, render, deletion
        assert {c.owner_id for c in follower.changes} == {str(owner)}
        follower.cancel()


async def test_deleting_a_job_without_a_render_is_a_change(instances: list[Instance]) -> None:
    """A failed or canceled job has no render whose trigger would bump it: its own
    ``deleted_at`` must (GET then shows no inputs), or no edge hears of the DELETE."""
    owner = uuid.uuid4()
    follower = Follower(instances[0], None)
    await follower.caught_up.wait()
    job_id = await _insert_job(instances[1], owner)
    await _set(instances[1], job_id, status="failed", completed_at=datetime.now(UTC))
    await follower.until(lambda _: len(follower.versions_of(job_id)) == 2)

    await _set(instances[1], job_id, deleted_at=datetime.now(UTC))

    await follower.until(lambda _: len(follower.versions_of(job_id)) == 3)
    follower.cancel()


async def test_a_change_carries_the_job_exactly_as_get_generation_shows_it(
    instances: list[Instance],
) -> None:
    owner = uuid.uuid4()
    carrying = Follower(instances[0], None, with_jobs=True)
    plain = Follower(instances[1], None)
    await asyncio.gather(carrying.caught_up.wait(), plain.caught_up.wait())

    job_id = await _insert_job(instances[1], owner)
    await _set(instances[1], job_id, status="processing")
    await carrying.until(lambda _: len(carrying.versions_of(job_id)) == 2)
    await plain.until(lambda _: len(plain.versions_of(job_id)) == 2)
    answer = await instances[0].stub.GetGeneration(
        pb.GetGenerationRequest(owner_id=str(owner), job_id=str(job_id))
    )

    last = carrying.changes[-1]
    assert last.HasField("job")
    assert last.job == answer.job  # no second round trip needed to show the change
    assert last.job.version >= last.version
    assert not any(change.HasField("job") for change in plain.changes)  # only when asked
    carrying.cancel()
    plain.cancel()


async def test_get_jobs_reads_the_named_jobs_as_get_generation_shows_them(
    instances: list[Instance],
) -> None:
    owners = [uuid.uuid4(), uuid.uuid4()]
    job_ids = [await _insert_job(instances[0], owner) for owner in owners]
    await _set(instances[0], job_ids[1], status="processing")
    unknown = str(uuid.uuid4())

    answer = await instances[1].stub.GetJobs(
        pb.GetJobsRequest(job_ids=[str(job_ids[0]), unknown, str(job_ids[1]), str(job_ids[0])])
    )

    shown = {job.id: job for job in answer.jobs}
    assert sorted(shown) == sorted(str(job_id) for job_id in job_ids)  # unknown left out
    for owner, job_id in zip(owners, job_ids, strict=True):
        alone = await instances[1].stub.GetGeneration(
            pb.GetGenerationRequest(owner_id=str(owner), job_id=str(job_id))
        )
        assert shown[str(job_id)] == alone.job
    for bad in (["not-a-uuid"], [str(uuid.uuid4()) for _ in range(501)]):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await instances[1].stub.GetJobs(pb.GetJobsRequest(job_ids=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_owner_filter_sees_only_that_owner(instances: list[Instance]) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    follower = Follower(instances[0], mine)
    await follower.caught_up.wait()

    await _insert_job(instances[1], theirs)
    job_id = await _insert_job(instances[1], mine)

    changes = await follower.until(lambda seen: any(c.job_id == str(job_id) for c in seen))
    assert {c.owner_id for c in changes} == {str(mine)}
    follower.cancel()


async def test_an_owner_filter_replays_only_that_owners_changes(
    instances: list[Instance],
) -> None:
    """A follower of one owner that resumes from before other owners' changes is given
    back only its owner's, from the table as well as live."""
    mine = uuid.uuid4()
    await _insert_job(instances[1], uuid.uuid4())
    async with session_scope(instances[0].app.context.sessions) as session:
        before = int(await session.scalar(select(func.max(JobEvent.version))) or 0)
    await _insert_job(instances[1], uuid.uuid4())
    job_id = await _insert_job(instances[1], mine)
    await _insert_job(instances[1], uuid.uuid4())

    follower = Follower(instances[0], mine, from_version=before)
    await asyncio.wait_for(follower.caught_up.wait(), WAIT)
    assert str(job_id) in {c.job_id for c in follower.changes}
    assert {c.owner_id for c in follower.changes} == {str(mine)}
    follower.cancel()


async def test_a_resume_from_another_instance_loses_nothing(instances: list[Instance]) -> None:
    owner = uuid.uuid4()
    first = Follower(instances[0], owner)
    await first.caught_up.wait()
    job_id = await _insert_job(instances[0], owner)
    await first.until(lambda seen: len(seen) == 1)
    last_seen = first.changes[-1].version
    first.cancel()

    # Changes while nobody follows; then resume on the other instance.
    await _set(instances[0], job_id, status="processing")
    await _set(instances[0], job_id, status="failed", completed_at=datetime.now(UTC))
    resumed = Follower(instances[1], owner, from_version=last_seen)
    await resumed.caught_up.wait()
    await _set(instances[1], job_id, error_code="CANCELED")

    await resumed.until(lambda seen: len({c.version for c in seen if c.version > last_seen}) == 3)
    after = sorted({v for v in resumed.versions_of(job_id) if v > last_seen})
    assert len(after) == 3
    resumed.cancel()


async def test_a_lost_database_feed_ends_the_stream_and_a_resume_recovers(
    instances: list[Instance],
) -> None:
    owner = uuid.uuid4()
    follower = Follower(instances[0], owner)
    await follower.caught_up.wait()
    job_id = await _insert_job(instances[0], owner)
    await follower.until(lambda seen: len(seen) == 1)

    # Kill the instance's listening connection, as a database restart or failover would.
    await end_listen_connections(instances[1].app.context.sessions)
    async with asyncio.timeout(WAIT):
        while follower.ended is None:
            await asyncio.sleep(0.01)
    assert follower.ended.code() is grpc.StatusCode.UNAVAILABLE
    await _set(instances[1], job_id, status="processing")  # while nobody listens

    resumed = Follower(instances[0], owner, from_version=follower.changes[-1].version)
    await resumed.until(lambda seen: any(c.version > follower.changes[-1].version for c in seen))
    resumed.cancel()


def _counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[list[uuid.UUID]]:
    """The ids of the jobs each read for carried views asked for from now on, in order."""
    reads: list[list[uuid.UUID]] = []
    load_views = queries.load_views

    async def counted(ctx: Any, job_ids: list[uuid.UUID]) -> Any:
        reads.append(list(job_ids))
        return await load_views(ctx, job_ids)

    monkeypatch.setattr(queries, "load_views", counted)
    return reads


async def test_changes_of_one_commit_carry_the_job_read_once(
    instances: list[Instance], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _counted_reads(monkeypatch)
    owner = uuid.uuid4()
    carrying = Follower(instances[0], None, with_jobs=True)
    await carrying.caught_up.wait()
    job_id = await _insert_job(instances[1], owner)
    await carrying.until(lambda _: len(carrying.versions_of(job_id)) == 1)
    reads.clear()

    # A success: the job's update and its render's insert (which bumps the version
    # again) commit together, so their two changes arrive together.
    async with session_scope(instances[1].app.context.sessions) as session:
        await session.execute(
            update(GenerationJob)
            .where(GenerationJob.id == job_id)
            .values(status="succeeded", completed_at=datetime.now(UTC))
        )
        session.add(Render(id=uuid.uuid4(), job_id=job_id, owner_id=owner, mode="imagine"))
    await carrying.until(lambda _: len(carrying.versions_of(job_id)) == 3)

    succeeded, rendered = carrying.changes[-2:]
    assert reads == [[job_id]]
    assert succeeded.job == rendered.job
    assert succeeded.job.version == rendered.version
    assert succeeded.job.status == pb.JOB_STATUS_SUCCEEDED
    carrying.cancel()


async def test_a_burst_of_changes_is_read_in_a_few_steps_each_carrying_its_own_job(
    instances: list[Instance], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes that arrive together are carried from one read of their jobs (in batches
    of at most BATCH_LIMIT), not one read each: a burst of thousands otherwise kept
    every edge behind for seconds."""
    reads = _counted_reads(monkeypatch)
    carrying = Follower(instances[0], None, with_jobs=True)
    await carrying.caught_up.wait()
    owners = [uuid.uuid4() for _ in range(300)]
    jobs = [_new_job(owner) for owner in owners]
    async with session_scope(instances[1].app.context.sessions) as session:
        session.add_all(jobs)  # one commit: the 300 notifications arrive together
    changes = await carrying.until(lambda seen: len(seen) == len(jobs))

    assert [change.job_id for change in changes] == [str(job.id) for job in jobs]
    assert all(change.job.id == change.job_id for change in changes)
    assert [change.job.owner_id for change in changes] == [str(owner) for owner in owners]
    assert sum(len(ids) for ids in reads) == len(jobs)
    assert len(reads) <= 3, [len(ids) for ids in reads]
    carrying.cancel()


async def test_a_followed_stream_is_marked_every_heartbeat_when_it_asks(
    instances: list[Instance],
) -> None:
    follower = Follower(instances[0], None, heartbeats=True)
    unasked = Follower(instances[0], None)  # an older follower reads each one as a resume
    await asyncio.gather(follower.caught_up.wait(), unasked.caught_up.wait())
    # Announced before anything else: a heartbeat plus the probe's timeout (4 s at least).
    metadata = await follower.call.initial_metadata()
    assert metadata.get(FEED_MARKS_WITHIN) == f"{HEARTBEAT + 4.0:g}"
    first = follower.marks
    await asyncio.sleep(HEARTBEAT * 6)
    # One mark per heartbeat (the first after the replay): a follower can time out on them.
    assert follower.marks - first >= 3
    assert unasked.marks == 1  # the caught-up one only, and no announcement
    assert (await unasked.call.initial_metadata()).get(FEED_MARKS_WITHIN) is None
    follower.cancel()
    unasked.cancel()


async def test_a_mark_says_how_long_ago_it_was_taken(instances: list[Instance]) -> None:
    """A mark vouches for changes committed before its probe was sent: one whose probe
    came back late says so (an edge then does not take it for a recent one)."""
    follower = Follower(instances[0], None, heartbeats=True)
    await follower.caught_up.wait()
    await asyncio.sleep(HEARTBEAT * 3)
    assert follower.ages
    assert max(follower.ages) < 250  # the replay's table read and prompt probes
    pids = await listen_backends(instances[0].app.context.sessions)
    seen = len(follower.ages)
    with frozen(pids):
        await asyncio.sleep(0.5)  # under the probe's 4 s: the connection is kept
    # The probe sent while the connection was stopped came back after it (0.3 s late
    # at least: 0.5 s stopped, a heartbeat between probes). A mark already on its way
    # when the stop came may arrive first, saying it is recent: it was.
    async with asyncio.timeout(WAIT):
        while not any(age >= 250 for age in follower.ages[seen:]):
            await asyncio.sleep(0.01)
    assert follower.ended is None
    follower.cancel()


async def test_a_listening_connection_gone_deaf_ends_the_stream(
    instances: list[Instance],
) -> None:
    """A LISTEN connection that dies without closing (a NAT's idle timeout, a failover
    without a reset) delivers nothing, and its followers would believe nothing changed.
    Here its server process is stopped: the socket stays open, nothing arrives."""
    owner = uuid.uuid4()
    follower = Follower(instances[0], owner)
    other = Follower(instances[1], owner)
    await asyncio.gather(follower.caught_up.wait(), other.caught_up.wait())
    pids = await listen_backends(instances[0].app.context.sessions)
    assert len(pids) == 2  # one per instance; freeze both
    # Bounded: a server process stopped while it held a lock would stall others.
    with frozen(pids):
        async with asyncio.timeout(WAIT):
            while follower.ended is None or other.ended is None:
                await asyncio.sleep(0.01)
            await _insert_job(instances[1], owner)  # while both are deaf
    assert follower.ended.code() is grpc.StatusCode.UNAVAILABLE
    assert other.ended.code() is grpc.StatusCode.UNAVAILABLE
    # A resume opens a new connection and misses nothing.
    resumed = Follower(instances[0], owner, from_version=1)
    await resumed.until(lambda seen: len(seen) == 1)
    resumed.cancel()


async def test_a_resume_replays_changes_without_reading_their_jobs(
    instances: list[Instance], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resuming follower drops what it kept and reads what it needs once caught up:
    # a job read for each replayed change (up to 1000 per resume) would be wasted.
    owners = [uuid.uuid4() for _ in range(3)]
    follower = Follower(instances[0], None)
    await follower.caught_up.wait()
    job_ids = [await _insert_job(instances[0], owner) for owner in owners]
    await follower.until(lambda seen: len(seen) >= 3)
    follower.cancel()

    reads = _counted_reads(monkeypatch)
    resumed = Follower(instances[1], None, from_version=1, with_jobs=True)
    await resumed.caught_up.wait()
    assert set(job_ids) <= {uuid.UUID(c.job_id) for c in resumed.changes}
    assert not any(c.HasField("job") for c in resumed.changes)
    assert reads == []
    replayed = len(resumed.changes)
    await _set(instances[0], job_ids[0], status="processing")  # live: carried
    await resumed.until(lambda seen: len(seen) == replayed + 1)
    assert resumed.changes[-1].job.status == pb.JOB_STATUS_PROCESSING
    assert reads == [[job_ids[0]]]
    resumed.cancel()


async def test_a_connection_that_went_deaf_while_nobody_followed_is_not_handed_on(
    instances: list[Instance],
) -> None:
    """An idle connection is what a NAT's idle timeout drops: it is probed all the same,
    so the next follower gets a connection that hears."""
    follower = Follower(instances[0], None)
    await follower.caught_up.wait()
    follower.cancel()  # nobody follows now; the connection stays open
    pids = await listen_backends(instances[0].app.context.sessions)
    owner = uuid.uuid4()
    with frozen(pids):
        await asyncio.sleep(HEARTBEAT + 4.0 + 0.5)  # a heartbeat, a probe's timeout, slack
        # Still frozen: a follower handed the old connection would hear nothing.
        again = Follower(instances[0], owner)
        async with asyncio.timeout(WAIT):
            await again.caught_up.wait()
            job_id = await _insert_job(instances[1], owner)
        await again.until(lambda _: len(again.versions_of(job_id)) == 1)
        again.cancel()


async def test_the_listening_connection_keeps_no_callers_log_context(
    instances: list[Instance], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WatchJobs call that opens the connection has its request id and rpc bound:
    lent to the connection's callbacks and tasks, they would tag unrelated lines
    (feed.connection_lost, feed.probe_failed) for the life of the process."""
    seen: list[dict[str, Any]] = []
    on_notify = ChangeFeed._on_notify

    def spy(self: ChangeFeed, *args: Any) -> None:
        seen.append(dict(structlog.contextvars.get_contextvars()))
        on_notify(self, *args)

    monkeypatch.setattr(ChangeFeed, "_on_notify", spy)
    owner = uuid.uuid4()
    request = pb.WatchJobsRequest(owner_id=str(owner))
    call = instances[0].stub.WatchJobs(request, metadata=(("x-request-id", "opener-1"),))
    first: Any = await call.read()
    assert first.WhichOneof("item") == "caught_up"
    await _insert_job(instances[1], owner)
    second: Any = await call.read()
    assert second.WhichOneof("item") == "change"
    call.cancel()
    assert seen
    assert not any({"requestId", "clientRequestId", "rpc", "caller"} & set(ctx) for ctx in seen)


async def test_a_connection_lost_as_it_opens_ends_the_stream_that_opened_it(
    instances: list[Instance], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lost between its opening and the follower's subscription, the connection ended
    the subscribers of that moment, not this one: the stream heard nothing for good
    (no change, no mark) until its client gave it up. It ends at once instead, and the
    client's resume opens a connection that hears."""
    listen = ChangeFeed._listen
    lost: list[bool] = []

    async def lost_on_opening(self: ChangeFeed) -> None:
        await listen(self)
        if not lost:
            lost.append(True)
            assert self._connection is not None
            self._connection.terminate()

    monkeypatch.setattr(ChangeFeed, "_listen", lost_on_opening)
    first = Follower(instances[0], None, heartbeats=True)
    async with asyncio.timeout(WAIT):
        while first.ended is None:
            await asyncio.sleep(0.01)
    assert first.ended.code() == grpc.StatusCode.UNAVAILABLE
    owner = uuid.uuid4()
    again = Follower(instances[0], owner)
    await asyncio.wait_for(again.caught_up.wait(), WAIT)
    job_id = await _insert_job(instances[1], owner)
    await again.until(lambda _: len(again.versions_of(job_id)) == 1)
    again.cancel()
