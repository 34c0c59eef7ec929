"""Runs locust headless as a subprocess and turns its per-request samples into figures.

While it runs, the CPU time every part of the system (and locust itself) spends
is measured, so a result can say where the two shared cores went.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import profiling
from bench.stats import Summary, summarize
from bench.system import BenchSystem

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class LoadResult:
    """One locust run: the summary of its successful requests and the CPU it cost."""

    scenario: str
    users: int
    summary: Summary
    rps: float
    failures: int
    statuses: dict[str, int]
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    # Successful requests that ended while the CPU was being measured: the divisor of
    # a per-request CPU figure (the measured window above starts after a warm-up).
    cpu_window_requests: int = 0
    # Durations (ms) of the successful requests in the measured window.
    samples: tuple[float, ...] = field(default=(), repr=False)


def merge(first: LoadResult, second: LoadResult) -> LoadResult:
    """Two runs of one scenario as one: the mean rate, all samples, all CPU."""
    cpu = dict(first.cpu_seconds)
    for name, seconds in second.cpu_seconds.items():
        cpu[name] = round(cpu.get(name, 0.0) + seconds, 2)
    statuses = dict(first.statuses)
    for code, count in second.statuses.items():
        statuses[code] = statuses.get(code, 0) + count
    samples = first.samples + second.samples
    return LoadResult(
        scenario=first.scenario,
        users=first.users,
        summary=summarize(list(samples)),
        rps=(first.rps + second.rps) / 2,
        failures=first.failures + second.failures,
        statuses=statuses,
        cpu_seconds=cpu,
        wall_seconds=round(first.wall_seconds + second.wall_seconds, 2),
        cpu_window_requests=first.cpu_window_requests + second.cpu_window_requests,
        samples=samples,
    )


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds so far of every process, by pid with its part's name, and when."""

    at: float
    by_pid: dict[int, tuple[str, float]]


def _cpu_times(groups: Mapping[str, list[psutil.Process]]) -> CpuReading:
    """User + system CPU seconds of every process, its reaped children's included.

    A process that ends between two readings (a PostgreSQL backend, a decode worker)
    is gone from the second one, but its parent has reaped it by then and the kernel
    has added its whole CPU to the parent's children times: counting those, part by
    part, keeps its work.
    """
    times: dict[int, tuple[str, float]] = {}
    for name, procs in groups.items():
        for proc in procs:
            try:
                spent = proc.cpu_times()
            except psutil.Error:
                continue
            total = spent.user + spent.system + spent.children_user + spent.children_system
            times[proc.pid] = (name, total)
    return CpuReading(time.time(), times)


def _cpu_spent(before: CpuReading, after: CpuReading) -> dict[str, float]:
    """CPU seconds each part spent between two readings.

    Per part, the sum after minus the sum before: a process born since counts whole,
    and one that ended counts through its parent's children times (see ``_cpu_times``).
    """
    spent: dict[str, float] = {}
    for sign, reading in ((1.0, after), (-1.0, before)):
        for name, total in reading.by_pid.values():
            spent[name] = spent.get(name, 0.0) + sign * total
    return {name: round(max(0.0, value), 2) for name, value in spent.items()}


def run_locust(
    system: BenchSystem,
    scenario: str,
    *,
    users: int,
    seconds: float,
    warmup: float = 1.5,
    env: Mapping[str, str] | None = None,
    profile_dir: Path | None = None,
) -> LoadResult:
    """Run ``scenario`` (a user class of bench/locustfile.py) against Envoy.

    With ``profile_dir``, the edge, generation and usage processes are sampled by py-spy
    during the run and a text summary per process is written there.
    """
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as scratch:
        samples_path = Path(scratch) / "samples.json"
        argv = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s",
            "-H", system.public_url, "--only-summary", "--loglevel", "ERROR",
            "--stop-timeout", "10", "--exit-code-on-error", "0", scenario,
        ]  # fmt: skip
        child_env = {
            **os.environ,
            "BENCH_JWT_SECRET": system.jwt_secret,
            "BENCH_SAMPLES_OUT": str(samples_path),
            **(env or {}),
        }
        process = subprocess.Popen(
            argv, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        locust = [psutil.Process(process.pid)]
        before = _cpu_times({**system.processes(), "locust": locust})
        began = time.monotonic()
        profilers = _start_profilers(system, profile_dir, scenario, seconds, warmup)
        # Sampled just before the end: locust's own process is gone after it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, began + seconds - 0.5 - time.monotonic()))
        after = _cpu_times({**system.processes(), "locust": locust})
        wall = time.monotonic() - began
        _, stderr = process.communicate(timeout=seconds + 60)
        _finish_profilers(profilers)
        if process.returncode != 0 or not samples_path.exists():
            raise RuntimeError(f"locust {scenario} failed: {stderr.decode()[-2000:]}")
        raw = json.loads(samples_path.read_text())
    return _result(scenario, users, raw, warmup, before, after, wall)


def _result(
    scenario: str,
    users: int,
    raw: list[list[float]],
    warmup: float,
    before: CpuReading,
    after: CpuReading,
    wall: float,
) -> LoadResult:
    if not raw:
        raise RuntimeError(f"locust {scenario} recorded no request")
    first_start = min(sample[0] for sample in raw)
    # A slow start (locust importing on a busy machine) must not leave an empty window.
    warmup = min(warmup, (max(sample[0] for sample in raw) - first_start) / 3)
    window = [s for s in raw if s[0] >= first_start + warmup]
    ok = [s for s in window if s[2]]
    statuses: dict[str, int] = {}
    for sample in window:
        statuses[str(int(sample[3]))] = statuses.get(str(int(sample[3])), 0) + 1
    if not ok:
        raise RuntimeError(f"locust {scenario}: every request failed: {statuses}")
    if len(window) - len(ok) > len(window) // 100:
        # A figure over the answered requests alone would measure a different load
        # (e.g. a rate limit turning most of it away): refuse to report one.
        raise RuntimeError(f"locust {scenario}: more than 1% of requests failed: {statuses}")
    window_start = first_start + warmup
    window_end = max(s[0] + s[1] / 1000.0 for s in ok)
    rps = len(ok) / max(1e-6, window_end - window_start)
    cpu = _cpu_spent(before, after)
    ended = [s[0] + s[1] / 1000.0 for s in raw if s[2]]
    cpu_window_requests = sum(1 for end in ended if before.at <= end <= after.at)
    return LoadResult(
        scenario=scenario,
        users=users,
        summary=summarize([s[1] for s in ok]),
        rps=rps,
        failures=len(window) - len(ok),
        statuses=statuses,
        cpu_seconds=cpu,
        wall_seconds=round(wall, 2),
        cpu_window_requests=cpu_window_requests,
        samples=tuple(s[1] for s in ok),
    )


PROFILED = ("edge-api", "generation", "usage")


def _start_profilers(
    system: BenchSystem, profile_dir: Path | None, scenario: str, seconds: float, warmup: float
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    if profile_dir is None:
        return []
    profile_dir.mkdir(parents=True, exist_ok=True)
    # Locust needs about a second to start; sample the steady state only.
    time.sleep(warmup + 1.0)
    length = max(1.0, seconds - warmup - 2.5)
    started = []
    for name, pid in system.pids(*PROFILED).items():
        out = profile_dir / f"{scenario}-{name}.raw"
        started.append((profiling.record(pid, length, out), out))
    return started


def _finish_profilers(profilers: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for recorder, out in profilers:
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()
        if out.exists():
            out.with_suffix(".txt").write_text(profiling.summarize(out) + "\n")
