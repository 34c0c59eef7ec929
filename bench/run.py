"""The whole bench: start the system, run every phase, compute the ratios, report."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.baselines import Baselines, opened_baselines
from bench.explain import SubmitExtras, submit_extras
from bench.hostile import UPLOADERS, HostileResult, hostile_phase
from bench.loadgen import LoadResult
from bench.memory import MemoryResult, upload_memory_phase
from bench.payloads import MB, photo_jpeg
from bench.phases import (
    Durations,
    RoundResult,
    finished_jobs,
    status_phase,
    submit_phase,
    summarize_webhooks,
    webhook_phase,
)
from bench.seed import count_jobs, query_plans, top_up
from bench.sse import SseEventResult, WatcherResult, sse_event_phase, watchers_phase
from bench.submit_only import submission_cpu, submit_only, submit_rows
from bench.system import BenchSystem
from bench.webhook_only import webhook_only, webhook_rows
from kit.logging import configure_logging

FULL = Durations(
    submit_latency=15, submit_throughput=20, status=12, baseline_rounds=40, webhook_samples=40
)
QUICK = Durations(
    submit_latency=6, submit_throughput=8, status=6, baseline_rounds=8, webhook_samples=8
)


@dataclass(frozen=True)
class Options:
    quick: bool
    small_rows: int = 1_000
    large_rows: int = 100_000
    upload_clients: int = 50
    status_targets: int = 20
    # Sample the edge and generation with py-spy during the first round's load runs.
    profile: bool = False
    # Only the hostile-upload phase (metrics 6 and 7): a short run of its own.
    hostile_only: bool = False
    # Seconds of GETs alone, then as long under the hostile uploads.
    hostile_seconds: float = 10.0
    # Only the Server-Sent Events figures: a short run of its own.
    sse_only: bool = False
    memory_only: bool = False
    # Only the submissions (ratio, rps, CPU per submission), at the starting table size.
    submit_only: bool = False
    # Only the webhook figure, as round 1 measures it (at ``small_rows``).
    webhook_only: bool = False
    sse_streams: int = 2_000
    sse_jobs: int = 20
    # Two whole heartbeat intervals (15 s: one ticker beats every stream at once, so a
    # shorter window catches that burst or not by chance), and longer than the stale
    # interval (5 s), so the running jobs' timed reads count.
    sse_idle_seconds: float = 30.0


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


async def run(options: Options) -> dict[str, Any]:
    """Everything, start to end; returns the result document (also written to disk)."""
    began = time.monotonic()
    durations = QUICK if options.quick else FULL
    machine = report.machine()
    # The bench's own clients (the Replicate adapter) log through kit: keep them quiet.
    configure_logging("bench", "WARNING")
    say("making the payloads (a 1 MB and a 10 MB photo-like JPEG)")
    small = photo_jpeg(2048, 1536, MB)
    large = photo_jpeg(4032, 3024, 10 * MB)
    say("starting the system (launcher Stack, free ports, temporary data directory)")
    system = await asyncio.to_thread(BenchSystem.start)
    if options.hostile_only:
        return await _hostile_only(system, small, options, machine, began)
    if options.sse_only:
        return await _sse_only(system, small, options, durations, machine, began)
    if options.memory_only:
        return await _memory_only(system, large, options, machine, began)
    if options.submit_only:
        profile_dir = report.RESULTS / "profile" if options.profile else None
        return await submit_only(system, small, durations, profile_dir, machine, began)
    if options.webhook_only:
        return await webhook_only(system, small, durations, options.small_rows, machine, began)
    try:
        async with opened_baselines(system) as baselines:
            say(f"finishing {options.status_targets} jobs through the whole system")
            targets = await finished_jobs(system, small, options.status_targets)
            rounds = []
            profile_dir = report.RESULTS / "profile" if options.profile else None
            for rows in (options.small_rows, options.large_rows):
                say(f"filling generation_jobs up to {rows} rows")
                await top_up(system.generation_dsn(), rows)
                rounds.append(
                    await measure_round(system, baselines, small, targets, durations, profile_dir)
                )
                profile_dir = None
            plans = await query_plans(system.generation_dsn())
            say(f"{options.upload_clients} clients upload {len(large) / MB:.1f} MB at once")
            memory = await upload_memory_phase(system, large, options.upload_clients)
            say(f"a finished job's GET while {UPLOADERS} clients post hostile images")
            hostile = await hostile_phase(system, targets, options.hostile_seconds)
            events, watchers = await _sse_phases(system, baselines, small, options, durations)
    finally:
        say("stopping the system")
        await asyncio.to_thread(system.stop)
    document = build_document(rounds[0], rounds[1], memory, machine, options, small, durations)
    _add_hostile(document, hostile)
    _add_sse(document, events, watchers)
    document["machine"]["bench_seconds"] = round(time.monotonic() - began, 1)
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document["details"]["query_plans_at_large_size"] = plans
    return document


async def _hostile_only(
    system: BenchSystem, image: bytes, options: Options, machine: dict[str, Any], began: float
) -> dict[str, Any]:
    """``--only hostile``: metrics 6 and 7 alone, on a few finished jobs."""
    try:
        say(f"finishing {options.status_targets} jobs through the whole system")
        targets = await finished_jobs(system, image, options.status_targets)
        say(f"a finished job's GET while {UPLOADERS} clients post hostile images")
        profile_dir = report.RESULTS / "profile" if options.profile else None
        hostile = await hostile_phase(system, targets, options.hostile_seconds, profile_dir)
    finally:
        say("stopping the system")
        await asyncio.to_thread(system.stop)
    document: dict[str, Any] = {"metrics": {}, "baselines": {}, "details": {}}
    document["machine"] = {**machine, "quick": options.quick, "only": "hostile"}
    _add_hostile(document, hostile)
    document["machine"]["bench_seconds"] = round(time.monotonic() - began, 1)
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return document


async def _memory_only(
    system: BenchSystem, image: bytes, options: Options, machine: dict[str, Any], began: float
) -> dict[str, Any]:
    """``--only memory``: ``upload_peak_rss_mb`` alone, on a fresh system."""
    try:
        say(f"{options.upload_clients} clients upload {len(image) / MB:.1f} MB at once")
        memory = await upload_memory_phase(system, image, options.upload_clients)
    finally:
        say("stopping the system")
        await asyncio.to_thread(system.stop)
    document: dict[str, Any] = {
        "metrics": {"upload_peak_rss_mb": memory.peak_mb},
        "baselines": {"upload_idle_rss_mb": memory.idle_mb},
        "details": {"memory": memory.__dict__},
    }
    document["machine"] = {**machine, "quick": options.quick, "only": "memory"}
    document["machine"]["bench_seconds"] = round(time.monotonic() - began, 1)
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return document


def _memory_row(document: dict[str, Any]) -> tuple[str, str, str, float]:
    m, b = document["metrics"], document["baselines"]
    return (
        "upload_peak_rss_mb",
        f"{document['details']['memory']['clients']} x 10 MB",
        f"idle {b['upload_idle_rss_mb']:.0f} MiB",
        m["upload_peak_rss_mb"],
    )


async def _sse_phases(
    system: BenchSystem, baselines: Baselines, image: bytes, options: Options, durations: Durations
) -> tuple[SseEventResult, WatcherResult]:
    say("SSE: terminal webhook posted to Envoy until the SSE client has it")
    events = await sse_event_phase(system, baselines, image, durations.webhook_samples)
    say(f"SSE: {options.sse_streams} idle streams on one edge process")
    watchers = await watchers_phase(
        system, options.sse_streams, options.sse_jobs, options.sse_idle_seconds
    )
    return events, watchers


async def _sse_only(
    system: BenchSystem,
    image: bytes,
    options: Options,
    durations: Durations,
    machine: dict[str, Any],
    began: float,
) -> dict[str, Any]:
    """``--only sse``: the Server-Sent Events figures alone."""
    try:
        async with opened_baselines(system) as baselines:
            events, watchers = await _sse_phases(system, baselines, image, options, durations)
    finally:
        say("stopping the system")
        await asyncio.to_thread(system.stop)
    document: dict[str, Any] = {"metrics": {}, "baselines": {}, "details": {}}
    document["machine"] = {**machine, "quick": options.quick, "only": "sse"}
    _add_sse(document, events, watchers)
    document["machine"]["bench_seconds"] = round(time.monotonic() - began, 1)
    document["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return document


def _add_sse(document: dict[str, Any], events: SseEventResult, watchers: WatcherResult) -> None:
    event = events.as_dict()
    document["metrics"]["sse_event_p50_ratio"] = event["ratio"]
    document["metrics"]["sse_watchers"] = watchers.delivered
    details = watchers.as_dict()
    document["metrics"]["sse_kib_per_stream"] = details["kib_per_stream"]
    document["metrics"]["sse_idle_cpu_percent"] = details["idle_cpu_percent"]
    document["baselines"]["sse_download_put_p50_ms"] = event["download_put_p50_ms"]
    document["details"]["sse_event"] = event
    document["details"]["sse_watchers"] = watchers.as_dict()


def _add_hostile(document: dict[str, Any], hostile: HostileResult) -> None:
    document["metrics"]["hostile_upload_get_p99_ratio"] = hostile.get_p99_ratio
    document["metrics"]["hostile_upload_peak_rss_mb"] = hostile.peak_mb
    document["baselines"]["hostile_get_p99_alone_ms"] = hostile.get_p99_alone_ms
    document["baselines"]["hostile_idle_rss_mb"] = hostile.idle_mb
    document["details"]["hostile"] = hostile.__dict__


async def measure_round(
    system: BenchSystem,
    baselines: Baselines,
    image: bytes,
    targets: list[dict[str, str]],
    durations: Durations,
    profile_dir: Path | None = None,
) -> RoundResult:
    """Metrics 1 to 3 at the table's current size."""
    rows = await count_jobs(system.generation_dsn())
    say(f"[{rows} jobs] submissions: baselines, then locust")
    parts, latency, throughput = await submit_phase(
        system, baselines, image, durations, profile_dir
    )
    extras = await submit_extras(system, baselines.config, image, durations.baseline_rounds)
    say(f"[{rows} jobs] status reads vs the bare endpoint (locust)")
    health, status, hop_floor = await status_phase(system, targets, durations, profile_dir)
    say(f"[{rows} jobs] webhooks: arrival to visible vs download + PUT")
    samples = await webhook_phase(system, baselines, image, durations.webhook_samples)
    total, post, baseline = summarize_webhooks(samples)
    result = RoundResult(
        rows, parts, latency, throughput, health, status, hop_floor, total, baseline, post,
        samples.output_bytes, {"submit_extras": extras},
    )  # fmt: skip
    say(
        f"[{rows} jobs] submit p50 {latency.summary.p50:.1f} ms (parts {parts.total_p50:.1f} ms), "
        f"{throughput.rps:.1f} rps; status {status.rps:.0f} rps vs {health.rps:.0f} rps "
        f"(readyz {hop_floor.rps:.0f}); "
        f"webhook {total.p50:.1f} ms vs {baseline.p50:.1f} ms"
    )
    return result


