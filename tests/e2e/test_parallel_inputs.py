"""Parallel submissions with images by one user: the refused ones leave nothing in
storage, and one key's repeats store one job's inputs (SPEC: bad input leaves nothing
behind; one job in flight per user; one key, one job)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from generation.domain.sweep import sweep_once
from tests.e2e.harness import Stack, User, jpeg_bytes, objects_under


async def _inputs_of(user: User, job_id: str) -> set[str]:
    """The input keys the job's row names."""
    async with user.stack.ctx.reads() as stores:
        view = await stores.reads.view(user.id, uuid.UUID(job_id))
    assert view is not None
    return set(view.input_keys)


async def test_parallel_image_submits_by_one_user_leave_only_the_winners_inputs(
    stack: Stack, user: User
) -> None:
    await stack.control("set_faults", hold=True)
    responses = await asyncio.gather(
        *[
            user.submit(
                "compose", images=[jpeg_bytes(color=(i, 2, 3)), jpeg_bytes(color=(3, i, 2))]
            )
            for i in range(8)
        ]
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 1, [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 202).json()
    stack.clock.advance(timedelta(seconds=30))
    await sweep_once(stack.ctx)
    stored = set(await objects_under(stack, stack.ctx.private_bucket, f"{user.id}/inputs/"))
    assert stored == await _inputs_of(user, winner["id"])
    await stack.control("advance", winner["predictionId"], "succeeded")
    await user.wait_for(winner["id"], {"succeeded"})


async def test_parallel_same_key_image_submits_leave_only_one_jobs_inputs(
    stack: Stack, user: User
) -> None:
    await stack.control("set_faults", hold=True)
    images = [jpeg_bytes(color=(9, 2, 3)), jpeg_bytes(color=(3, 9, 2))]
    responses = await asyncio.gather(
        *[user.submit("compose", images=images, key="same-key-1") for _ in range(6)]
    )
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    job_id = ids.pop()
    stored = set(await objects_under(stack, stack.ctx.private_bucket, f"{user.id}/inputs/"))
    assert stored == await _inputs_of(user, job_id)
    # A replay answers the job as it is now, which may be before its run was attached
    # (predictionId null); the submission that made the job answers once it was.
    (pid,) = {r.json()["predictionId"] for r in responses} - {None}
    await stack.control("advance", pid, "succeeded")
    await user.wait_for(job_id, {"succeeded"})
    assert (await user.usage())["used"] == 1
