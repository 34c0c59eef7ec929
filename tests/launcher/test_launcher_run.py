"""`python -m launcher` for real: the whole system up, used, stopped, started again.

Every port is a free one and the data lives in a temporary directory, so this
runs next to a developer's own `make run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from launcher.components import port_is_free
from launcher.config import Ports
from launcher.reload import SERVICE_SOURCES, SHARED_SOURCES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

READY_MARKER = "Ctrl-C stops everything."
START_BOUND_SECONDS = 90.0
STOP_BOUND_SECONDS = 40.0
GRPCURL = Path(sys.executable).parent / "grpcurl"
# Variables that would swap an embedded part for an external one.
EXTERNAL_VARIABLES = (
    "DATABASE_URL", "GENERATION_DATABASE_URL", "USAGE_DATABASE_URL", "S3_ENDPOINT",
    "REPLICATE_API_BASE_URL", "WEBHOOK_BASE_URL", "GENERATION_GRPC_TARGET", "USAGE_GRPC_TARGET",
)  # fmt: skip


@dataclass
class Launcher:
    """One `python -m launcher` process and everything it printed."""

    process: subprocess.Popen[str]
    ports: Ports
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    pumped: threading.Event = field(default_factory=threading.Event)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def pump(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)
        self.pumped.set()

    def wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("launcher exited early:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if marker in line:
                return
        raise AssertionError(f"no {marker!r} within {timeout} s:\n" + "\n".join(self.lines))

    @property
    def token(self) -> str:
        return next(x.split("TOKEN=", 1)[1] for x in self.lines if "export TOKEN=" in x)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports.public}/api/v1"

    def state(self) -> dict[str, object]:
        document: dict[str, object] = json.loads((self.data_dir / "launcher.json").read_text())
        return document

    def unit_pids(self) -> dict[str, list[int]]:
        units = self.state()["units"]
        assert isinstance(units, dict)
        return units


# A parent standing in for make: it runs the launcher and waits for it.
VIA_PARENT = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-m', 'launcher']))"


def start_launcher(
    data_dir: Path,
    ports: Ports,
    *,
    via_parent: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Launcher:
    """The launcher, or (``via_parent``) a parent process running it, as ``process``."""
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL_VARIABLES}
    env.update(ports.env())
    env.update(extra_env or {})
    env["LAUNCHER_DATA_DIR"] = str(data_dir)
    command = ["-c", VIA_PARENT] if via_parent else ["-m", "launcher"]
    process = subprocess.Popen(
        [sys.executable, *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a Ctrl-C in the test's terminal is not the launcher's
    )
    launcher = Launcher(process, ports, data_dir)
    threading.Thread(target=launcher.pump, daemon=True).start()
    return launcher


# -- processes, from /proc: (pid, start time) so a reused pid is not mistaken for ours


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from "state" on


def _identity(pid: int) -> tuple[int, str] | None:
    fields = _stat(pid)
    return None if fields is None else (pid, fields[19])  # starttime


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _running(identity: tuple[int, str]) -> bool:
    fields = _stat(identity[0])
    return fields is not None and fields[19] == identity[1] and fields[0] != "Z"


def everything_started(launcher: Launcher) -> set[tuple[int, str]]:
    """The launcher's children and grandchildren, and PostgreSQL's processes."""
    pids = {pid for pids in launcher.unit_pids().values() for pid in pids}
    pids |= _descendants(launcher.process.pid)
    for postmaster in launcher.unit_pids()["postgres"]:
        pids |= _descendants(postmaster)
    return {identity for pid in pids if (identity := _identity(pid)) is not None}


def stop_and_check(launcher: Launcher, signum: signal.Signals) -> None:
    started = everything_started(launcher)
    assert len(started) >= 8  # postgres (+ its workers), s3, emulator, 4 services, envoy

    launcher.process.send_signal(signum)
    code = launcher.process.wait(timeout=STOP_BOUND_SECONDS)
    assert launcher.pumped.wait(5)

    assert code == 0
    assert_all_gone(launcher, started, 5)


def assert_all_gone(launcher: Launcher, started: set[tuple[int, str]], within: float) -> None:
    """No process of ``started`` runs, every port is free, the state file is gone."""
    deadline = time.monotonic() + within
    while any(_running(identity) for identity in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [identity for identity in started if _running(identity)] == []
    busy = [
        port
        for name, port in vars(launcher.ports).items()
        if not port_is_free(port, "0.0.0.0" if name == "public" else "127.0.0.1")
    ]
    assert busy == []
    assert not (launcher.data_dir / "launcher.json").exists()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root, PostgreSQL runs as another user that must traverse
    # every parent directory, and pytest keeps resetting its own root to 0700.
    with tempfile.TemporaryDirectory(prefix="launcher-test-") as directory:
        yield Path(directory) / "var"


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_service_identity_is_on(launcher: Launcher) -> None:
    """Unsigned internal calls are refused; the operator key of the banner works."""
    unsigned = subprocess.run(
        [str(GRPCURL), "-plaintext", "-d", "{}", f"127.0.0.1:{launcher.ports.usage_grpc}",
         "interior.usage.v1.UsageService/AuditLedger"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert unsigned.returncode != 0
    assert "Unauthenticated" in unsigned.stdout + unsigned.stderr
    shown = next(x for x in launcher.lines if "OPERATOR_KEY_FILE=" in x)
    key_file = shown.split("OPERATOR_KEY_FILE=", 1)[1].split()[0]
    assert Path(key_file).resolve() == (launcher.data_dir / "keys" / "operator.key").resolve()
    for private in (launcher.data_dir / "keys").glob("*.key"):
        assert private.stat().st_mode & 0o077 == 0, private
    audit = subprocess.run(
        [sys.executable, "-m", "usage.cli", "--target", f"127.0.0.1:{launcher.ports.usage_grpc}",
         "--key-file", key_file, "audit"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert audit.returncode in (0, 1), audit.stderr  # 2 would be a refused or failed call
    assert "discrepancies" in json.loads(audit.stdout)


def test_the_launcher_runs_supervises_and_stops_the_whole_system(data_dir: Path) -> None:
    launcher = start_launcher(data_dir, Ports.free())
    try:
        launcher.wait_for(READY_MARKER, START_BOUND_SECONDS)
        unknown = f"{launcher.api}/generations/{uuid.uuid4()}"
        with httpx.Client(trust_env=False, timeout=15) as http:
            found = http.get(unknown, headers={"authorization": f"Bearer {launcher.token}"})
            anonymous = http.get(unknown)
            submitted = http.post(
                f"{launcher.api}/generations",
                headers={"authorization": f"Bearer {launcher.token}",
                         "idempotency-key": str(uuid.uuid4())},
                json={"mode": "imagine", "prompt": "a bright japandi living room"},
            )  # fmt: skip

        assert found.status_code == 404
        assert found.json()["error"]["code"] == "NOT_FOUND"
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"
        assert submitted.status_code == 202, submitted.text
        for service, port in (
            ("interior.generation.v1.GenerationService", launcher.ports.generation_grpc),
            ("interior.usage.v1.UsageService", launcher.ports.usage_grpc),
        ):
            listed = grpcurl(f"127.0.0.1:{port}", "list").split()
            assert {service, "grpc.health.v1.Health"} <= set(listed)
            health = grpcurl(f"127.0.0.1:{port}", "grpc.health.v1.Health/Check")
            assert json.loads(health) == {"status": "SERVING"}
        assert_service_identity_is_on(launcher)
        # Envoy's metrics on the port the banner prints, the submission counted.
        stats = httpx.get(
            f"http://127.0.0.1:{launcher.ports.envoy_stats}/stats/prometheus", trust_env=False
        )
        assert stats.status_code == 200
        assert 'envoy_cluster_name="edge_api"' in stats.text
        assert any(f"{launcher.ports.envoy_stats}/stats/prometheus" in x for x in launcher.lines)

        # A part that dies is started again.
        edge_pid = launcher.unit_pids()["edge-api"][0]
        os.kill(edge_pid, signal.SIGKILL)
        launcher.wait_for("was killed by signal 9", 30)
        launcher.wait_for("is back", 60)
        assert launcher.unit_pids()["edge-api"] not in ([], [edge_pid])
        with httpx.Client(trust_env=False, timeout=15) as http:
            again = http.get(unknown, headers={"authorization": f"Bearer {launcher.token}"})
        assert again.status_code == 404

        stop_and_check(launcher, signal.SIGTERM)
    finally:
        _kill_leftovers(launcher)

    # The same data directory comes back with its data; SIGINT stops it the same way.
    second = start_launcher(data_dir, Ports.free())
    try:
        second.wait_for(READY_MARKER, START_BOUND_SECONDS)
        with httpx.Client(trust_env=False, timeout=15) as http:
            job = http.get(
                f"{second.api}/generations/{submitted.json()['id']}",
                headers={"authorization": f"Bearer {second.token}"},
            )
        assert job.status_code == 200
        assert job.json()["id"] == submitted.json()["id"]

        stop_and_check(second, signal.SIGINT)
    finally:
        _kill_leftovers(second)


def test_a_port_in_use_is_refused_with_the_variable_to_set(data_dir: Path) -> None:
    ports = Ports.free()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.public))
        taken.listen()
        launcher = start_launcher(data_dir, ports)
        code = launcher.process.wait(timeout=30)
        launcher.wait_for("is in use", 5)
        assert launcher.pumped.wait(5)

    assert code == 2
    assert f"port {ports.public} is in use: set PUBLIC_PORT=" in launcher.lines[-1]
    assert not (data_dir / "postgres").exists()  # nothing was started


def test_a_data_dir_that_cannot_be_made_is_refused_by_name(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    launcher = start_launcher(not_a_dir / "data", Ports.free())
    code = launcher.process.wait(timeout=30)
    launcher.wait_for("cannot be used", 5)
    assert launcher.pumped.wait(5)

    assert code == 2
    assert launcher.lines[-1].startswith(
        f"!! LAUNCHER_DATA_DIR={not_a_dir / 'data'} cannot be used"
    )
    assert not any("Traceback" in line for line in launcher.lines)


def _kill_leftovers(launcher: Launcher) -> None:
    """Only after a failed assertion: leave no process behind for the next tests."""
    if launcher.process.poll() is not None:
        return
    try:
        started = everything_started(launcher)
    except (OSError, ValueError, KeyError):
        started = set()
    launcher.process.send_signal(signal.SIGTERM)
    try:
        launcher.process.wait(timeout=STOP_BOUND_SECONDS)
    except subprocess.TimeoutExpired:
        launcher.process.kill()
        launcher.process.wait()
    launcher.pumped.wait(5)
    for pid, _ in filter(_running, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_launcher_stops_when_the_process_that_started_it_dies(data_dir: Path) -> None:
    """`make run` killed on its own (``timeout``, a process manager): nothing stays up."""
    parent = start_launcher(data_dir, Ports.free(), via_parent=True)
    started: set[tuple[int, str]] = set()
    try:
        parent.wait_for(READY_MARKER, START_BOUND_SECONDS)
        started = everything_started(parent)  # the launcher is the parent's child
        assert len(started) >= 9

        parent.process.kill()
        parent.process.wait(timeout=10)

        parent.wait_for("gone: stopping", 10)
        assert_all_gone(parent, started, STOP_BOUND_SECONDS)
    finally:
        _kill_leftovers(parent)
        for pid, _ in filter(_running, started):  # only after a failed assertion
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_reload_restarts_only_the_service_whose_source_changed(
    data_dir: Path, tmp_path: Path
) -> None:
    """`make run RELOAD=1`, watching a copy of the source layout (the repo stays as is)."""
    root = tmp_path / "repo"
    edge_source = root / SERVICE_SOURCES["edge-api"] / "edge_api" / "app.py"
    for directory in [*SERVICE_SOURCES.values(), *SHARED_SOURCES]:
        (root / directory).mkdir(parents=True)
    edge_source.parent.mkdir()
    edge_source.write_text("VALUE = 1\n")
    launcher = start_launcher(
        data_dir,
        Ports.free(),
        extra_env={"LAUNCHER_RELOAD": "1", "LAUNCHER_RELOAD_ROOT": str(root)},
    )
    try:
        launcher.wait_for(READY_MARKER, START_BOUND_SECONDS)
        launcher.wait_for("==> reload on", 10)
        before = launcher.unit_pids()

        edge_source.write_text("VALUE = 2\n")
        launcher.wait_for("reloaded", 60)

        after = launcher.unit_pids()
        assert after["edge-api"] not in ([], before["edge-api"])
        assert {k: v for k, v in after.items() if k != "edge-api"} == {
            k: v for k, v in before.items() if k != "edge-api"
        }
        assert [line for line in launcher.lines if "changed: restarting" in line] == [
            next(line for line in launcher.lines if "edge API" in line and "changed" in line)
        ]
        with httpx.Client(trust_env=False, timeout=15) as http:
            found = http.get(
                f"{launcher.api}/generations/{uuid.uuid4()}",
                headers={"authorization": f"Bearer {launcher.token}"},
            )
        assert found.status_code == 404  # the new edge serves through Envoy
        stop_and_check(launcher, signal.SIGTERM)
    finally:
        _kill_leftovers(launcher)
