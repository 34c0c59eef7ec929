"""Running a service's operator commands as an operator would: a subprocess of the venv."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kit.service_keys import generate_key_pair, write_private_key

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


@functools.cache
def _identity_dir() -> Path:
    """Service key material for production configurations (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="ops-identity-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    private, public = generate_key_pair()
    write_private_key(root / "service.key", private)
    (root / "trust").mkdir()
    (root / "trust" / "edge-api.pub").write_bytes(public)
    return root


def identity_env(serves: bool) -> dict[str, str]:
    """SERVICE_KEY_FILE (and, for gRPC servers, SERVICE_TRUST_DIR), as production needs."""
    root = _identity_dir()
    env = {"SERVICE_KEY_FILE": str(root / "service.key")}
    if serves:
        env["SERVICE_TRUST_DIR"] = str(root / "trust")
    return env
