"""Running a service's operator commands as an operator would: a subprocess of the venv."""

from __future__ import annotations

import os
import subprocess
import sys

# Variables a test sets itself; inherited ones would decide the outcome instead.
_OWNED = (
    "APP_ENV",
    "DATABASE_URL",
    "GENERATION_DATABASE_URL",
    "USAGE_DATABASE_URL",
    "S3_ENDPOINT",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "REPLICATE_API_TOKEN",
    "REPLICATE_WEBHOOK_SECRET",
    "WEBHOOK_BASE_URL",
    "AUTH_JWT_SECRET",
    "AUTH_JWKS_URL",
    "RUNTIME_CONFIG_FILE",
)


def run_service(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` with only ``env`` on top of a cleaned environment."""
    base = {k: v for k, v in os.environ.items() if k not in _OWNED}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **env},
    )
