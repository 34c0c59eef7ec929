"""The state file, and cleaning up after a launcher that was killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.config import LauncherConfig
from launcher.state import reap_orphans, state_path

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def config(tmp_path: Path) -> LauncherConfig:
    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": str(tmp_path / "var")})
    config.data_dir.mkdir(parents=True)
    return config


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _spawn(
    processes: list[subprocess.Popen[bytes]], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(SLEEPER, env={**os.environ, **env}, start_new_session=True)
    processes.append(process)
    return process


def _wait_exec(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Until the child runs SLEEPER (its /proc cmdline is no longer the parent's)."""
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + timeout
    while cmdline.read_bytes().split(b"\0")[:3] != [arg.encode() for arg in SLEEPER]:
        assert time.monotonic() < deadline, "the child did not exec"
        time.sleep(0.01)


def _wait_exit(process: subprocess.Popen[bytes], timeout: float = 10) -> int | None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return process.poll()


def test_parts_left_by_a_killed_launcher_are_stopped_and_strangers_are_not(
    config: LauncherConfig, processes: list[subprocess.Popen[bytes]]
) -> None:
    ours = _spawn(processes, {"LAUNCHER_DATA_DIR": str(config.data_dir)})
    other_dir = _spawn(processes, {"LAUNCHER_DATA_DIR": str(config.data_dir) + "-other"})
    untagged = _spawn(processes, {})
    for process in (ours, other_dir, untagged):
        _wait_exec(process)  # /proc shows the child's own environment from then on
    state_path(config).write_text(
        json.dumps(
            {"pid": 999_999_999, "units": {
                "usage": [ours.pid], "edge-api": [other_dir.pid], "envoy": [untagged.pid]}}
        )
    )  # fmt: skip

    stopped = reap_orphans(config, grace=5)

    assert stopped == ["usage"]
    assert _wait_exit(ours) is not None
    assert other_dir.poll() is None
    assert untagged.poll() is None
    assert not state_path(config).exists()


def test_no_state_file_means_nothing_to_do(config: LauncherConfig) -> None:
    assert reap_orphans(config) == []
