"""The CPU one submission costs, and ``--only submit``: the submit figures alone."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.baselines import opened_baselines
from bench.loadgen import LoadResult, merge
from bench.phases import Durations, submit_phase
from bench.system import BenchSystem

# Parts whose CPU is not the submission's cost: the load generator, the provider's
# stand-in and the proxy in front (reported in ``parts`` all the same).
NOT_SUBMISSION_COST = frozenset({"locust", "emulator", "envoy"})


def submission_cpu(latency: LoadResult, throughput: LoadResult) -> dict[str, Any]:
    """CPU milliseconds one submission costs, summed over our processes.

    The edge, generation (with its decode workers), usage, the webhook gateway, the
    S3 server and PostgreSQL (with its backends), over both submit runs (1 user, then
    many), divided by the submissions that ended while the CPU was measured.
    """
    load = merge(latency, throughput)
    count = max(1, load.cpu_window_requests)
    parts = {
        part: round(1000 * seconds / count, 2) for part, seconds in sorted(load.cpu_seconds.items())
    }
    total = sum(ms for part, ms in parts.items() if part not in NOT_SUBMISSION_COST)
    return {"total": round(total, 2), "submissions": count, "parts": parts}


async def submit_only(
    system: BenchSystem,
    image: bytes,
    durations: Durations,
    profile_dir: Path | None,
    machine: dict[str, Any],
    began: float,
) -> dict[str, Any]:
    """``--only submit``: the submit ratio, rate and CPU alone, on a fresh system."""
    try:
        async with opened_baselines(system) as baselines:
            parts, latency, throughput = await submit_phase(
                system, baselines, image, durations, profile_dir
            )
    finally:
        await asyncio.to_thread(system.stop)
    cpu = submission_cpu(latency, throughput)
    metrics = {
        "submit_p50_ratio": round(latency.summary.p50 / parts.total_p50, 3),
        "submit_rps": round(throughput.rps, 1),
        "submit_p99_ms": round(throughput.summary.p99, 1),
        "cpu_ms_per_submission": cpu["total"],
    }
    baselines_doc = {
        "submit_p50_ms": round(latency.summary.p50, 2),
        "submit_unavoidable_p50_ms": round(parts.total_p50, 2),
    }
    details = {"submit_parts": parts.as_dict(), "cpu_ms_per_submission": cpu}
    machine = {**machine, "only": "submit", "bench_seconds": round(time.monotonic() - began, 1)}
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"metrics": metrics, "baselines": baselines_doc, "machine": machine, "details": details}


def submit_rows(document: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """The table's rows for ``--only submit``."""
    m, b = document["metrics"], document["baselines"]
    cpu = document["details"]["cpu_ms_per_submission"]
    return [
        ("submit_p50_ratio", f"p50 {b['submit_p50_ms']:.1f} ms",
         f"S3+create+insert {b['submit_unavoidable_p50_ms']:.1f} ms", m["submit_p50_ratio"]),
        ("submit_rps", "-", "-", m["submit_rps"]),
        ("cpu_ms_per_submission", f"{cpu['submissions']} submissions", "our processes",
         m["cpu_ms_per_submission"]),
    ]  # fmt: skip
