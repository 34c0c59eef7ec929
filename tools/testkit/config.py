"""The repository's runtime config file, for tests.

kit does not know where it is installed; the tests do know the repository they
run in, so they name its config file explicitly (the plugin also exports it as
``RUNTIME_CONFIG_FILE`` for services the tests start).
"""

from __future__ import annotations

from pathlib import Path

REPO_RUNTIME_CONFIG = Path(__file__).resolve().parents[2] / "config" / "runtime.toml"
