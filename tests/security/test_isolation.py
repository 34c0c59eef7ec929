"""One user can neither see, cancel, delete nor learn of another user's job.

Every probe of a foreign job gets exactly the answer a random id gets (status,
body), and the owner's job is untouched afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from testkit.stack import Stack
from tests.e2e.harness import User, make_token


def _comparable(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()


async def _probe_all(user: User, job_id: str) -> list[tuple[int, Any]]:
    return [
        _comparable(await user.get(job_id)),
        _comparable(await user.cancel(job_id)),
        _comparable(await user.delete(job_id)),
    ]


async def test_a_finished_job_is_invisible_to_others(
    stack: Stack, user: User, other_user: User
) -> None:
    response = await user.submit("imagine", prompt="A sunny living room with oak floors")
    assert response.status_code == 202
    job = await user.wait_for(response.json()["id"], {"succeeded"})

    foreign = await _probe_all(other_user, job["id"])
    unknown = await _probe_all(other_user, str(uuid.uuid4()))
    assert foreign == unknown
    assert {status for status, _ in foreign} == {404}
    # Upper case is the same id to the edge: no second way in.
    assert await _probe_all(other_user, job["id"].upper()) == unknown

    after = (await user.get(job["id"])).json()
    assert after == job  # not deleted, not cancelled, variants still listed
    assert (await other_user.usage())["used"] == 0


async def test_a_running_job_cannot_be_cancelled_by_others(
    stack: Stack, user: User, other_user: User
) -> None:
    await stack.control("set_faults", hold=True)
    try:
        response = await user.submit("imagine", prompt="A calm bedroom with linen curtains")
        assert response.status_code == 202
        job = await user.wait_for(response.json()["id"], {"processing"})
        foreign = await _probe_all(other_user, job["id"])
        assert foreign == await _probe_all(other_user, str(uuid.uuid4()))
        assert (await user.get(job["id"])).json()["status"] == "processing"
    finally:
        await stack.control("set_faults", hold=False)
    await user.wait_for(job["id"], {"succeeded"})


async def test_the_same_idempotency_key_never_returns_another_users_job(
    stack: Stack, user: User, other_user: User
) -> None:
    key = f"shared-key-{uuid.uuid4()}"
    first = await user.submit("imagine", prompt="A bright study with a desk", key=key)
    assert first.status_code == 202
    second = await other_user.submit("imagine", prompt="A bright study with a desk", key=key)
    assert second.status_code == 202
    assert second.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in second.headers
    # Each user was charged for their own job only.
    assert (await user.usage())["used"] == 1
    assert (await other_user.usage())["used"] == 1
    await user.wait_for(first.json()["id"], {"succeeded"})
    await other_user.wait_for(second.json()["id"], {"succeeded"})


async def test_a_job_id_from_another_users_token_sub_is_not_an_owner(
    stack: Stack, user: User, other_user: User
) -> None:
    """Using a job id as if it were a user id (or the reverse) finds nothing."""
    response = await user.submit("imagine", prompt="A quiet reading nook by a window")
    job = await user.wait_for(response.json()["id"], {"succeeded"})
    impostor = User(stack, other_user.client)
    impostor.id = uuid.UUID(job["id"])
    impostor.headers = {"Authorization": f"Bearer {make_token(impostor.id)}"}
    assert (await impostor.get(job["id"])).status_code == 404
    assert (await other_user.get(str(user.id))).status_code == 404
