"""``python -m webhook_gateway``: settings, logging, uvicorn; stops gracefully on SIGTERM.

``--check-config`` validates and prints the configuration (secrets masked) without serving.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import pydantic
import uvicorn

from kit.logging import configure_logging, get_logger
from kit.opscli import check_config, parse_command
from kit.runtime_config import RuntimeConfigError
from kit.tracing import setup_tracing
from webhook_gateway.app import create_app
from webhook_gateway.settings import GatewaySettings

SERVICE_NAME = "webhook-gateway"


def _settings_problems(error: pydantic.ValidationError) -> str:
    # Without the inputs: a bad secret must not be printed.
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    )


def _stopped_by_signal(signum: int, _: FrameType | None) -> None:
    # uvicorn handles SIGTERM/SIGINT while serving (graceful drain, lifespan shutdown)
    # and re-raises the signal afterwards; ending here makes that a clean exit 0.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    """Build everything from the environment and serve until SIGTERM/SIGINT."""
    if parse_command("webhook_gateway", argv, migrate=False).check_config:
        raise SystemExit(check_config("webhook_gateway", GatewaySettings))
    try:
        settings = GatewaySettings()
    except pydantic.ValidationError as error:
        print(f"{SERVICE_NAME}: invalid settings: {_settings_problems(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(SERVICE_NAME, settings.log_level)
    setup_tracing(SERVICE_NAME)
    log = get_logger("webhook_gateway")
    try:
        app = create_app(settings)
    except RuntimeConfigError as error:
        log.error("gateway.config_invalid", error=str(error))
        raise SystemExit(2) from None
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        lifespan="on",
        # Our JSON logging is already configured; uvicorn must not replace it.
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped_by_signal)
    log.info("gateway.listening", host=settings.http_host, port=settings.http_port)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main(sys.argv[1:])