def _load(result: LoadResult) -> dict[str, Any]:
    return {
        "users": result.users,
        "rps": round(result.rps, 1),
        **result.summary.as_dict(),
        "failures": result.failures,
        "statuses": result.statuses,
        "cpu_seconds": result.cpu_seconds,
        "wall_seconds": result.wall_seconds,
    }


def _cpu_per_request(result: LoadResult) -> dict[str, float]:
    """CPU milliseconds each part spent per answered request (locust included)."""
    count = max(1, result.cpu_window_requests or result.summary.count)
    return {
        part: round(1000 * seconds / count, 3)
        for part, seconds in result.cpu_seconds.items()
        if seconds > 0.05
    }


def _round(result: RoundResult) -> dict[str, Any]:
    extras: SubmitExtras = result.extra["submit_extras"]
    explained = extras.explained_p50(result.parts.total_p50, result.parts.s3_put.p50)
    return {
        "rows_at_start": result.rows,
        "submit_parts": result.parts.as_dict(),
        "submit_extras": extras.as_dict(),
        "submit_explained_p50_ms": round(explained, 2),
        "submit_p50_over_explained": round(result.submit_latency.summary.p50 / explained, 3),
        "submit_latency": _load(result.submit_latency),
        "submit_throughput": _load(result.submit_throughput),
        "health": _load(result.health),
        "status": _load(result.status),
        "readyz_hop_floor": _load(result.hop_floor),
        "cpu_ms_per_request": {
            name: _cpu_per_request(load)
            for name, load in (
                ("health", result.health),
                ("readyz_hop_floor", result.hop_floor),
                ("status", result.status),
                ("submit_throughput", result.submit_throughput),
            )
        },
        "webhook_arrival_to_visible": result.webhook.as_dict(),
        "webhook_post_alone": result.webhook_post.as_dict(),
        "webhook_download_put": result.webhook_baseline.as_dict(),
        "output_bytes": result.output_bytes,
        "ratios": {
            "submit_p50_ratio": round(result.submit_ratio, 3),
            "status_rps_ratio": round(result.status_ratio, 3),
            "webhook_p50_ratio": round(result.webhook_ratio, 3),
        },
        "bounds": bounds(result, explained),
        "cpu_ms_per_submission": submission_cpu(result.submit_latency, result.submit_throughput),
    }


