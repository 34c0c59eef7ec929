"""Metric 5: peak RSS of the edge and generation processes while 50 clients upload 10 MB."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import httpx
import psutil

from bench.payloads import CONTENT_TYPE, submission_body, user_token
from bench.phases import API, PARKED_MS
from bench.seed import end_parked_jobs
from bench.system import BenchSystem

SAMPLE_SECONDS = 0.05
MIB = 1024 * 1024
WATCHED = ("edge-api", "generation")
# The figure is reported only when at least this share of the uploads was accepted.
ACCEPTED_SHARE = 0.9


@dataclass(frozen=True)
class MemoryResult:
    clients: int
    upload_bytes: int
    idle_mb: float
    peak_mb: float
    peak_by_process_mb: dict[str, float]
    statuses: dict[str, int]
    seconds: float


class RssSampler:
    """Samples the summed RSS of the watched processes (and their children) every 50 ms."""

    def __init__(self, processes: dict[str, list[psutil.Process]]) -> None:
        self._processes = processes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.peak_by_name: dict[str, int] = {}

    def current(self) -> tuple[int, dict[str, int]]:
        by_name: dict[str, int] = {}
        for name, procs in self._processes.items():
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            by_name[name] = total
        return sum(by_name.values()), by_name

    def _run(self) -> None:
        while not self._stop.is_set():
            total, by_name = self.current()
            if total > self.peak:
                self.peak, self.peak_by_name = total, by_name
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def upload_memory_phase(system: BenchSystem, image: bytes, clients: int) -> MemoryResult:
    """``clients`` distinct users each POST one ``image`` at the same moment."""
    processes = {name: system.processes()[name] for name in WATCHED}
    body = submission_body(image)
    system.control.set_faults(start_delay_ms=PARKED_MS)
    statuses: dict[str, int] = {}
    try:
        sampler = RssSampler(processes)
        idle, _ = sampler.current()
        limits = httpx.Limits(max_connections=clients + 10)
        async with httpx.AsyncClient(
            base_url=system.public_url, timeout=120.0, limits=limits
        ) as client:
            began = time.monotonic()
            with sampler:
                replies = await asyncio.gather(
                    *[_upload(client, system.jwt_secret, body) for _ in range(clients)]
                )
                await asyncio.sleep(0.5)  # memory is freed (or not) after the answers
            seconds = time.monotonic() - began
        for status in replies:
            statuses[status] = statuses.get(status, 0) + 1
        accepted = statuses.get("202", 0)
        if accepted < ACCEPTED_SHARE * clients:
            # Refused uploads cost little memory: the peak would flatter the service.
            raise RuntimeError(f"only {accepted} of {clients} uploads were accepted: {statuses}")
    finally:
        system.control.reset()
        await end_parked_jobs(system.generation_dsn())
    return MemoryResult(
        clients=clients,
        upload_bytes=len(image),
        idle_mb=round(idle / MIB, 1),
        peak_mb=round(sampler.peak / MIB, 1),
        peak_by_process_mb={k: round(v / MIB, 1) for k, v in sampler.peak_by_name.items()},
        statuses=statuses,
        seconds=round(seconds, 2),
    )


async def _upload(client: httpx.AsyncClient, secret: str, body: bytes) -> str:
    """The answer's status code, or the name of the transport error (e.g. a reset)."""
    headers = {"Authorization": f"Bearer {user_token(secret)}", "Content-Type": CONTENT_TYPE}
    try:
        response = await client.post(API, content=body, headers=headers)
    except httpx.HTTPError as error:
        return type(error).__name__
    return str(response.status_code)
