"""Server-Sent Events figures: a terminal webhook reaching an SSE client, idle streams.

``sse_event_p50_ratio``: a job runs to the end at the emulator with its deliveries
dropped; an SSE client follows the job through Envoy; the bench posts the signed
terminal webhook to Envoy itself and times until the client receives the terminal
message. Divided by one download of the output plus one S3 PUT of its bytes.

``sse_watchers``: how many idle streams one edge process holds open (straight to its
port: the edge's own cost), its RSS growth per stream, and the CPU seconds it spends
over an idle interval once every stream got its first message. Held open is counted,
not assumed: after the idle interval every job is ended and only the streams that
then deliver their terminal message count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import psutil

from bench.baselines import Baselines
from bench.payloads import CONTENT_TYPE, submission_body, user_token
from bench.phases import API, PARKED_MS
from bench.seed import end_parked_jobs
from bench.stats import summarize
from bench.system import BenchSystem
from replicate_emulator.signing import new_message_id, sign

TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class SseEventResult:
    """Webhook-to-SSE-message samples (ms) and their download + PUT baselines."""

    total_ms: list[float] = field(default_factory=list)
    baseline_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        total, baseline = summarize(self.total_ms), summarize(self.baseline_ms)
        return {
            "samples": len(self.total_ms),
            "webhook_to_sse_p50_ms": round(total.p50, 2),
            "download_put_p50_ms": round(baseline.p50, 2),
            "ratio": round(total.p50 / baseline.p50, 3),
        }


@dataclass
class WatcherResult:
    """Idle streams held by one edge process."""

    streams: int
    jobs: int
    rss_before_mb: float
    rss_after_mb: float
    idle_seconds: float
    idle_cpu_seconds: float
    # Streams that, after the idle interval, still delivered their job's terminal message.
    delivered: int = 0
    edge_tcp_connections: int = 0
    edge_pids: list[int] = field(default_factory=list)

    @property
    def kib_per_stream(self) -> float:
        return (self.rss_after_mb - self.rss_before_mb) * 1024 / self.streams

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "kib_per_stream": round(self.kib_per_stream, 2),
            "idle_cpu_percent": round(100 * self.idle_cpu_seconds / self.idle_seconds, 2),
        }


async def _messages(response: httpx.Response) -> Any:
    """Each SSE message's parsed data."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


async def sse_event_phase(
    system: BenchSystem, baselines: Baselines, image: bytes, samples: int
) -> SseEventResult:
    """``samples`` (after 2 warm-ups) terminal webhooks timed to the SSE client."""
    result = SseEventResult()
    system.control.set_faults(drop_webhooks="all")
    database = await asyncpg.connect(system.generation_dsn())
    try:
        # The stream gets a client of its own: closed mid-body, its connection is not
        # reused, and the webhook's POST would otherwise open a new one every time.
        async with (
            httpx.AsyncClient(base_url=system.public_url, timeout=60.0) as client,
            httpx.AsyncClient(base_url=system.public_url, timeout=60.0) as streams,
        ):
            for index in range(samples + 2):
                total, baseline = await _one_event(
                    system, (client, streams), database, image, baselines, index
                )
                if index >= 2:
                    result.total_ms.append(total)
                    result.baseline_ms.append(baseline)
    finally:
        await database.close()
        system.control.reset()
    return result


async def _one_event(
    system: BenchSystem,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    database: asyncpg.Connection,
    image: bytes,
    baselines: Baselines,
    index: int,
) -> tuple[float, float]:
    client, streams = clients
    token = user_token(system.jwt_secret)
    auth = {"Authorization": f"Bearer {token}"}
    response = await client.post(
        API, content=submission_body(image), headers={**auth, "Content-Type": CONTENT_TYPE}
    )
    if response.status_code != 202:
        raise RuntimeError(f"submission refused: {response.status_code} {response.text}")
    job_id = response.json()["id"]
    prediction_id = await database.fetchval(
        "SELECT prediction_id FROM generation_jobs WHERE id = $1", uuid.UUID(job_id)
    )
    prediction = await asyncio.to_thread(
        system.control.wait_for_status, prediction_id, {"succeeded"}, 30.0
    )
    body = json.dumps(prediction).encode()
    headers = sign(system.webhook_secret, new_message_id(), body).as_dict()
    baseline = 0.0
    if index % 2 == 0:  # alternate which goes first, so neither always meets a cold cache
        baseline, _ = await baselines.download_and_put(prediction["output"])
    async with streams.stream("GET", f"{API}/{job_id}/events", headers=auth) as stream:
        messages = _messages(stream)
        first = await anext(messages)
        if first["status"] in TERMINAL:
            raise RuntimeError(f"job {job_id} settled before the webhook: {first['status']}")
        # The terminal message is timed when it arrives, which may be before the webhook's
        # own answer (generation commits, and the feed carries the change, before it
        # answers the gateway): read the stream while the webhook is posted.
        arrival = asyncio.create_task(_terminal_arrival(messages))
        began = time.perf_counter()
        try:
            delivered = await client.post(system.webhook_url, content=body, headers=headers)
            if delivered.status_code != 200:
                raise RuntimeError(f"webhook refused: {delivered.status_code} {delivered.text}")
            total = (await arrival - began) * 1000.0
        finally:
            arrival.cancel()
    if index % 2 == 1:
        baseline, _ = await baselines.download_and_put(prediction["output"])
    return total, baseline