def bounds(result: RoundResult, explained_p50: float) -> dict[str, float]:
    """What each ratio could reach at best on this machine, from this run's own figures.

    - ``submit_explained_ratio``: the submit ratio if nothing but the measured steps a
      submission must take (unavoidable parts, image check, usage RPCs, transactions)
      cost anything: no hops, no queueing.
    - ``submit_cpu_bound_rps``: the cores divided by the CPU one submission costs
      across every process (locust excluded): no load can go faster.
    - ``status_hop_floor_ratio``: /readyz (health RPCs to generation and usage, no
      database) over /healthz: any GET the edge forwards over gRPC stays under it.
    - ``webhook_floor_ratio``: the webhook ratio if the POST cost only the download and
      PUT, leaving the GET that follows it (its p50 as measured here).
    """
    cpu = _cpu_per_request(result.submit_throughput)
    submit_cpu_ms = sum(ms for part, ms in cpu.items() if part != "locust")
    get_after = max(0.0, result.webhook.p50 - result.webhook_post.p50)
    download_put = result.webhook_baseline.p50
    return {
        "submit_explained_ratio": round(explained_p50 / result.parts.total_p50, 3),
        "submit_cpu_ms_per_request": round(submit_cpu_ms, 2),
        "submit_cpu_bound_rps": round((os.cpu_count() or 1) * 1000 / max(submit_cpu_ms, 1e-6), 1),
        "status_hop_floor_ratio": round(result.hop_floor.rps / result.health.rps, 3),
        "webhook_get_after_ms": round(get_after, 2),
        "webhook_floor_ratio": round((download_put + get_after) / download_put, 3),
    }


