"""Assertions every bad-input case shares: a normalized 4xx, and nothing left behind;
and what one upload costs the service and its decode workers (counted, not timed)."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from testkit.stack import Stack
from tests.e2e.harness import User, job_count, objects_under


def assert_error(
    response: httpx.Response, statuses: int | set[int], code: str | None = None
) -> dict[str, Any]:
    """A 4xx in ``statuses`` with ``{"error": {"code", "message"}}`` and a request id."""
    allowed = {statuses} if isinstance(statuses, int) else statuses
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    assert 400 <= response.status_code < 500
    assert response.headers.get("x-request-id"), dict(response.headers)
    assert response.headers.get("content-type", "").startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("code"), str), body
    assert error["code"], body
    assert isinstance(error.get("message"), str), body
    assert error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return error


async def assert_nothing_left(stack: Stack, user: User) -> None:
    """No job row, no stored input, no generation used (so nothing charged)."""
    assert await job_count(stack, user.id) == 0
    assert await objects_under(stack, "private", f"{user.id}/") == []
    assert (await user.usage())["used"] == 0


@dataclass(frozen=True)
class Cost:
    service_cpu: float
    workers_cpu: float
    service_peak_growth_mib: float
    workers_peak_mib: float


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _peak_mib(pid: int) -> float:
    """The process's lifetime peak RSS (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def workers(stack: Stack) -> list[psutil.Process]:
    """Generation's decode worker processes."""
    return [psutil.Process(pid) for pid in stack.ctx.decoder.worker_pids()]


async def submit_measured(stack: Stack, user: User, data: bytes) -> tuple[httpx.Response, Cost]:
    """Submit ``data`` as a redesign's photo: the answer, and the CPU seconds and peak RSS
    of this process (it hosts generation and the edge) and of the decode workers."""
    pool = workers(stack)
    service = resource.getrusage(resource.RUSAGE_SELF)
    workers_cpu = sum(cpu_seconds(worker) for worker in pool)
    response = await user.submit("redesign", images=[data])
    after = resource.getrusage(resource.RUSAGE_SELF)
    # A worker replaced meanwhile would hide its cost: the pool must be the same.
    assert [worker.pid for worker in workers(stack)] == [worker.pid for worker in pool]
    cost = Cost(
        service_cpu=(after.ru_utime + after.ru_stime) - (service.ru_utime + service.ru_stime),
        workers_cpu=sum(cpu_seconds(worker) for worker in pool) - workers_cpu,
        service_peak_growth_mib=(after.ru_maxrss - service.ru_maxrss) / 1024,
        workers_peak_mib=max((_peak_mib(worker.pid) for worker in pool), default=0.0),
    )
    return response, cost