async def _terminal_arrival(messages: AsyncIterator[Any]) -> float:
    """When (``perf_counter``) the stream's terminal message arrived."""
    async for message in messages:
        if message["status"] in TERMINAL:
            return time.perf_counter()
    raise RuntimeError("the stream ended before its terminal message")


# How long the streams get, all at once, to deliver their terminal message.
DELIVERY_SECONDS = 30.0


async def _delivers_terminal(messages: AsyncIterator[Any], seconds: float) -> bool:
    """Whether the stream delivers its job's terminal message within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            async for message in messages:
                if message["status"] in TERMINAL:
                    return True
    except (TimeoutError, httpx.HTTPError):
        return False
    return False


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def _rss_mb(processes: list[psutil.Process]) -> float:
    rss: float = sum(process.memory_info().rss for process in processes) / 2**20
    return rss


async def watchers_phase(
    system: BenchSystem, streams: int, jobs: int, idle_seconds: float
) -> WatcherResult:
    """Open ``streams`` idle SSE streams on ``jobs`` parked jobs, straight to the edge."""
    edge = system.processes()["edge-api"]  # the unit's process and any children
    system.control.set_faults(start_delay_ms=PARKED_MS)
    edge_url = f"http://127.0.0.1:{system.config.ports.edge_http}"
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, read=None)
    try:
        async with httpx.AsyncClient(base_url=edge_url, limits=limits, timeout=timeout) as client:
            targets = await _parked_jobs(system, client, jobs)
            rss_before = _rss_mb(edge)
            # Each stream's reader is kept: a dropped one would close its connection.
            readers: list[Any] = []
            async with contextlib.AsyncExitStack() as held:
                for index in range(streams):
                    job_id, token = targets[index % jobs]
                    response = await held.enter_async_context(
                        client.stream(
                            "GET",
                            f"{API}/{job_id}/events",
                            headers={"Authorization": f"Bearer {token}"},
                        )
                    )
                    if response.status_code != 200:
                        raise RuntimeError(f"stream {index} refused: {response.status_code}")
                    readers.append(_messages(response))
                    await anext(readers[-1])
                rss_after = _rss_mb(edge)
                # Proof the edge itself holds them: its established TCP connections.
                held_open = sum(len(p.net_connections(kind="tcp")) for p in edge if p.is_running())
                cpu_before = _cpu_seconds(edge)
                await asyncio.sleep(idle_seconds)  # the measured idle interval itself
                idle_cpu = _cpu_seconds(edge) - cpu_before
                # Still open? End every job: each live stream delivers its terminal message.
                await end_parked_jobs(system.generation_dsn())
                arrived = await asyncio.gather(
                    *(_delivers_terminal(reader, DELIVERY_SECONDS) for reader in readers)
                )
                delivered = sum(arrived)
    finally:
        system.control.reset()
        await end_parked_jobs(system.generation_dsn())
    return WatcherResult(
        streams=streams,
        jobs=jobs,
        rss_before_mb=round(rss_before, 1),
        rss_after_mb=round(rss_after, 1),
        idle_seconds=idle_seconds,
        idle_cpu_seconds=round(idle_cpu, 3),
        delivered=delivered,
        edge_tcp_connections=held_open,
        edge_pids=[p.pid for p in edge],
    )


async def _parked_jobs(
    system: BenchSystem, client: httpx.AsyncClient, count: int
) -> list[tuple[str, str]]:
    """``count`` running jobs (the emulator never starts them), one per new user."""
    jobs = []
    for _ in range(count):
        token = user_token(system.jwt_secret)
        response = await client.post(
            API,
            json={"mode": "imagine", "prompt": "A quiet bench room"},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 202:
            raise RuntimeError(f"submission refused: {response.status_code} {response.text}")
        jobs.append((response.json()["id"], token))
    return jobs
