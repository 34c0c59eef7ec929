"""Sampling profiles of the service processes with py-spy, summarized as text.

``python -m bench.profiling summarize FILE`` prints where the samples of a py-spy
``--format raw`` (collapsed stacks) file went: the functions that were running
(self) and the functions that were on the stack (inclusive), idle time excluded.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")
# Frames of an idle event loop or an idle worker thread: waiting, not working.
IDLE = ("select (selectors.py", "_worker (concurrent", "wait (threading.py", "poll (", "epoll")


def record(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` (all threads, no pausing); returns the process."""
    return subprocess.Popen(
        [str(PY_SPY), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate),
         "-f", "raw", "-o", str(out), "--nonblocking", "--threads"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _frames(stack: str) -> list[str]:
    return [frame for frame in stack.split(";") if not frame.startswith("thread (")]


def summarize(path: Path, top: int = 25) -> str:
    """The busiest functions of a collapsed-stack file, self and inclusive, in % of busy."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames or any(marker in frames[-1] for marker in IDLE):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {busy} busy samples, {idle} idle"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"-- {title}")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(1, busy):5.1f}%  {frame}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "summarize":
        for name in sys.argv[2:]:
            print(summarize(Path(name)))
    else:
        print("usage: python -m bench.profiling summarize FILE...")
