"""The exact message format against GET's bytes, and resuming with Last-Event-ID after
a deletion and while a job runs (test_events resumes finished jobs only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import Stack, User
from tests.e2e.sse_client import TERMINAL, WAIT, Stream, follow, until


def _events(stack: Stack, job_id: str) -> str:
    return f"{stack.api}/generations/{job_id}/events"


@pytest.fixture(autouse=True)
async def _faults_off(stack: Stack) -> AsyncIterator[None]:
    yield
    await stack.control("set_faults", hold=False)


async def test_a_message_is_id_event_data_and_its_data_is_gets_body_byte_for_byte(
    stack: Stack, user: User
) -> None:
    job_id = (await user.submit("imagine", prompt="A bright attic")).json()["id"]
    await user.wait_for(job_id, TERMINAL)
    stream = Stream()
    await asyncio.wait_for(follow(user.client, _events(stack, job_id), user.headers, stream), WAIT)
    got = await user.get(job_id)

    assert "x-request-id" in stream.headers
    [lines] = stream.raw
    assert [line.partition(": ")[0] for line in lines] == ["id", "event", "data"]
    assert lines[1] == "event: job"
    assert lines[2].removeprefix("data: ").encode() == got.content


async def test_a_deletion_after_the_end_reaches_a_client_that_resumes(
    stack: Stack, user: User
) -> None:
    job_id = (await user.submit("imagine", prompt="A tiled bathroom")).json()["id"]
    first = Stream()
    await asyncio.wait_for(follow(user.client, _events(stack, job_id), user.headers, first), WAIT)
    assert first.statuses[-1] == "succeeded"
    assert first.messages[-1]["variants"]
    assert (await user.delete(job_id)).status_code == 200

    resumed = Stream()
    headers = {**user.headers, "Last-Event-ID": str(first.ids[-1])}
    await asyncio.wait_for(follow(user.client, _events(stack, job_id), headers, resumed), WAIT)
    # Naming the deletion's version: nothing more (204, so an EventSource stops).
    headers = {**user.headers, "Last-Event-ID": str(resumed.ids[-1])}
    again = await user.client.get(_events(stack, job_id), headers=headers)

    assert len(resumed.messages) == 1
    assert resumed.ids[0] > first.ids[-1]
    assert resumed.messages[0]["variants"] == []
    assert resumed.messages[0]["inputs"] == []
    assert resumed.messages[0] == (await user.get(job_id)).json()
    assert again.status_code == 204


async def test_resuming_a_running_job_at_its_version_repeats_nothing_then_follows_it(
    stack: Stack, user: User
) -> None:
    await stack.control("set_faults", hold=True)
    job_id = (await user.submit("imagine", prompt="A sunroom")).json()["id"]
    probe = Stream()
    probing = asyncio.create_task(follow(user.client, _events(stack, job_id), user.headers, probe))
    await until(lambda: probe.statuses[-1:] == ["processing"])
    version = probe.ids[-1]
    resumed = Stream()
    headers = {**user.headers, "Last-Event-ID": str(version)}
    watcher = asyncio.create_task(follow(user.client, _events(stack, job_id), headers, resumed))
    await asyncio.sleep(0.5)
    assert resumed.messages == []
    assert (await user.cancel(job_id)).status_code == 200
    await asyncio.wait_for(asyncio.gather(watcher, probing), WAIT)

    assert resumed.statuses == ["canceled"]
    assert resumed.ids[0] > version
