"""Metrics 6 and 7: hostile uploads against other users' reads and generation's memory.

One client reads a finished job (``GET /api/v1/generations/{id}``) again and again,
first alone, then while hostile images arrive: every ``WAVE_SECONDS`` a wave of 8
uploads at once (the attacker's 9 MB JPEG of fill bytes and 1.6 KB lossless
6300x6300 WebP, and their cousins), each from a new user; a wave that takes longer
than the period is followed at once by the next. The uploads are sent by a process
of their own, like another client's: sent from the reader's event loop, their writes
delayed the reader's own GETs (the figure was then the bench client's, not ours),
and it runs at the lowest CPU priority, standing for a client on another machine.
Before the fix one such wave cost minutes of CPU; the figure shows what it costs the
other users now.
``hostile_upload_get_p99_ratio`` is the GET's p99 under the uploads over its p99
alone; ``hostile_upload_peak_rss_mb`` the peak of generation's summed RSS (the service
and its decode workers) during the uploads, sampled every 50 ms.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import multiprocessing.queues
import os
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx
from PIL import Image

from bench import profiling
from bench.loadgen import PROFILED, _cpu_spent, _cpu_times
from bench.memory import MIB, RssSampler
from bench.payloads import CONTENT_TYPE, submission_body, user_token
from bench.phases import API
from bench.stats import summarize
from bench.system import BenchSystem

UPLOADERS = 8
WAVE_SECONDS = 1.0


@dataclass(frozen=True)
class HostileResult:
    uploaders: int
    seconds: float
    get_samples_alone: int
    get_samples_under_uploads: int
    get_p99_alone_ms: float
    get_p99_under_uploads_ms: float
    get_p99_ratio: float
    uploads: int
    upload_statuses: dict[str, int]
    idle_mb: float
    peak_mb: float
    peak_by_process_mb: dict[str, float]
    # CPU seconds each part spent while the GETs ran under the uploads (whose cost is it).
    cpu_seconds_under_uploads: dict[str, float]


def hostile_images() -> list[bytes]:
    """The attacker's two files and two cousins (built the way tests/badinput does)."""
    jpeg, webp, png = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.new("RGB", (64, 48), (180, 120, 90)).save(jpeg, format="JPEG")
    Image.new("RGB", (6300, 6300), (200, 200, 200)).save(webp, format="WEBP", lossless=True)
    Image.new("RGB", (64, 48), (40, 90, 160)).save(png, format="PNG")
    small_webp = io.BytesIO()
    Image.new("RGB", (4900, 4900), (200, 200, 200)).save(small_webp, "WEBP", lossless=True)
    head = jpeg.getvalue()
    chunk = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    idat = png.getvalue().index(b"IDAT") - 4
    flood = png.getvalue()[:idat] + chunk * 100_000 + png.getvalue()[idat:]
    return [
        head[:2] + b"\xff" * 9_000_000 + head[2:],
        webp.getvalue(),
        small_webp.getvalue(),
        flood,
    ]


async def hostile_phase(
    system: BenchSystem,
    targets: list[dict[str, str]],
    seconds: float,
    profile_dir: Path | None = None,
) -> HostileResult:
    """GET p99 alone, then under waves of hostile uploads, ``seconds`` each; with
    ``profile_dir``, py-spy samples the edge and generation while the uploads arrive."""
    sampler = RssSampler({"generation": system.processes()["generation"]})
    idle, _ = sampler.current()
    async with httpx.AsyncClient(base_url=system.public_url, timeout=120.0) as client:
        await _get_latencies(client, targets, 1.0)  # warm-up
        alone = await _get_latencies(client, targets, seconds)
        with sampler, _Attacker(system.public_url, system.jwt_secret) as attacker:
            await asyncio.to_thread(attacker.wait_for_first_wave)
            cpu_before = _cpu_times(system.processes())
            profilers = _profile(system, profile_dir, seconds)
            under = await _get_latencies(client, targets, seconds)
            cpu = _cpu_spent(cpu_before, _cpu_times(system.processes()))
            await asyncio.to_thread(_summarize, profilers)
            statuses = await asyncio.to_thread(attacker.stop)
    # The uploads must have gone on for the whole measured interval (a wave may take
    # longer than its period under load, so half of the periods is the floor).
    waves = sum(statuses.values()) // UPLOADERS
    if waves < seconds / WAVE_SECONDS / 2:
        raise RuntimeError(f"only {waves} waves of hostile uploads in {seconds} s: {statuses}")
    p99_alone, p99_under = summarize(alone).p99, summarize(under).p99
    return HostileResult(
        uploaders=UPLOADERS,
        seconds=seconds,
        get_samples_alone=len(alone),
        get_samples_under_uploads=len(under),
        get_p99_alone_ms=round(p99_alone, 2),
        get_p99_under_uploads_ms=round(p99_under, 2),
        get_p99_ratio=round(p99_under / p99_alone, 3),
        uploads=sum(statuses.values()),
        upload_statuses=statuses,
        idle_mb=round(idle / MIB, 1),
        peak_mb=round(sampler.peak / MIB, 1),
        peak_by_process_mb={k: round(v / MIB, 1) for k, v in sampler.peak_by_name.items()},
        cpu_seconds_under_uploads=cpu,
    )


