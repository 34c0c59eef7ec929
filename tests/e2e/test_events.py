"""GET /api/v1/generations/{id}/events: jobs followed live over Server-Sent Events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.e2e.harness import Stack, User, jpeg_bytes, make_token
from tests.e2e.sse_client import TERMINAL, WAIT, Stream, follow, second_edge, until


def _events_url(stack: Stack, job_id: str) -> str:
    return f"{stack.api}/generations/{job_id}/events"


async def test_a_job_is_followed_from_submit_to_succeeded(stack: Stack, user: User) -> None:
    submitted = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    stream = Stream()

    await asyncio.wait_for(
        follow(user.client, _events_url(stack, job_id), user.headers, stream), WAIT
    )

    assert stream.ended
    assert stream.statuses[-1] == "succeeded"
    assert set(stream.statuses) <= {"starting", "processing", "succeeded"}
    assert stream.ids == sorted(set(stream.ids))  # one message per change, in order
    assert stream.messages[-1] == (await user.get(job_id)).json()  # exactly GET's JSON
    assert stream.messages[-1]["variants"]


async def test_a_cancel_and_a_failure_end_their_streams(stack: Stack, user: User) -> None:
    await stack.control("set_faults", hold=True)
    held = (await user.submit("imagine", prompt="A quiet study")).json()
    canceled = Stream()
    watcher = asyncio.create_task(
        follow(user.client, _events_url(stack, held["id"]), user.headers, canceled)
    )
    await until(lambda: bool(canceled.messages))
    assert (await user.cancel(held["id"])).status_code == 200
    await asyncio.wait_for(watcher, WAIT)
    assert canceled.statuses[-1] == "canceled"
    assert canceled.messages[-1]["error"]["code"] == "CANCELED"

    await stack.control("set_faults", hold=False, fail_next=1)
    doomed = (await user.submit("imagine", prompt="A sunny porch")).json()
    failed = Stream()
    await asyncio.wait_for(
        follow(user.client, _events_url(stack, doomed["id"]), user.headers, failed), WAIT
    )
    assert failed.statuses[-1] == "failed"


async def test_last_event_id_resumes_without_repeating(stack: Stack, user: User) -> None:
    job_id = (await user.submit("imagine", prompt="A bright attic")).json()["id"]
    first = Stream()
    await asyncio.wait_for(
        follow(user.client, _events_url(stack, job_id), user.headers, first), WAIT
    )
    last = str(first.ids[-1])

    current = await user.client.get(
        _events_url(stack, job_id), headers={**user.headers, "Last-Event-ID": last}
    )
    older = Stream()
    await follow(
        user.client, _events_url(stack, job_id), {**user.headers, "Last-Event-ID": "1"}, older
    )
    foreign = Stream()  # not a version of this job: the current state is sent
    await follow(
        user.client,
        _events_url(stack, job_id),
        {**user.headers, "Last-Event-ID": str(first.ids[-1] + 10_000)},
        foreign,
    )

    # Finished and already seen: nothing to stream, and 204 stops an EventSource's
    # reconnects (an empty stream had it come back every few seconds, for ever).
    assert current.status_code == 204
    assert current.content == b""
    assert current.headers["cache-control"] == "no-store"
    assert older.ids == [first.ids[-1]]
    assert foreign.ids == [first.ids[-1]]


@pytest.mark.parametrize(
    "unusable", [b"\xb2", b"\xb9", b"-1", b"1e3", b"0x10", b"1" * 30, b"\xef\xbc\x91"]
)
async def test_an_unusable_last_event_id_counts_as_none(
    stack: Stack, user: User, unusable: bytes
) -> None:
    """Superscript digits (Latin-1 bytes), full-width ones, signs and overlong numbers:
    the stream starts with the current state, as with no Last-Event-ID at all."""
    job_id = (await user.submit("imagine", prompt="A quiet study")).json()["id"]
    await user.wait_for(job_id, TERMINAL)
    stream = Stream()
    headers: dict[str, Any] = {**user.headers, "Last-Event-ID": unusable}
    await asyncio.wait_for(follow(user.client, _events_url(stack, job_id), headers, stream), WAIT)
    assert stream.ended
    assert len(stream.messages) == 1
    assert stream.statuses[-1] in TERMINAL


async def test_errors_come_before_the_stream_as_json(
    stack: Stack, user: User, other_user: User
) -> None:
    job_id = (await user.submit("imagine", prompt="A calm nursery")).json()["id"]
    url = _events_url(stack, job_id)

    anonymous = await user.client.get(url)
    forged = await user.client.get(url, params={"access_token": "not-a-token"})
    someone_else = await other_user.client.get(url, headers=other_user.headers)
    unknown = await user.client.get(
        _events_url(stack, "00000000-0000-4000-8000-000000000000"), headers=user.headers
    )

    assert [r.status_code for r in (anonymous, forged, someone_else, unknown)] == [
        401,
        401,
        404,
        404,
    ]
    for answer in (anonymous, forged, someone_else, unknown):
        assert answer.json()["error"]["code"] in {"UNAUTHORIZED", "NOT_FOUND"}
    await user.wait_for(job_id, TERMINAL)


async def test_an_access_token_in_the_query_works_for_event_source(
    stack: Stack, user: User
) -> None:
    job_id = (await user.submit("imagine", prompt="A loft kitchen")).json()["id"]
    stream = Stream()

    await asyncio.wait_for(
        follow(
            user.client,
            _events_url(stack, job_id),
            {},
            stream,
            params={"access_token": make_token(user.id)},
        ),
        WAIT,
    )

    assert stream.statuses[-1] in TERMINAL


async def test_a_slow_reader_does_not_hold_up_others(
    stack: Stack, user: User, other_user: User
) -> None:
    await stack.control("set_faults", hold=True)
    held = (await user.submit("imagine", prompt="A reading nook")).json()
    async with user.client.stream("GET", _events_url(stack, held["id"]), headers=user.headers):
        # This reader never reads. Another user's job goes on to the end meanwhile.
        await stack.control("set_faults", hold=False)
        other = (await other_user.submit("imagine", prompt="A garden room")).json()
        stream = Stream()
        await asyncio.wait_for(
            follow(other_user.client, _events_url(stack, other["id"]), other_user.headers, stream),
            WAIT,
        )
        assert stream.statuses[-1] == "succeeded"
    await user.wait_for(held["id"], TERMINAL)


async def test_a_lost_webhook_still_shows_while_watched(stack: Stack, user: User) -> None:
    """Nothing but the open stream asks: its timed read finds what no webhook told."""
    await stack.control("set_faults", hold=True, drop_webhooks="all")
    held = (await user.submit("imagine", prompt="A tiled bathroom")).json()
    stream = Stream()

    async with second_edge(stack, SSE_REFRESH_SECONDS=0.2) as (api, _):
        url = f"{api}/generations/{held['id']}/events"
        watcher = asyncio.create_task(follow(user.client, url, user.headers, stream))
        await until(lambda: stream.statuses != [])
        assert stream.statuses[-1] in {"starting", "processing"}
        await stack.control("advance", held["predictionId"], "succeeded")  # webhook dropped
        stack.clock.advance(timedelta(minutes=1))  # generation now sees the job as stale
        await asyncio.wait_for(watcher, WAIT)

    assert stream.statuses[-1] == "succeeded"
    assert stream.ended


async def test_idle_streams_get_heartbeats(stack: Stack, user: User) -> None:
    await stack.control("set_faults", hold=True)
    held = (await user.submit("imagine", prompt="A mudroom")).json()
    stream = Stream()

    async with second_edge(stack, SSE_HEARTBEAT_SECONDS=0.1) as (api, _):
        watcher = asyncio.create_task(
            follow(user.client, f"{api}/generations/{held['id']}/events", user.headers, stream)
        )
        await until(lambda: stream.statuses[-1:] == ["processing"] and stream.comments >= 1)
        quiet_since, seen = stream.comments, len(stream.messages)
        await until(lambda: stream.comments >= quiet_since + 3)
        assert len(stream.messages) == seen  # a quiet job: comments only, no repeats
        assert (await user.cancel(held["id"])).status_code == 200
        await asyncio.wait_for(watcher, WAIT)
    assert stream.statuses[-1] == "canceled"


async def test_a_stream_ends_when_its_token_expires(stack: Stack, user: User) -> None:
    """Nothing is sent on a token past its expiry: the stream ends then, and the
    reconnect EventSource makes with the same token is refused."""
    await stack.control("set_faults", hold=True)
    held = (await user.submit("imagine", prompt="A wine cellar")).json()
    token = make_token(user.id, exp=int(time.time()) + 2)
    stream = Stream()

    # A quiet stream ends at its first heartbeat past the expiry.
    async with second_edge(stack, AUTH_LEEWAY_SECONDS=0, SSE_HEARTBEAT_SECONDS=0.2) as (api, _):
        url = f"{api}/generations/{held['id']}/events"
        began = time.monotonic()
        await asyncio.wait_for(
            follow(user.client, url, {}, stream, params={"access_token": token}), WAIT
        )
        lasted = time.monotonic() - began
        again = await user.client.get(url, params={"access_token": token})

    assert stream.ended
    assert 0.5 < lasted < 10, lasted
    # The job runs on: the token's expiry ended the stream, not a terminal status.
    assert stream.statuses
    assert not TERMINAL & set(stream.statuses)
    assert stream.comments >= 1
    assert again.status_code == 401
    assert (await user.cancel(held["id"])).status_code == 200


@pytest.fixture(autouse=True)
async def _faults_off(stack: Stack) -> AsyncIterator[None]:
    yield
    await stack.control("set_faults", hold=False, drop_webhooks=0)


def _get_generation_calls() -> float:
    """GetGeneration calls the generation service answered (its RPC metric)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("grpc_method") == "GetGeneration"
    )


