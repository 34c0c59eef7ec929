"""The emulator's configuration: one frozen dataclass, built from env and flags.

Tests build :class:`EmulatorConfig` directly with tiny delays; ``python -m
replicate_emulator`` builds it from ``EMULATOR_*`` variables and command-line flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kit.dev_values import DEV_REPLICATE_TOKEN, DEV_WEBHOOK_SECRET

DEFAULT_TOKEN = DEV_REPLICATE_TOKEN
DEFAULT_WEBHOOK_SECRET = DEV_WEBHOOK_SECRET


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator needs to run; all timings in seconds."""

    host: str = "127.0.0.1"
    port: int = 8090
    token: str = DEFAULT_TOKEN
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    # Base of prediction URLs and output file URLs; None means http://host:port.
    public_url: str | None = None
    start_delay_seconds: float = 0.3
    run_delay_seconds: float = 1.5
    data_retention_seconds: float = 3600.0
    webhook_retry_base_seconds: float = 1.0
    # 1 + 2 + 4 + 8 + 16 + 32 s between the attempts: about a minute, as Replicate's.
    webhook_max_attempts: int = 7
    # Replicate sends output and logs events at most once per 500 ms (start and
    # completed always): one that comes sooner after the last sent one is dropped.
    webhook_throttle_seconds: float = 0.5
    webhook_timeout_seconds: float = 5.0
    fetch_timeout_seconds: float = 10.0
    max_input_bytes: int = 20 * 1024 * 1024
    # Replicate's documented floor for Cancel-After; tests lower it to stay fast.
    min_cancel_after_seconds: float = 5.0
    prefer_wait_max_seconds: float = 60.0
    log_level: str = "INFO"

    @property
    def base_url(self) -> str:
        """Root URL clients use (no trailing slash, no /v1)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def replace(self, **changes: Any) -> EmulatorConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def _ms(value: str) -> float:
    return float(value) / 1000.0


# env variable -> (field, converter)
_ENV_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "EMULATOR_HOST": ("host", str),
    "EMULATOR_PORT": ("port", int),
    "EMULATOR_TOKEN": ("token", str),
    "EMULATOR_WEBHOOK_SECRET": ("webhook_secret", str),
    "EMULATOR_PUBLIC_URL": ("public_url", str),
    "EMULATOR_START_DELAY_MS": ("start_delay_seconds", _ms),
    "EMULATOR_RUN_DELAY_MS": ("run_delay_seconds", _ms),
    "EMULATOR_DATA_RETENTION_SECONDS": ("data_retention_seconds", float),
    "EMULATOR_WEBHOOK_RETRY_BASE_SECONDS": ("webhook_retry_base_seconds", float),
    "EMULATOR_WEBHOOK_MAX_ATTEMPTS": ("webhook_max_attempts", int),
    "EMULATOR_WEBHOOK_THROTTLE_MS": ("webhook_throttle_seconds", _ms),
    "EMULATOR_WEBHOOK_TIMEOUT_SECONDS": ("webhook_timeout_seconds", float),
    "EMULATOR_FETCH_TIMEOUT_SECONDS": ("fetch_timeout_seconds", float),
    "EMULATOR_MIN_CANCEL_AFTER_SECONDS": ("min_cancel_after_seconds", float),
    "LOG_LEVEL": ("log_level", str),
}


def config_from_env(environ: Mapping[str, str]) -> EmulatorConfig:
    """Build a config from ``EMULATOR_*`` variables; unset ones keep their defaults."""
    values: dict[str, Any] = {}
    for name, (field, convert) in _ENV_FIELDS.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[field] = convert(raw)
        except ValueError as exc:
            raise ValueError(f"{name} has an invalid value") from exc
    return dataclasses.replace(EmulatorConfig(), **values)
