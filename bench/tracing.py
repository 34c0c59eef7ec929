"""``--only tracing``: what tracing costs, the same figures with it off and on.

The system is started twice in one run, first without ``OTEL_EXPORTER_OTLP_ENDPOINT``
(tracing off: no provider, no wrappers), then with it pointing at an OTLP/HTTP sink in
this process that accepts every export and discards it, so every span is built,
scrubbed, batched, encoded and sent as with a real collector. Each side measures the
submit p50 against its unavoidable parts and the status reads against the bare
endpoint, the bench's usual ratios; the cost is the on/off quotient of those ratios.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.baselines import opened_baselines
from bench.phases import finished_jobs, status_phase, submit_phase
from bench.system import BenchSystem

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


class _Sink(BaseHTTPRequestHandler):
    """Accepts an OTLP/HTTP export, counts it, drops it."""

    received = {"exports": 0, "bytes": 0}

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        _Sink.received["exports"] += 1
        _Sink.received["bytes"] += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return


@contextmanager
def otlp_sink() -> Iterator[str]:
    """A local OTLP/HTTP receiver; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def _measure(image: bytes, durations: Any, say: Any, label: str) -> dict[str, float]:
    system = await asyncio.to_thread(BenchSystem.start)
    try:
        async with opened_baselines(system) as baselines:
            targets = await finished_jobs(system, image, 10)
            say(f"tracing {label}: submissions")
            parts, latency, throughput = await submit_phase(system, baselines, image, durations)
            say(f"tracing {label}: status reads")
            health, status, _ = await status_phase(system, targets, durations)
    finally:
        await asyncio.to_thread(system.stop)
    return {
        "submit_p50_ms": round(latency.summary.p50, 2),
        "submit_parts_p50_ms": round(parts.total_p50, 2),
        "submit_p50_ratio": round(latency.summary.p50 / parts.total_p50, 3),
        "submit_rps": round(throughput.rps, 1),
        "status_rps": round(status.rps, 1),
        "health_rps": round(health.rps, 1),
        "status_rps_ratio": round(status.rps / health.rps, 3),
    }


async def tracing_phase(image: bytes, durations: Any, say: Any) -> dict[str, Any]:
    """Off, then on (exporting to the sink); the figures of both and their quotients."""
    saved = os.environ.pop(ENDPOINT, None)
    try:
        off = await _measure(image, durations, say, "off")
        with otlp_sink() as url:
            os.environ[ENDPOINT] = url
            on = await _measure(image, durations, say, "on")
    finally:
        os.environ.pop(ENDPOINT, None)
        if saved is not None:
            os.environ[ENDPOINT] = saved
    return {
        "off": off,
        "on": on,
        "exported": dict(_Sink.received),
        "submit_p50_ratio_on_over_off": round(on["submit_p50_ratio"] / off["submit_p50_ratio"], 3),
        "submit_rps_on_over_off": round(on["submit_rps"] / off["submit_rps"], 3),
        "status_rps_ratio_on_over_off": round(on["status_rps_ratio"] / off["status_rps_ratio"], 3),
    }