async def test_idle_watchers_of_one_job_share_one_timed_read(stack: Stack, user: User) -> None:
    await stack.control("set_faults", hold=True)
    held = (await user.submit("imagine", prompt="A sunroom")).json()
    streams = [Stream() for _ in range(20)]
    refresh, quiet = 0.1, 1.0

    async with second_edge(stack, SSE_REFRESH_SECONDS=refresh) as (api, _):
        url = f"{api}/generations/{held['id']}/events"
        watchers = [
            asyncio.create_task(follow(user.client, url, user.headers, stream))
            for stream in streams
        ]
        await until(lambda: all(stream.statuses for stream in streams))
        before = _get_generation_calls()
        await asyncio.sleep(quiet)  # the measured quiet interval itself
        reads = _get_generation_calls() - before
        assert (await user.cancel(held["id"])).status_code == 200
        await asyncio.wait_for(asyncio.gather(*watchers), WAIT)
    # One reader per interval (about 10), not one per stream (about 200).
    assert 1 <= reads <= 2 * quiet / refresh
    assert all(stream.statuses[-1] == "canceled" for stream in streams)


async def _watch_until_canceled(user: User, url: str, job_id: str, count: int) -> float:
    """``count`` streams on a held job, which is then canceled: GetGeneration calls meanwhile."""
    streams = [Stream() for _ in range(count)]
    watchers = [
        asyncio.create_task(follow(user.client, url, user.headers, stream)) for stream in streams
    ]
    await until(lambda: all(stream.statuses[-1:] == ["processing"] for stream in streams))
    before = _get_generation_calls()
    assert (await user.cancel(job_id)).status_code == 200
    await asyncio.wait_for(asyncio.gather(*watchers), WAIT)
    reads = _get_generation_calls() - before
    final = (await user.get(job_id)).json()
    assert all(stream.messages[-1] == final for stream in streams)  # exactly GET's JSON
    return reads


async def test_a_change_reaches_every_watcher_without_a_read_each(stack: Stack, user: User) -> None:
    await stack.control("set_faults", hold=True)
    # A first job, seen to its end, proves the edge's feed is connected and caught up (its
    # catch-up makes every watcher read once, which would blur the count below).
    warm = (await user.submit("imagine", prompt="A wine cellar")).json()["id"]
    await _watch_until_canceled(user, _events_url(stack, warm), warm, 1)
    held = (await user.submit("imagine", prompt="A wine cellar")).json()["id"]

    reads = await _watch_until_canceled(user, _events_url(stack, held), held, 10)

    # The job came along with its change (WatchJobs with_jobs): not one read per watcher
    # (10); at most the leader's timed read if one fell due meanwhile.
    assert reads <= 1
