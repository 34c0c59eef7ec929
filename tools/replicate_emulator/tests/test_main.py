"""``python -m replicate_emulator`` as ``make run`` starts it: env, JSON logs, SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import httpx

from launcher.components import ChildProcess, free_port, wait_http_ok
from replicate_emulator.config import config_from_env


def test_entry_point_serves_and_logs_json(tmp_path: Path) -> None:
    port = free_port()
    token = "r8_cli_test_token"
    log_path = tmp_path / "emulator.log"
    child = ChildProcess(
        "emulator",
        [sys.executable, "-m", "replicate_emulator", "--run-delay-ms", "50"],
        env={
            "EMULATOR_PORT": str(port),
            "EMULATOR_TOKEN": token,
            "EMULATOR_START_DELAY_MS": "10",
            "EMULATOR_PUBLIC_URL": f"http://localhost:{port}",
        },
        log_path=log_path,
    )
    child.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/_emulator/health", 20, child)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            created = client.post(
                "/v1/models/google/nano-banana/predictions", json={"input": {"prompt": "den"}}
            ).json()
            assert created["urls"]["get"].startswith(f"http://localhost:{port}/v1/predictions/")
            for _ in range(100):
                done = client.get(f"/v1/predictions/{created['id']}").json()
                if done["status"] == "succeeded":
                    break
                time.sleep(0.02)
            assert done["output"].startswith(f"http://localhost:{port}/files/")
    finally:
        child.stop(grace=10)
    assert child.process is not None
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert child.process.returncode in {0, -signal.SIGTERM}

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    assert {"emulator.starting", "prediction.created", "emulator.stopped"} <= events
    assert token not in log_path.read_text()


def test_config_from_env() -> None:
    config = config_from_env(
        {"EMULATOR_HOST": "0.0.0.0", "EMULATOR_PORT": "9999", "EMULATOR_RUN_DELAY_MS": "250"}
    )
    assert config.port == 9999
    assert config.run_delay_seconds == 0.25
    assert config.base_url == "http://0.0.0.0:9999"
    assert config.token == "r8_dev_emulator_token"
