"""The supervisor restarts a part that dies, and gives up on one that keeps dying."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher.components import ChildProcess
from launcher.config import LauncherConfig
from launcher.stack import Stack
from launcher.supervisor import GaveUp, RestartPolicy, Supervisor
from launcher.units import ProcessUnit

FAST = RestartPolicy(max_restarts=3, window_seconds=60, first_backoff_seconds=0.05)


def _exits_once_then_sleeps(marker: Path) -> str:
    """A part's script: the first run leaves ``marker`` and exits 1, later ones stay up."""
    return (
        "import pathlib, sys, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        "    sys.exit(1)\n"
        "time.sleep(60)\n"
    )


def _stack(
    tmp_path: Path, script: str, probe: Callable[[], bool] = lambda: True
) -> tuple[Stack, ProcessUnit]:
    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": str(tmp_path / "var")})
    config.data_dir.mkdir(parents=True)
    child = ChildProcess("worker", [sys.executable, "-c", script], log_path=tmp_path / "w.log")
    unit = ProcessUnit(child, "test worker", probe=probe, grace=2)
    stack = Stack(config, say=lambda line, end: None)
    unit.start(5, stack.cancel)
    stack.units.append(unit)
    return stack, unit


def test_a_part_that_keeps_dying_makes_it_give_up(tmp_path: Path) -> None:
    stack, _ = _stack(tmp_path, "import sys, time; print('boom', flush=True); sys.exit(3)")
    said: list[str] = []

    with pytest.raises(GaveUp, match="test worker keeps dying") as raised:
        Supervisor(stack, FAST, say=said.append).run()

    assert "| boom" in str(raised.value)  # the end of its log comes with the reason
    assert any("exited with code 3" in line for line in said)
    stack.stop()


def test_a_part_that_dies_once_is_started_again(tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    script = _exits_once_then_sleeps(marker)
    stack, unit = _stack(tmp_path, script)
    first_pid = unit.child.pid
    said: list[str] = []
    watcher = threading.Thread(target=Supervisor(stack, FAST, say=said.append).run)
    watcher.start()
    try:
        deadline = time.monotonic() + 20
        while not any("is back" in line for line in said) and time.monotonic() < deadline:
            time.sleep(0.05)

        assert unit.alive()
        assert unit.child.pid != first_pid
        assert any("exited with code 1" in line for line in said)
    finally:
        stack.cancel.set()
        watcher.join(timeout=10)
        stack.stop()
    assert not unit.alive()


def test_a_part_is_in_the_state_file_before_it_is_ready(tmp_path: Path) -> None:
    """A launcher killed while a part starts must leave it named in the state file, or
    the next start can neither stop it (reap_orphans) nor start beside it (its port)."""
    from launcher import state

    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": str(tmp_path / "var")})
    config.data_dir.mkdir(parents=True)
    child = ChildProcess(
        "slow", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "s.log"
    )
    ready = threading.Event()
    unit = ProcessUnit(child, "slow part", probe=ready.is_set, grace=2)
    stack = Stack(config, say=lambda line, end: None)
    starting = threading.Thread(target=stack._start_group, args=([unit], 20))
    starting.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            recorded = state.state_path(config)
            if recorded.exists() and "slow" in recorded.read_text():
                break
            assert time.monotonic() < deadline, "not recorded while it was not ready"
            time.sleep(0.02)
        assert not ready.is_set()
        assert str(child.pid) in recorded.read_text()
    finally:
        ready.set()
        starting.join(20)
        stack.stop()


def test_a_large_log_is_moved_aside_when_its_part_starts(tmp_path: Path) -> None:
    """Logs are appended to at every start: past the limit the old one is kept once as
    <name>.1 and the part starts a new one; the error tail reads only the end."""
    from launcher.components import rotate_log
    from launcher.stack import log_tail

    log = tmp_path / "envoy.log"
    log.write_bytes(b"old line\n" * 1000 + b"the last old line\n")
    rotate_log(log, limit=100_000)
    assert log.exists()  # small: kept
    rotate_log(log, limit=1000)
    assert not log.exists()
    assert (tmp_path / "envoy.log.1").read_bytes().endswith(b"the last old line\n")
    child = ChildProcess(
        "echo", [sys.executable, "-c", "print('a new start')"], log_path=tmp_path / "envoy.log"
    )
    child.start()
    assert child.process is not None
    child.process.wait(10)
    assert log.read_text() == "a new start\n"
    assert log_tail(tmp_path / "envoy.log.1", lines=1) == "   | the last old line"


def test_a_part_that_never_gets_ready_again_makes_it_give_up(tmp_path: Path) -> None:
    """Alive but never ready: each attempt took the whole readiness wait, so three never
    fell within the window and it was restarted for ever, each line blaming the
    launcher's own SIGTERM. Three failed restarts in a row end it, whatever the window."""
    marker = tmp_path / "started-once"
    # Ready only before the first exit: never again after it.
    stack, _ = _stack(tmp_path, _exits_once_then_sleeps(marker), probe=lambda: not marker.exists())
    policy = RestartPolicy(
        max_restarts=3, window_seconds=0.001, first_backoff_seconds=0.01, ready_seconds=0.3
    )
    said: list[str] = []
    try:
        with pytest.raises(GaveUp, match="did not come back after 3 restarts"):
            Supervisor(stack, policy, say=said.append).run()
        assert any("did not come back (" in line for line in said)
        assert not any("killed by signal 15" in line for line in said)
    finally:
        stack.stop()
