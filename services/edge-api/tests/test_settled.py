"""The settled-job cache's rules, on its own (the cluster proof is in tests/concurrency)."""

from __future__ import annotations

from edge_api.settings import EdgeSettings
from edge_api.settled import SettledJobs
from generation.settings import GenerationSettings
from interior.generation.v1 import generation_pb2

JOB = "00000000-0000-4000-8000-000000000001"
OWNER = "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
OTHER = "0e5f2a1c-3d4b-4c6e-8f7a-9b0c1d2e3f4a"
OTHER_JOB = "00000000-0000-4000-8000-000000000002"


def _job(
    version: int,
    status: generation_pb2.JobStatus.ValueType = generation_pb2.JOB_STATUS_SUCCEEDED,
    job_id: str = JOB,
):
    return generation_pb2.Job(id=job_id, owner_id=OWNER, status=status, version=version)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _live(capacity: int = 10, clock: Clock | None = None) -> SettledJobs:
    cache = SettledJobs(capacity, max_age=150.0, clock=clock or Clock())
    cache.resume()
    return cache


def _served(cache: SettledJobs, job: generation_pb2.Job, owner: str = OWNER) -> None:
    with cache.reading(job.id) as read:
        cache.keep(read, job, owner)


def test_a_settled_view_is_answered_to_its_owner_only() -> None:
    cache = _live()
    _served(cache, _job(5))
    assert cache.lookup(JOB, OWNER) == _job(5)
    assert cache.lookup(JOB, OTHER) is None


def test_running_jobs_are_not_kept() -> None:
    cache = _live()
    _served(cache, _job(5, generation_pb2.JOB_STATUS_PROCESSING))
    assert cache.lookup(JOB, OWNER) is None


def test_a_newer_change_drops_the_view_and_an_equal_one_does_not() -> None:
    cache = _live()
    _served(cache, _job(5))
    cache.changed(JOB, 5)
    assert cache.lookup(JOB, OWNER) is not None
    cache.changed(JOB, 6)
    assert cache.lookup(JOB, OWNER) is None


def test_a_read_that_raced_a_change_is_not_kept() -> None:
    cache = _live()
    with cache.reading(JOB) as read:
        cache.changed(JOB, 7)  # reported while generation's answer (version 5) travels
        cache.keep(read, _job(5), OWNER)
    assert cache.lookup(JOB, OWNER) is None


def test_forget_refuses_reads_in_flight() -> None:
    cache = _live()
    with cache.reading(JOB) as read:
        cache.forget(JOB, for_seconds=30.0)
        cache.keep(read, _job(5), OWNER)
    assert cache.lookup(JOB, OWNER) is None


def test_nothing_is_answered_or_kept_while_the_feed_is_down() -> None:
    cache = _live()
    _served(cache, _job(5))
    cache.suspend()
    assert cache.lookup(JOB, OWNER) is None
    _served(cache, _job(5))
    cache.resume()
    assert cache.lookup(JOB, OWNER) is None  # dropped on the way down, not kept meanwhile


def test_a_read_begun_before_a_resume_is_not_kept() -> None:
    cache = _live()
    with cache.reading(JOB) as read:
        cache.suspend()
        cache.resume()
        cache.keep(read, _job(5), OWNER)
    assert len(cache) == 0


def test_the_least_recently_used_view_goes_first() -> None:
    cache = _live(capacity=2)
    first, second, third = (_job(1, job_id=f"{JOB[:-1]}{n}") for n in (1, 2, 3))
    _served(cache, first)
    _served(cache, second)
    assert cache.lookup(first.id, OWNER) is not None  # first is now the most recent
    _served(cache, third)
    assert len(cache) == 2
    assert cache.lookup(second.id, OWNER) is None
    assert cache.lookup(first.id, OWNER) is not None


def test_an_older_view_never_replaces_a_newer_one() -> None:
    cache = _live()
    _served(cache, _job(9))
    _served(cache, _job(5))
    assert cache.lookup(JOB, OWNER) == _job(9)


def test_views_expire_before_their_signed_urls() -> None:
    clock = Clock()
    cache = _live(clock=clock)
    _served(cache, _job(5))
    clock.now = 151.0
    assert cache.lookup(JOB, OWNER) is None
    assert len(cache) == 0


def test_capacity_zero_turns_it_off() -> None:
    cache = _live(capacity=0)
    _served(cache, _job(5))
    assert cache.lookup(JOB, OWNER) is None


def test_a_settled_view_the_feed_carried_is_answered_to_its_owner_only() -> None:
    cache = _live()
    cache.changed(JOB, 5)
    cache.carried(JOB, _job(6), OWNER)  # read after the change: version 6 >= 5
    assert cache.lookup(JOB, OWNER) == _job(6)
    assert cache.lookup(JOB, OTHER) is None


def test_a_carried_view_is_not_kept_running_down_or_older() -> None:
    cache = _live()
    cache.carried(JOB, _job(5, generation_pb2.JOB_STATUS_PROCESSING), OWNER)
    assert cache.lookup(JOB, OWNER) is None
    _served(cache, _job(9))
    cache.carried(JOB, _job(7), OWNER)
    assert cache.lookup(JOB, OWNER) == _job(9)
    cache.suspend()
    cache.carried(JOB, _job(10), OWNER)
    cache.resume()
    assert cache.lookup(JOB, OWNER) is None
    off = _live(capacity=0)
    off.carried(JOB, _job(5), OWNER)
    assert off.lookup(JOB, OWNER) is None


