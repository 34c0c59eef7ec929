"""The table on the terminal and bench/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).with_name("results")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """A metric's goal: at most (``<=``) or at least (``>=``) ``value``."""

    op: str
    value: float

    def met(self, measured: float) -> bool:
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


TARGETS = {
    "submit_p50_ratio": Target("<=", 1.5),
    "submit_rps": Target(">=", 100),
    "cpu_ms_per_submission": Target("<=", 40),
    "status_rps_ratio": Target(">=", 0.5),
    "webhook_p50_ratio": Target("<=", 1.3),
    "scale_latency_ratio": Target("<=", 1.15),
    "upload_peak_rss_mb": Target("<=", 300),
    "hostile_upload_get_p99_ratio": Target("<=", 1.5),
    "hostile_upload_peak_rss_mb": Target("<=", 400),
    "sse_event_p50_ratio": Target("<=", 1.3),
    "sse_watchers": Target(">=", 2000),
    "sse_kib_per_stream": Target("<=", 32),
    # "No CPU while idle": the edge's CPU over the idle interval, in percent of one core.
    "sse_idle_cpu_percent": Target("<=", 1.0),
}


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on (they only compare within one run)."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def table(rows: list[tuple[str, str, str, float]]) -> str:
    """rows: (metric, measured, baseline, value); the target comes from TARGETS."""
    header = ("metric", "measured", "baseline", "value", "target", "")
    lines = [header]
    for name, measured, baseline, value in rows:
        target = TARGETS.get(name)
        verdict = "" if target is None else ("ok" if target.met(value) else "MISSED")
        lines.append((name, measured, baseline, f"{value:.2f}", str(target or ""), verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(lines[0]), separator, *(fmt(line) for line in lines[1:])])


def write(document: dict[str, Any], name: str = "latest.json") -> Path:
    """Write the result document; returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
