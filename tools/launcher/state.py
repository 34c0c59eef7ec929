"""The launcher's state file: what runs where, for people and for tests.

``<data dir>/launcher.json`` names the launcher's pid, the ports, and the pids
of every part it started; it is rewritten after each (re)start and removed on a
clean stop. A file left behind means a launcher was killed: the next one stops
the parts it left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from launcher.config import LauncherConfig
from launcher.units import Unit


def state_path(config: LauncherConfig) -> Path:
    return config.data_dir / "launcher.json"


def write(config: LauncherConfig, units: Sequence[Unit], *, ready: bool) -> None:
    """Replace the state file atomically."""
    document = {
        "pid": os.getpid(),
        "ready": ready,
        "ports": asdict(config.ports),
        "logs": str(config.logs_dir),
        "units": {unit.name: unit.pids() for unit in units},
    }
    path = state_path(config)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)


def remove(config: LauncherConfig) -> None:
    """Forget the state (everything has stopped)."""
    state_path(config).unlink(missing_ok=True)


def reap_orphans(config: LauncherConfig, grace: float = 10.0) -> list[str]:
    """Stop the parts a launcher that was killed left running on this data directory.

    Only processes that carry this data directory in their environment (every
    child gets ``LAUNCHER_DATA_DIR``) are touched, so a reused pid is safe.
    PostgreSQL is not handled here: starting it stops a stale server itself.
    Call it while holding the data directory's lock. Returns the parts stopped.
    """
    path = state_path(config)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    marker = f"LAUNCHER_DATA_DIR={config.data_dir}".encode()
    stopped: list[str] = []
    for name, pids in dict(document.get("units", {})).items():
        for pid in pids if name != "postgres" else []:
            if _carries(pid, marker):
                _terminate_group(int(pid), grace)
                stopped.append(name)
    path.unlink(missing_ok=True)
    return stopped


def _carries(pid: int, marker: bytes) -> bool:
    try:
        environ = Path(f"/proc/{int(pid)}/environ").read_bytes()
    except (OSError, ValueError):
        return False
    return marker in environ.split(b"\0")


def _terminate_group(pid: int, grace: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"
