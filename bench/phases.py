"""The measured phases: submissions, status reads, webhooks (metrics 1 to 3)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.baselines import Baselines, SubmitParts
from bench.loadgen import LoadResult, merge, run_locust
from bench.payloads import CONTENT_TYPE, submission_body, user_token
from bench.seed import end_parked_jobs
from bench.stats import Summary, summarize
from bench.system import BenchSystem
from replicate_emulator.signing import new_message_id, sign

# Predictions are accepted at once but parked (never started) while submissions are
# measured: the model's work is not ours, and on 2 shared cores the emulator painting
# every output would be measured as our cost.
PARKED_MS = 3_600_000
API = "/api/v1/generations"


@dataclass(frozen=True)
class Durations:
    """How long each load run lasts (seconds) and how many samples the serial parts take."""

    submit_latency: float
    submit_throughput: float
    status: float
    baseline_rounds: int
    webhook_samples: int
    submit_users: int = 24
    status_users: int = 16


@dataclass
class RoundResult:
    """Metrics 1 to 3 at one table size."""

    rows: int
    parts: SubmitParts
    submit_latency: LoadResult
    submit_throughput: LoadResult
    health: LoadResult
    status: LoadResult
    hop_floor: LoadResult
    webhook: Summary
    webhook_baseline: Summary
    webhook_post: Summary
    output_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def submit_ratio(self) -> float:
        return self.submit_latency.summary.p50 / self.parts.total_p50

    @property
    def status_ratio(self) -> float:
        return self.status.rps / self.health.rps

    @property
    def webhook_ratio(self) -> float:
        return self.webhook.p50 / self.webhook_baseline.p50


async def submit_phase(
    system: BenchSystem,
    baselines: Baselines,
    image: bytes,
    durations: Durations,
    profile_dir: Path | None = None,
) -> tuple[SubmitParts, LoadResult, LoadResult]:
    """Baseline parts, then POST latency (1 user) and throughput (many users)."""
    system.control.set_faults(start_delay_ms=PARKED_MS)
    try:
        parts = await baselines.submit_parts(image, durations.baseline_rounds)
        with tempfile.TemporaryDirectory(prefix="bench-body-") as scratch:
            body_path = Path(scratch) / "body.bin"
            body_path.write_bytes(submission_body(image))
            env = {"BENCH_BODY_FILE": str(body_path), "BENCH_CONTENT_TYPE": CONTENT_TYPE}
            latency = await asyncio.to_thread(
                run_locust, system, "SubmitUser", users=1,
                seconds=durations.submit_latency, env=env,
            )  # fmt: skip
            throughput = await asyncio.to_thread(
                run_locust, system, "SubmitUser", users=durations.submit_users,
                seconds=durations.submit_throughput, env=env, profile_dir=profile_dir,
            )  # fmt: skip
    finally:
        system.control.reset()
        await end_parked_jobs(system.generation_dsn())
    return parts, latency, throughput


async def finished_jobs(system: BenchSystem, image: bytes, count: int) -> list[dict[str, str]]:
    """``count`` jobs submitted and finished through the whole system, as status targets."""
    async with httpx.AsyncClient(base_url=system.public_url, timeout=60.0) as client:
        targets = []
        for _ in range(count):
            token = user_token(system.jwt_secret)
            response = await client.post(
                API,
                content=submission_body(image),
                headers={"Authorization": f"Bearer {token}", "Content-Type": CONTENT_TYPE},
            )
            if response.status_code != 202:
                raise RuntimeError(f"submission refused: {response.status_code} {response.text}")
            targets.append({"path": f"{API}/{response.json()['id']}", "token": token})
        for target in targets:
            await _wait_for_variants(client, target["path"], target["token"], limit=60.0)
    return targets


async def _wait_for_variants(
    client: httpx.AsyncClient, path: str, token: str, limit: float
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        body: dict[str, Any] = response.json()
        if response.status_code == 200 and body.get("variants"):
            return body
        if body.get("status") in {"failed", "canceled"} or time.monotonic() > deadline:
            raise RuntimeError(f"job {path} did not finish: {body}")
        await asyncio.sleep(0.005)


async def status_phase(
    system: BenchSystem,
    targets: list[dict[str, str]],
    durations: Durations,
    profile_dir: Path | None = None,
) -> tuple[LoadResult, LoadResult, LoadResult]:
    """Requests/s of the bare endpoint, of GET on finished jobs, and of /readyz (the
    gRPC hop alone, for the explanation); same users, same time."""
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as scratch:
        path = Path(scratch) / "targets.json"
        path.write_text(json.dumps(targets))
        env = {"BENCH_STATUS_TARGETS": str(path)}
        users, seconds = durations.status_users, durations.status

        async def load(scenario: str, profile: Path | None = None) -> LoadResult:
            return await asyncio.to_thread(
                run_locust, system, scenario, users=users, seconds=seconds, env=env,
                profile_dir=profile,
            )  # fmt: skip

        # A-B-B-A: a drift of the shared machine's speed during the phase weighs on
        # both figures alike, so the ratio compares like with like.
        health_first = await load("HealthUser")
        status = merge(await load("StatusUser", profile_dir), await load("StatusUser"))
        health = merge(health_first, await load("HealthUser"))
        hop_floor = await load("ReadyUser")
    return health, status, hop_floor


@dataclass
class WebhookSamples:
    total: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    output_bytes: int = 0


async def webhook_phase(
    system: BenchSystem, baselines: Baselines, image: bytes, samples: int
) -> WebhookSamples:
    """Signed terminal webhooks posted through Envoy; time until GET shows the variants.

    The emulator runs each prediction to the end but its own deliveries are dropped,
    so the one that counts is ours and its arrival time is known exactly.
    """
    result = WebhookSamples()
    system.control.set_faults(drop_webhooks="all")
    database = await asyncpg.connect(system.generation_dsn())
    try:
        async with httpx.AsyncClient(base_url=system.public_url, timeout=60.0) as client:
            for index in range(samples + 2):
                one = await _one_webhook(system, client, database, image, baselines, index)
                if index >= 2:  # warm-up
                    result.total.append(one[0])
                    result.post.append(one[1])
                    result.baseline.append(one[2])
                    result.output_bytes = one[3]
    finally:
        await database.close()
        system.control.reset()
    return result


async def _one_webhook(
    system: BenchSystem,
    client: httpx.AsyncClient,
    database: asyncpg.Connection,
    image: bytes,
    baselines: Baselines,
    index: int,
) -> tuple[float, float, float, int]:
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
    output = prediction["output"]
    body = json.dumps(prediction).encode()
    headers = sign(system.webhook_secret, new_message_id(), body).as_dict()
    # Alternate which goes first, so neither always meets a cold cache.
    baseline = 0.0
    if index % 2 == 0:
        baseline, size = await baselines.download_and_put(output)
    began = time.perf_counter()
    delivered = await client.post(system.webhook_url, content=body, headers=headers)
    posted = time.perf_counter()
    if delivered.status_code != 200:
        raise RuntimeError(f"webhook refused: {delivered.status_code} {delivered.text}")
    await _wait_for_variants(client, f"{API}/{job_id}", token, limit=30.0)
    total = (time.perf_counter() - began) * 1000.0
    if index % 2 == 1:
        baseline, size = await baselines.download_and_put(output)
    return total, (posted - began) * 1000.0, baseline, size


def summarize_webhooks(samples: WebhookSamples) -> tuple[Summary, Summary, Summary]:
    """(arrival to visible, webhook POST alone, download + PUT baseline)."""
    return summarize(samples.total), summarize(samples.post), summarize(samples.baseline)
