"""UploadAdmission and UploadPace on their own: real asyncio, no HTTP.

The HTTP behaviour (429 / 408 answers, real disconnects) is in test_fair_uploads.py;
here are the orderings and cancellations that are hard to stage over a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest

from edge_api.admission import UploadAdmission
from edge_api.pace import UploadPace
from kit.errors import TooManyRequests

A, B = "user-a", "user-b"


async def _hold(admission: UploadAdmission, owner: str, entered: asyncio.Event) -> None:
    async with admission.admit(owner):
        entered.set()
        await asyncio.Event().wait()  # until cancelled


async def _poll(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    started: list[asyncio.Task[None]] = []
    yield started
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


async def test_the_per_user_limit_is_checked_before_waiting_for_a_slot(
    tasks: list[asyncio.Task[None]],
) -> None:
    # One slot, held by A; A's second upload waits for it. A third is refused at
    # once, even though the slot wait is long: the per-user count includes waiters.
    admission = UploadAdmission(slots=1, per_user=2, slot_wait_seconds=60, retry_after_seconds=7)
    first = asyncio.Event()
    tasks.append(asyncio.create_task(_hold(admission, A, first)))
    await first.wait()
    tasks.append(asyncio.create_task(_hold(admission, A, asyncio.Event())))
    await _poll(lambda: admission.uploads_by_user() == {A: 2})

    with pytest.raises(TooManyRequests) as refused:
        async with admission.admit(A):
            pytest.fail("admitted a third upload")

    assert refused.value.retry_after_seconds == 7
    assert "in progress" in refused.value.message
    assert admission.slots_in_use() == 1


async def test_no_free_slot_within_the_wait_is_refused_and_leaves_nothing(
    tasks: list[asyncio.Task[None]],
) -> None:
    admission = UploadAdmission(slots=1, per_user=2, slot_wait_seconds=0.05, retry_after_seconds=3)
    entered = asyncio.Event()
    tasks.append(asyncio.create_task(_hold(admission, A, entered)))
    await entered.wait()

    with pytest.raises(TooManyRequests) as refused:
        async with admission.admit(B):
            pytest.fail("admitted without a slot")

    assert "busy" in refused.value.message
    assert admission.uploads_by_user() == {A: 1}
    assert admission.slots_in_use() == 1


@pytest.mark.parametrize("where", ["waiting for a slot", "holding a slot"])
async def test_cancellation_releases_everything(
    tasks: list[asyncio.Task[None]], where: str
) -> None:
    admission = UploadAdmission(slots=1, per_user=2, slot_wait_seconds=60, retry_after_seconds=1)
    blocker_in = asyncio.Event()
    blocker = asyncio.create_task(_hold(admission, B, blocker_in))
    tasks.append(blocker)
    await blocker_in.wait()
    victim_in = asyncio.Event()
    victim = asyncio.create_task(_hold(admission, A, victim_in))
    await _poll(lambda: A in admission.uploads_by_user())
    if where == "holding a slot":
        blocker.cancel()
        await victim_in.wait()

    victim.cancel()
    await asyncio.gather(victim, return_exceptions=True)

    assert A not in admission.uploads_by_user()
    expected_slots = 1 if where == "waiting for a slot" else 0
    assert admission.slots_in_use() == expected_slots
    # The slot still works: a new upload gets it once the blocker is gone.
    blocker.cancel()
    await asyncio.gather(blocker, return_exceptions=True)
    async with admission.admit(A):
        assert admission.slots_in_use() == 1
    assert (admission.uploads_by_user(), admission.slots_in_use()) == ({}, 0)


async def test_an_error_inside_releases_everything() -> None:
    admission = UploadAdmission(slots=2, per_user=2, slot_wait_seconds=1, retry_after_seconds=1)
    context: AbstractAsyncContextManager[None] = admission.admit(A)

    with pytest.raises(RuntimeError):
        async with context:
            raise RuntimeError("boom")

    assert (admission.uploads_by_user(), admission.slots_in_use()) == ({}, 0)


# UploadPace: the rule "at least rate * window bytes in every window after the first".
RATE, WINDOW = 1000, 10.0


def test_a_silent_body_fails_when_the_grace_ends() -> None:
    pace = UploadPace(RATE, WINDOW, started=100.0)
    assert pace.deadline() == 110.0
    pace.received(RATE * 9, now=101.0)  # not a whole window's worth
    assert pace.deadline() == 110.0


def test_enough_bytes_move_the_deadline_one_window_past_them() -> None:
    pace = UploadPace(RATE, WINDOW, started=100.0)
    pace.received(RATE * 4, now=102.0)
    pace.received(RATE * 6, now=105.0)  # 10 000 bytes by 105: the start no longer counts
    assert pace.deadline() == 112.0  # 102 + window: after that only 6 000 are in the window
    pace.received(RATE * 4, now=111.0)
    assert pace.deadline() == 115.0


def test_a_steady_trickle_below_the_rate_is_caught() -> None:
    pace = UploadPace(RATE, WINDOW, started=0.0)
    now = 0.0
    while now < pace.deadline():
        now += 0.5
        pace.received(RATE // 4, now)  # a quarter of the rate, forever
    assert now <= WINDOW + 0.5  # caught at the end of the grace, not later


def test_a_steady_body_just_over_the_rate_is_never_caught() -> None:
    pace = UploadPace(RATE, WINDOW, started=0.0)
    for step in range(1, 2001):
        now = step * 0.25
        assert now < pace.deadline()
        pace.received(RATE // 4 + 10, now)


def test_the_history_stays_small_whatever_the_chunk_size() -> None:
    pace = UploadPace(10**9, WINDOW, started=0.0)  # a rate no byte count here reaches
    for step in range(100_000):
        pace.received(1, now=step * 0.0001)
    assert len(pace._samples) <= 102


def test_arrivals_sharing_a_sample_never_leave_the_window_early() -> None:
    """Two arrivals 0.09 s apart share one sample (window / 100 = 0.1 s): dated by the
    first, the second's bytes left the window 0.09 s early, and a client that kept to
    the rule until 15.09 was cut off at 15.0."""
    pace = UploadPace(100, WINDOW, started=0.0)  # 1000 bytes in every window
    for at in (5.0, 5.09, 14.95):
        pace.received(500, now=at)
    # Until 15.09, (t - 10, t] holds the 500 bytes of 5.09 and those of 14.95.
    assert pace.deadline() >= 15.09


def test_a_body_that_slows_to_a_trickle_of_tiny_chunks_is_still_caught() -> None:
    """Arrivals closer than the merge step never share one sample for longer than it:
    a sample that kept taking them, dated by the latest, would keep its whole history
    in the window, and 1 byte every 10 ms would never be cut off."""
    pace = UploadPace(RATE, WINDOW, started=0.0)
    now = 0.0
    while now < 15.0:  # twice the rate, in a chunk every 10 ms
        now += 0.01
        pace.received(RATE // 50, now)
    while now < pace.deadline() and now < 10 * WINDOW:
        now += 0.01
        pace.received(1, now)
    assert now <= 15.0 + WINDOW