def scale_ratios(small: RoundResult, large: RoundResult) -> dict[str, float]:
    """Each of metrics 1-3 at the large size over the small one (>1 means slower)."""
    return {
        "submit_p50": large.submit_ratio / small.submit_ratio,
        # For a throughput ratio, slower means lower: invert so >1 means worse here too.
        "status_rps": small.status_ratio / large.status_ratio,
        "webhook_p50": large.webhook_ratio / small.webhook_ratio,
    }


def build_document(
    small: RoundResult,
    large: RoundResult,
    memory: MemoryResult,
    machine: dict[str, Any],
    options: Options,
    image: bytes,
    durations: Durations,
) -> dict[str, Any]:
    """The result: headline metrics at the small size, baselines, machine, per-round detail."""
    scale = scale_ratios(small, large)
    metrics = {
        "submit_p50_ratio": round(small.submit_ratio, 3),
        "submit_rps": round(small.submit_throughput.rps, 1),
        "submit_p99_ms": round(small.submit_throughput.summary.p99, 1),
        "cpu_ms_per_submission": submission_cpu(small.submit_latency, small.submit_throughput)[
            "total"
        ],
        "status_rps_ratio": round(small.status_ratio, 3),
        "webhook_p50_ratio": round(small.webhook_ratio, 3),
        "scale_latency_ratio": round(max(scale.values()), 3),
        "upload_peak_rss_mb": memory.peak_mb,
    }
    baselines = {
        "submit_unavoidable_p50_ms": round(small.parts.total_p50, 2),
        "submit_p50_ms": round(small.submit_latency.summary.p50, 2),
        "health_rps": round(small.health.rps, 1),
        "status_rps": round(small.status.rps, 1),
        "webhook_download_put_p50_ms": round(small.webhook_baseline.p50, 2),
        "webhook_p50_ms": round(small.webhook.p50, 2),
        "scale_rows": [small.rows, large.rows],
        "scale_ratios": {key: round(value, 3) for key, value in scale.items()},
        "upload_idle_rss_mb": memory.idle_mb,
    }
    return {
        "metrics": metrics,
        "baselines": baselines,
        "machine": {**machine, "quick": options.quick},
        "details": {
            "upload_bytes": len(image),
            "durations": durations.__dict__,
            "rounds": [_round(small), _round(large)],
            "memory": memory.__dict__,
            "targets": {name: str(target) for name, target in report.TARGETS.items()},
        },
    }


