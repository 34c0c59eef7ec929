"""``python -m replicate_emulator``: serve the emulator with uvicorn.

Settings come from ``EMULATOR_*`` variables (see config.py); flags override them.
The token and the webhook secret are taken from the environment only, so they
never show in a process list.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import uvicorn

from kit.logging import configure_logging, get_logger
from replicate_emulator.app import create_app
from replicate_emulator.config import EmulatorConfig, config_from_env


def parse_args(argv: Sequence[str], defaults: EmulatorConfig) -> EmulatorConfig:
    """Apply command-line flags on top of ``defaults``."""
    parser = argparse.ArgumentParser(
        prog="python -m replicate_emulator", description="Local Replicate API emulator"
    )
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--public-url", default=defaults.public_url)
    parser.add_argument("--start-delay-ms", type=float, default=defaults.start_delay_seconds * 1000)
    parser.add_argument("--run-delay-ms", type=float, default=defaults.run_delay_seconds * 1000)
    parser.add_argument(
        "--data-retention-seconds", type=float, default=defaults.data_retention_seconds
    )
    parser.add_argument(
        "--webhook-retry-base-seconds", type=float, default=defaults.webhook_retry_base_seconds
    )
    parser.add_argument("--webhook-max-attempts", type=int, default=defaults.webhook_max_attempts)
    parser.add_argument("--log-level", default=defaults.log_level)
    args = parser.parse_args(list(argv))
    return defaults.replace(
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        start_delay_seconds=args.start_delay_ms / 1000,
        run_delay_seconds=args.run_delay_ms / 1000,
        data_retention_seconds=args.data_retention_seconds,
        webhook_retry_base_seconds=args.webhook_retry_base_seconds,
        webhook_max_attempts=args.webhook_max_attempts,
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Build the config, configure logging and serve until SIGINT/SIGTERM."""
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, config_from_env(os.environ))
    except ValueError as exc:
        raise SystemExit(f"replicate_emulator: {exc}") from exc
    configure_logging("replicate-emulator", config.log_level)
    get_logger("replicate_emulator").info(
        "emulator.starting", host=config.host, port=config.port, baseUrl=config.base_url
    )
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
