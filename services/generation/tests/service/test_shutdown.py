"""Generation stopped while an edge follows its change feed (WatchJobs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import grpc
import pytest

from generation.domain.changes import FeedLost
from generation.persistence.feed import ChangeFeed
from generation.settings import GenerationSettings
from generation.wiring import build_app
from interior.generation.v1 import generation_pb2 as pb
from interior.generation.v1 import generation_pb2_grpc
from kit.grpc_client import create_channel
from testkit.plugin import S3Endpoint

GRACE = 4.0


async def test_stopping_ends_feed_streams_at_once_so_followers_resume_elsewhere(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> None:
    """A WatchJobs follower resumes from its last version on any instance, so a stopping
    generation ends the stream as its shutdown begins (UNAVAILABLE, as a lost feed
    does) and the edge moves to another instance at once. It was an in-flight call like
    any other: the stop waited the whole grace for it, then cancelled it."""
    app = await build_app(
        GenerationSettings(
            GENERATION_DATABASE_URL=database_factory("gen_feed_stop"),
            SWEEP_ENABLED=False,
            **cast(dict[str, Any], s3_server.env()),
        ),
        port=0,
    )
    port = await app.server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        call = stub.WatchJobs(pb.WatchJobsRequest(heartbeats=True))
        first = await asyncio.wait_for(anext(aiter(call)), 10)
        assert first.WhichOneof("item") == "caught_up"

        async def drain() -> grpc.StatusCode | None:
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError as error:
                return error.code()
            return None

        reader = asyncio.create_task(drain())
        began = time.monotonic()
        stopping = asyncio.create_task(app.server.stop(GRACE))
        code = await asyncio.wait_for(reader, 30)
        stream_end = time.monotonic() - began
        await asyncio.wait_for(stopping, 30)
        stopped = time.monotonic() - began
    finally:
        await channel.close()
    assert stream_end < GRACE / 2, f"the feed stream was held {stream_end:.1f} s"
    assert code == grpc.StatusCode.UNAVAILABLE
    assert stopped < GRACE / 2 + 1, f"the stop took {stopped:.1f} s"


async def test_a_follower_arriving_after_the_feed_closed_is_ended_at_once() -> None:
    """Between the feed's close (as the stop begins) and the server's refusing new calls,
    a WatchJobs must not open the listening connection again and hold the grace."""
    feed = ChangeFeed("postgresql+asyncpg://nobody@127.0.0.1:9/none", cast(Any, None))
    await feed.close()
    with pytest.raises(FeedLost):
        await anext(aiter(feed.follow(None, 0)))
