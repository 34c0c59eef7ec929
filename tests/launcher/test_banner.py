"""The ready banner of `make run`: the web client's sign-in link."""

from __future__ import annotations

from pathlib import Path

from launcher.banner import render
from launcher.config import LauncherConfig


def test_the_banner_links_the_web_client_with_the_dev_token(tmp_path: Path) -> None:
    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": str(tmp_path), "PUBLIC_PORT": "1"})

    lines = render(config, "dev.token.value").splitlines()

    assert "  http://127.0.0.1:1/#token=dev.token.value" in lines