def test_a_later_change_drops_a_carried_view_and_a_read_in_flight_never_replaces_it() -> None:
    cache = _live()
    with cache.reading(JOB) as read:  # a GET asks generation while the job settles
        cache.changed(JOB, 6)
        cache.carried(JOB, _job(6), OWNER)
        cache.keep(read, _job(4, generation_pb2.JOB_STATUS_PROCESSING), OWNER)
    assert cache.lookup(JOB, OWNER) is None  # the raced read dropped what it could not trust
    cache.carried(JOB, _job(6), OWNER)
    cache.changed(JOB, 7)  # e.g. its render was deleted
    assert cache.lookup(JOB, OWNER) is None


def _deleted(version: int):
    return _job(version)  # still succeeded: a deletion empties its variants


def test_a_delete_this_edge_answered_outlives_its_evicted_view() -> None:
    # The DELETE's reply (v12) is kept, then evicted by other jobs; the feed then brings
    # the older change v10 with the view it carried from before the deletion.
    cache = _live(capacity=1)
    with cache.reading(JOB) as read:
        cache.answered(JOB, 12)
        cache.keep(read, _deleted(12), OWNER)
    _served(cache, _job(3, job_id=OTHER_JOB))  # evicts the DELETE's view
    cache.changed(JOB, 10)
    cache.carried(JOB, _job(10), OWNER)
    assert cache.lookup(JOB, OWNER) is None
    _served(cache, _job(11))  # a read older than the DELETE is not kept either
    assert cache.lookup(JOB, OWNER) is None
    # The feed reports the deletion itself: from then on it is the feed's order again.
    cache.changed(JOB, 12)
    cache.carried(JOB, _deleted(12), OWNER)
    assert cache.lookup(JOB, OWNER) == _deleted(12)


def test_after_a_failed_delete_call_no_view_of_the_job_is_kept_until_its_deadline() -> None:
    clock = Clock()
    cache = SettledJobs(10, max_age=150.0, clock=clock)
    cache.resume()
    _served(cache, _job(10))
    cache.forget(JOB, for_seconds=35.0)  # the DELETE call failed: it may have been done
    cache.changed(JOB, 10)
    cache.carried(JOB, _job(10), OWNER)
    _served(cache, _job(11))
    assert cache.lookup(JOB, OWNER) is None
    clock.now = 34.9
    _served(cache, _job(11))
    assert cache.lookup(JOB, OWNER) is None
    # Past the call's deadline the deletion was done or will never be: what generation
    # answers and the feed reports is the truth again (pinned for ever, every GET of
    # the job went to generation for the life of the process).
    clock.now = 35.0
    _served(cache, _job(12))
    assert cache.lookup(JOB, OWNER) == _job(12)


def test_a_marked_feed_vouches_for_its_views_only_while_its_last_mark_is_recent() -> None:
    """A stream can stall while it stays open: views are answered only while the last
    mark (taken ``age`` seconds before it arrived) is within the freshness bound, and
    again from the next mark on, without losing what was kept."""
    clock = Clock()
    cache = SettledJobs(10, max_age=150.0, clock=clock, freshness=0.2)
    cache.resume(marked=True)
    _served(cache, _job(3))
    assert cache.lookup(JOB, OWNER) is None  # caught up, but no mark yet

    cache.vouch(age=0.05)  # taken 50 ms ago: good until 150 ms from now
    assert cache.lookup(JOB, OWNER) is not None
    clock.now = 0.15
    assert cache.lookup(JOB, OWNER) is not None
    clock.now = 0.16
    assert cache.lookup(JOB, OWNER) is None  # the marks stopped: ask generation
    assert not cache.live

    cache.vouch(age=0.5)  # a late mark vouches for nothing recent
    assert cache.lookup(JOB, OWNER) is None
    cache.vouch(age=0.0)
    assert cache.lookup(JOB, OWNER) is not None  # the view was kept meanwhile


def test_an_unmarked_feed_is_trusted_while_connected() -> None:
    """A generation that marks nothing (an older version) is trusted as before."""
    clock = Clock()
    cache = SettledJobs(10, max_age=1000.0, clock=clock, freshness=0.2)
    cache.resume(marked=False)
    _served(cache, _job(3))
    clock.now = 100.0
    assert cache.lookup(JOB, OWNER) is not None
    cache.vouch(age=0.0)  # ignored: nothing to bound
    clock.now = 200.0
    assert cache.lookup(JOB, OWNER) is not None


def test_the_default_bounds_keep_the_specs_250_ms() -> None:
    """SPEC: every other instance shows a change within 250 ms, and one that cannot
    follow changes serves from the source of truth. A feed that freezes right after a
    mark (its stream still open) hides a change for the freshness bound: inside 250 ms
    by default, with a mark due well within it."""
    freshness = EdgeSettings.model_fields["feed_freshness_seconds"].default
    heartbeat = GenerationSettings.model_fields["feed_heartbeat_seconds"].default
    assert freshness < 0.25
    assert heartbeat <= freshness - 0.03  # room for a mark's delay before a read is forced

    clock = Clock()
    cache = SettledJobs(10, max_age=150.0, clock=clock)
    cache.resume(marked=True)
    with cache.reading(JOB) as read:
        cache.keep(read, _job(3), OWNER)
    cache.vouch(age=0.0)  # the last mark; then the feed freezes
    clock.now = 0.25
    assert cache.lookup(JOB, OWNER) is None
