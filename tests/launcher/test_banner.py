"""The ready banner of `make run`: the web client's sign-in link."""

from __future__ import annotations

from pathlib import Path

from launcher.banner import render
from launcher.config import LauncherConfig


def test_the_banner_links_the_web_client_with_the_dev_token(tmp_path: Path) -> None:
    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": str(tmp_path), "PUBLIC_PORT": "1"})

    lines = render(config, "dev.token.value").splitlines()

    assert "  http://127.0.0.1:1/#token=dev.token.value" in lines


def test_the_operator_command_names_the_usage_service_it_was_started_on(tmp_path: Path) -> None:
    # Without --target it would reach the default port: another checkout's stack, perhaps.
    config = LauncherConfig.from_env(
        {"LAUNCHER_DATA_DIR": str(tmp_path), "USAGE_GRPC_PORT": "6000"}
    )

    [command] = [line for line in render(config, "t").splitlines() if "usage.cli" in line]

    assert "--target 127.0.0.1:6000 audit" in command