def _profile(
    system: BenchSystem, profile_dir: Path | None, seconds: float
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """py-spy on the edge and generation for the phase (sampling costs CPU: the
    profiled run's ratio is distorted, read it for where the time goes)."""
    if profile_dir is None:
        return []
    profile_dir.mkdir(parents=True, exist_ok=True)
    return [
        (profiling.record(pid, seconds, out), out)
        for name, pid in system.pids(*PROFILED).items()
        for out in [profile_dir / f"hostile-{name}.raw"]
    ]


def _summarize(profilers: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for recorder, out in profilers:
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()
        if out.exists():
            out.with_suffix(".txt").write_text(profiling.summarize(out) + "\n")


async def _get_latencies(
    client: httpx.AsyncClient, targets: list[dict[str, str]], seconds: float
) -> list[float]:
    """Milliseconds of sequential GETs of finished jobs, by their owners, for ``seconds``."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        target = targets[len(latencies) % len(targets)]
        headers = {"Authorization": f"Bearer {target['token']}"}
        began = time.perf_counter()
        response = await client.get(target["path"], headers=headers)
        latencies.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {target['path']}: {response.status_code}")
    return latencies


class _Attacker:
    """The uploads come from a process of their own, as another client's would: in the
    reader's process their 9 MB writes would stall the reader's own event loop and
    count as the service's latency."""

    def __init__(self, public_url: str, jwt_secret: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._started = context.Event()
        self._results: multiprocessing.queues.Queue[dict[str, int]] = context.Queue()
        self._process = context.Process(
            target=_attack,
            args=(public_url, jwt_secret, self._started, self._stop, self._results),
            daemon=True,
        )

    def __enter__(self) -> _Attacker:
        self._process.start()
        return self

    def wait_for_first_wave(self) -> None:
        if not self._started.wait(60):
            raise RuntimeError("the hostile uploader did not start")

    def stop(self) -> dict[str, int]:
        """Stop after the wave under way; its answers' statuses, counted."""
        self._stop.set()
        statuses = self._results.get(timeout=180)
        self._process.join(30)
        return statuses

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._process.is_alive():
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _attack(
    public_url: str,
    jwt_secret: str,
    started: EventType,
    stop: EventType,
    results: multiprocessing.queues.Queue[dict[str, int]],
) -> None:
    # The attacker's own CPU stands for another machine's: at the lowest priority it
    # takes only what the service's processes leave idle on these 2 cores.
    os.nice(19)
    statuses: dict[str, int] = {}
    try:
        asyncio.run(_waves(public_url, jwt_secret, started, stop, statuses))
    finally:
        results.put(statuses)


async def _waves(
    public_url: str,
    jwt_secret: str,
    started: EventType,
    stop: EventType,
    statuses: dict[str, int],
) -> None:
    """A wave of ``UPLOADERS`` hostile uploads at once every ``WAVE_SECONDS``, until ``stop``."""
    bodies = [submission_body(image) for image in hostile_images()]
    limits = httpx.Limits(max_connections=UPLOADERS)
    async with httpx.AsyncClient(base_url=public_url, timeout=120.0, limits=limits) as client:
        wave = 0
        while not stop.is_set():
            began = time.monotonic()
            uploads = [
                _upload(client, jwt_secret, bodies[(wave + i) % len(bodies)])
                for i in range(UPLOADERS)
            ]
            started.set()
            for status in await asyncio.gather(*uploads):
                statuses[status] = statuses.get(status, 0) + 1
            wave += 1
            remaining = WAVE_SECONDS - (time.monotonic() - began)
            if remaining > 0:
                await asyncio.to_thread(stop.wait, remaining)


async def _upload(client: httpx.AsyncClient, jwt_secret: str, body: bytes) -> str:
    """The answer's status code, or the name of the transport error (e.g. a reset): one
    failed upload must not end the attacker while the reader goes on measuring."""
    headers = {
        "Authorization": f"Bearer {user_token(jwt_secret)}",
        "Content-Type": CONTENT_TYPE,
    }
    try:
        response = await client.post(API, content=body, headers=headers)
    except httpx.HTTPError as error:
        return type(error).__name__
    return str(response.status_code)