def hostile_rows(document: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """The table's rows for metrics 6 and 7."""
    m, h = document["metrics"], document["details"]["hostile"]
    return [
        ("hostile_upload_get_p99_ratio",
         f"p99 {h['get_p99_under_uploads_ms']:.1f} ms, {h['uploaders']} uploaders",
         f"alone {h['get_p99_alone_ms']:.1f} ms", m["hostile_upload_get_p99_ratio"]),
        ("hostile_upload_peak_rss_mb", f"{h['uploads']} uploads {h['upload_statuses']}",
         f"idle {h['idle_mb']:.0f} MiB", m["hostile_upload_peak_rss_mb"]),
    ]  # fmt: skip


def sse_rows(document: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """The Server-Sent Events rows of the table."""
    m, e, w = (
        document["metrics"],
        document["details"]["sse_event"],
        document["details"]["sse_watchers"],
    )
    return [
        ("sse_event_p50_ratio", f"p50 {e['webhook_to_sse_p50_ms']:.1f} ms",
         f"download+PUT {e['download_put_p50_ms']:.1f} ms", m["sse_event_p50_ratio"]),
        ("sse_watchers", f"{w['streams']} opened on {w['jobs']} running jobs",
         "still delivering after idle", m["sse_watchers"]),
        ("sse_kib_per_stream", "edge RSS growth / stream",
         f"idle {w['rss_before_mb']:.0f} MiB", m["sse_kib_per_stream"]),
        ("sse_idle_cpu_percent", f"{w['idle_cpu_seconds']:.2f} CPU s",
         f"in {w['idle_seconds']:.0f} s idle", m["sse_idle_cpu_percent"]),
    ]  # fmt: skip


def table_rows(document: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """The headline table: what was measured, against what, and the figure."""
    if document["machine"].get("only") == "hostile":
        return hostile_rows(document)
    if document["machine"].get("only") == "sse":
        return sse_rows(document)
    if document["machine"].get("only") == "memory":
        return [_memory_row(document)]
    if document["machine"].get("only") == "submit":
        return submit_rows(document)
    if document["machine"].get("only") == "webhook":
        return webhook_rows(document)
    m, b = document["metrics"], document["baselines"]
    small = document["details"]["rounds"][0]
    scale = b["scale_ratios"]
    rows_note = f"{b['scale_rows'][1]} vs {b['scale_rows'][0]} rows"
    return [
        ("submit_p50_ratio", f"p50 {b['submit_p50_ms']:.1f} ms",
         f"S3+create+insert {b['submit_unavoidable_p50_ms']:.1f} ms", m["submit_p50_ratio"]),
        ("submit_rps", f"{small['submit_throughput']['users']} users", "-", m["submit_rps"]),
        ("submit_p99_ms", f"{small['submit_throughput']['users']} users", "-", m["submit_p99_ms"]),
        ("cpu_ms_per_submission", f"{small['cpu_ms_per_submission']['submissions']} submissions",
         "our processes", m["cpu_ms_per_submission"]),
        ("status_rps_ratio", f"{b['status_rps']:.0f} rps", f"/healthz {b['health_rps']:.0f} rps",
         m["status_rps_ratio"]),
        ("webhook_p50_ratio", f"p50 {b['webhook_p50_ms']:.1f} ms",
         f"download+PUT {b['webhook_download_put_p50_ms']:.1f} ms", m["webhook_p50_ratio"]),
        ("scale_latency_ratio",
         f"submit {scale['submit_p50']:.2f} status {scale['status_rps']:.2f} "
         f"webhook {scale['webhook_p50']:.2f}", rows_note, m["scale_latency_ratio"]),
        _memory_row(document),
        *hostile_rows(document),
        *sse_rows(document),
    ]  # fmt: skip


def bounds_line(document: dict[str, Any]) -> str:
    """One line: the best each missed figure could reach on this machine (see ``bounds``)."""
    if document["machine"].get("only") in {"hostile", "sse", "memory", "submit", "webhook"}:
        return ""
    b = document["details"]["rounds"][0]["bounds"]
    return (
        f"bounds in this run: submit ratio >= {b['submit_explained_ratio']:.2f} (its steps alone), "
        f"submit rps <= {b['submit_cpu_bound_rps']:.0f} ({b['submit_cpu_ms_per_request']:.0f} ms "
        f"CPU each), status ratio <= {b['status_hop_floor_ratio']:.2f} (/readyz, the gRPC hop "
        f"alone), webhook ratio >= {b['webhook_floor_ratio']:.2f} (the GET after it)"
    )
