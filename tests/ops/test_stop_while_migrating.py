"""A service stopped while it migrates at start stops its migration too.

``python -m generation|usage`` (README "One service alone") migrates in a child
process before it serves. A SIGTERM then killed the service at once (its handlers
come with the server) and left the child migrating, parentless, against the database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.support import _OWNED

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A port that accepts connections and never answers: a migration waits on it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("service", ["generation", "usage"])
def test_sigterm_while_migrating_ends_the_migration_and_the_service(
    service: str, silent_database: int
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _OWNED}
    env |= {
        "APP_ENV": "development",
        f"{service.upper()}_DATABASE_URL": (
            f"postgresql+asyncpg://postgres@127.0.0.1:{silent_database}/{service}"
        ),
        f"{service.upper()}_GRPC_PORT": "0",
        f"{service.upper()}_METRICS_PORT": "0",
        "RUNTIME_CONFIG_FILE": str(REPO / "config" / "runtime.toml"),
        # Read at start, never reached: the service stops before it serves.
        "S3_ENDPOINT": "127.0.0.1:9",
        "S3_ACCESS_KEY": "unused",
        "S3_SECRET_KEY": "unused-secret",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", service],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    migration: int | None = None
    try:
        deadline = time.monotonic() + 45
        while migration is None and time.monotonic() < deadline:
            migration = next(iter(_children(process.pid)), None)
            time.sleep(0.05)
        if migration is None:
            process.kill()
            pytest.fail(f"the migration child never started: {process.communicate()[0]}")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        # Reaped by the service before it exits: gone, not a parentless process.
        assert not _running(migration), output
        assert process.returncode == 0, output
        assert '"stopped while migrating"' in output
    finally:
        for pid in [migration] if migration else []:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
