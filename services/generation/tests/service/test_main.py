"""``python -m generation`` as a real process: migrates, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from generation.wiring import SERVICE_NAME
from launcher.components import free_port
from testkit.grpc_health import serve_until_sigterm
from testkit.plugin import S3Endpoint


async def test_starts_serves_and_stops_gracefully(
    database_factory: Callable[[str], str], s3_server: S3Endpoint, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **s3_server.env(),
        "GENERATION_DATABASE_URL": database_factory("gen_main"),
        "GENERATION_GRPC_PORT": str(port),
        "SHUTDOWN_GRACE_SECONDS": "2",
    }
    code, output = await serve_until_sigterm(
        "generation", env, port, SERVICE_NAME, tmp_path / "generation.log"
    )
    assert code == 0, output
    assert '"event": "grpc.stopping"' in output
    assert '"event": "grpc.stopped"' in output


async def test_a_bad_runtime_config_stops_the_start_naming_the_key(
    tmp_path: Path, s3_server: S3Endpoint
) -> None:
    bad = tmp_path / "runtime.toml"
    bad.write_text('[plans.free]\nname = "free"\nmonthly_generations = "lots"\n')
    env = {
        **os.environ,
        **s3_server.env(),
        "GENERATION_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
        "RUNTIME_CONFIG_FILE": str(bad),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "generation"],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"plans.free.monthly_generations" in result.stderr
    assert b"Traceback" not in result.stderr
