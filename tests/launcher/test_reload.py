"""`make run RELOAD=1`: which services a source change restarts, and how the supervisor
restarts them (real child processes, a temporary source tree)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.components import ChildProcess
from launcher.config import LauncherConfig
from launcher.reload import SERVICE_SOURCES, SourceWatcher
from launcher.stack import Stack
from launcher.supervisor import RestartPolicy, Supervisor
from launcher.units import ProcessUnit

SERVICES = list(SERVICE_SOURCES)
FAST = RestartPolicy(max_restarts=3, window_seconds=60, first_backoff_seconds=0.05)


def _tree(root: Path) -> dict[str, Path]:
    """One module per watched directory, as in the repository."""
    files = {name: root / source / "pkg" / "app.py" for name, source in SERVICE_SOURCES.items()}
    files["kit"] = root / "libs" / "kit" / "kit" / "logging.py"
    files["contracts"] = root / "libs" / "contracts" / "contracts" / "x_pb2.py"
    for path in files.values():
        path.parent.mkdir(parents=True)
        path.write_text("VALUE = 1\n")
    return files


def _touch(path: Path) -> None:
    """A later modification time than any the watcher saw, whatever the clock's grain."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_change_restarts_only_the_services_that_use_it(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    watcher = SourceWatcher(tmp_path, [*SERVICES, "postgres", "envoy"])

    assert watcher.changed() == []
    _touch(files["edge-api"])
    assert watcher.changed() == ["edge-api"]
    assert watcher.changed() == []  # reported once
    files["webhook-gateway"].write_text("VALUE = 22\n")
    assert watcher.changed() == ["webhook-gateway"]
    (files["usage"].parent / "new.py").write_text("")
    assert watcher.changed() == ["usage"]
    files["generation"].unlink()
    assert watcher.changed() == ["generation"]
    _touch(files["kit"])
    assert watcher.changed() == SERVICES
    _touch(files["contracts"])
    assert watcher.changed() == SERVICES


def test_bytecode_and_other_files_restart_nothing(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    watcher = SourceWatcher(tmp_path, SERVICES)
    cache = files["edge-api"].parent / "__pycache__"
    cache.mkdir()

    (cache / "app.cpython-311.pyc").write_bytes(b"\0")
    (cache / "odd.py").write_text("")
    (files["kit"].parent / "notes.swp").write_text("")

    assert watcher.changed() == []


# A stand-in service: refuses to start while its source says "broken", says it started
# (a file named by its pid in started/), waits while the file "gate" exists, and marks
# itself ready with a file named by its pid, so a restart's readiness is its own.
SERVICE = """
import os, pathlib, sys, time
source, ready = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
if "broken" in source.read_text():
    sys.exit(1)
(ready.parent / "started" / str(os.getpid())).touch()
while (ready.parent / "gate").exists():
    time.sleep(0.02)
(ready / str(os.getpid())).touch()
time.sleep(120)
"""


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Stack, dict[str, Path], list[str]]]:
    files = _tree(tmp_path / "repo")
    ready = tmp_path / "ready"
    ready.mkdir()
    (tmp_path / "started").mkdir()
    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": str(tmp_path / "var")})
    config.data_dir.mkdir(parents=True)
    stack = Stack(config, say=lambda line, end: None)
    for name in ("usage", "edge-api"):
        argv = [sys.executable, "-c", SERVICE, str(files[name]), str(ready)]
        child = ChildProcess(name, argv, log_path=tmp_path / f"{name}.log")
        unit = ProcessUnit(child, name, probe=_ready_probe(child, ready), grace=2)
        unit.start(10, stack.cancel)
        stack.units.append(unit)
    said: list[str] = []
    watcher = SourceWatcher(tmp_path / "repo", ["usage", "edge-api"])
    thread = threading.Thread(target=Supervisor(stack, FAST, said.append, watcher).run)
    thread.start()
    try:
        yield stack, files, said
    finally:
        stack.cancel.set()
        thread.join(timeout=10)
        stack.stop()


def _ready_probe(child: ChildProcess, ready: Path) -> Callable[[], bool]:
    return lambda: (ready / str(child.pid)).exists()


def _wait_said(said: list[str], text: str, count: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum(text in line for line in said) < count:
        assert time.monotonic() < deadline, f"no {text!r} in {said}"
        time.sleep(0.05)


def _pid(stack: Stack, name: str) -> list[int]:
    return stack.part(name).pids()


def test_the_supervisor_restarts_the_changed_service_and_waits_out_broken_code(
    supervised: tuple[Stack, dict[str, Path], list[str]],
) -> None:
    stack, files, said = supervised
    usage, edge = _pid(stack, "usage"), _pid(stack, "edge-api")

    _touch(files["edge-api"])
    _wait_said(said, "edge-api reloaded")
    assert _pid(stack, "usage") == usage
    assert _pid(stack, "edge-api") not in ([], edge)

    # Broken code: no restart loop and no giving up, only a wait for the next edit.
    files["edge-api"].write_text("broken\n")
    _wait_said(said, "edge-api did not start")
    _touch(files["usage"])  # by now the supervisor has looked at the dead edge again
    _wait_said(said, "usage reloaded")
    assert not stack.part("edge-api").alive()
    assert not [line for line in said if "restarting in" in line]

    files["edge-api"].write_text("VALUE = 2\n")
    _wait_said(said, "edge-api reloaded", count=2)
    edge, usage = _pid(stack, "edge-api"), _pid(stack, "usage")
    assert edge != []

    _touch(files["kit"])
    _wait_said(said, "usage reloaded", count=2)
    _wait_said(said, "edge-api reloaded", count=3)
    assert _pid(stack, "usage") not in ([], usage)
    assert _pid(stack, "edge-api") not in ([], edge)


def test_services_sharing_an_edit_restart_together(
    supervised: tuple[Stack, dict[str, Path], list[str]],
) -> None:
    """An edit of libs/kit restarts every service at once, as at start: none waits for
    another to be ready before it is launched (in a row, four services took four
    readiness waits)."""
    stack, files, said = supervised
    started = files["kit"].parents[4] / "started"
    gate = started.parent / "gate"
    before = {path.name for path in started.iterdir()}
    gate.touch()  # no restarted service gets ready until both have started
    try:
        _touch(files["kit"])
        deadline = time.monotonic() + 20
        while len({path.name for path in started.iterdir()} - before) < 2:
            assert time.monotonic() < deadline, (
                f"one service waited for the other's readiness before it started: {said}"
            )
            time.sleep(0.05)
    finally:
        gate.unlink()
    _wait_said(said, "usage reloaded")
    _wait_said(said, "edge-api reloaded")
    assert all(stack.part(name).alive() for name in ("usage", "edge-api"))


def test_reload_is_off_unless_asked_for() -> None:
    assert not LauncherConfig.from_env({}).reload
    assert LauncherConfig.from_env({"LAUNCHER_RELOAD": "1"}).reload
    root = LauncherConfig.from_env({"LAUNCHER_RELOAD_ROOT": "/tmp/elsewhere"}).reload_root
    assert root == Path("/tmp/elsewhere")
