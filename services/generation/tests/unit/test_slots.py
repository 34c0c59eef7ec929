"""Slots (kit.slots) as generation builds them: a cap that waits a moment, refuses
with a Retry-After, and never loses a slot to a caller that gave up or failed."""

from __future__ import annotations

import asyncio

import pytest

from generation.api.slots import submission_slots
from kit.errors import TooManyRequests


async def test_a_caller_past_the_cap_waits_then_is_refused() -> None:
    slots = submission_slots(limit=2, wait_seconds=0.05)
    async with slots.slot(), slots.slot():
        assert slots.held == 2
        with pytest.raises(TooManyRequests) as refused:
            async with slots.slot():
                pytest.fail("a third slot was given")
        assert refused.value.retry_after_seconds == 1
        assert refused.value.details == {"retryAfterSeconds": "1"}
    assert slots.held == 0


async def test_a_slot_freed_while_waiting_is_taken() -> None:
    slots = submission_slots(limit=1, wait_seconds=5)
    first = slots.slot()
    await first.__aenter__()
    second = slots.slot()
    waiting = asyncio.ensure_future(second.__aenter__())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await first.__aexit__(None, None, None)
    await asyncio.wait_for(waiting, 1)
    assert slots.held == 1
    await second.__aexit__(None, None, None)
    assert slots.held == 0


async def test_neither_a_cancelled_waiter_nor_a_failed_holder_keeps_a_slot() -> None:
    slots = submission_slots(limit=1, wait_seconds=5)

    async def hold() -> None:
        async with slots.slot():
            await asyncio.sleep(60)

    holder = asyncio.ensure_future(hold())
    await asyncio.sleep(0.01)

    async def wait() -> None:
        async with slots.slot():
            pass

    waiter = asyncio.ensure_future(wait())
    await asyncio.sleep(0.01)
    waiter.cancel()
    holder.cancel()
    for task in (waiter, holder):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert slots.held == 0
    with pytest.raises(RuntimeError):
        async with slots.slot():
            raise RuntimeError("the submission failed")
    async with slots.slot():  # the one slot is free again
        assert slots.held == 1
