"""``--only webhook``: ``webhook_p50_ratio`` alone, measured as the full bench's round 1.

The same phase (:func:`bench.phases.webhook_phase`: a signed terminal webhook posted
to Envoy, then GETs until the variants show, against one download + one S3 PUT), the
same sample count and the same table size as round 1 (``small_rows`` jobs, topped up
by COPY). Only the submit and status runs that precede it in the full bench are left
out, so the figure comes in about a minute on a fresh system.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bench.baselines import opened_baselines
from bench.phases import Durations, summarize_webhooks, webhook_phase
from bench.seed import top_up
from bench.system import BenchSystem


async def webhook_only(
    system: BenchSystem,
    image: bytes,
    durations: Durations,
    rows: int,
    machine: dict[str, Any],
    began: float,
) -> dict[str, Any]:
    """The webhook figure and its parts on a fresh system with ``rows`` jobs."""
    try:
        async with opened_baselines(system) as baselines:
            await top_up(system.generation_dsn(), rows)
            samples = await webhook_phase(system, baselines, image, durations.webhook_samples)
    finally:
        await asyncio.to_thread(system.stop)
    total, post, baseline = summarize_webhooks(samples)
    get_after = max(0.0, total.p50 - post.p50)
    metrics = {"webhook_p50_ratio": round(total.p50 / baseline.p50, 3)}
    baselines_doc = {
        "webhook_download_put_p50_ms": round(baseline.p50, 2),
        "webhook_p50_ms": round(total.p50, 2),
    }
    details = {
        "rows": rows,
        "webhook_arrival_to_visible": total.as_dict(),
        "webhook_post_alone": post.as_dict(),
        "webhook_download_put": baseline.as_dict(),
        "webhook_get_after_ms": round(get_after, 2),
        "webhook_floor_ratio": round((baseline.p50 + get_after) / baseline.p50, 3),
        "output_bytes": samples.output_bytes,
    }
    machine = {**machine, "only": "webhook", "bench_seconds": round(time.monotonic() - began, 1)}
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"metrics": metrics, "baselines": baselines_doc, "machine": machine, "details": details}


def webhook_rows(document: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """The table's row for ``--only webhook``."""
    m, b, d = document["metrics"], document["baselines"], document["details"]
    return [
        ("webhook_p50_ratio",
         f"p50 {b['webhook_p50_ms']:.1f} ms (POST {d['webhook_post_alone']['p50_ms']:.1f})",
         f"download+PUT {b['webhook_download_put_p50_ms']:.1f} ms", m["webhook_p50_ratio"]),
    ]  # fmt: skip
