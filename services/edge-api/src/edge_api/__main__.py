"""``python -m edge_api``: settings, logging, then uvicorn until SIGTERM.

``--check-config`` validates and prints the configuration (secrets masked) without serving.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import uvicorn

from edge_api.app import create_app
from edge_api.settings import EdgeSettings
from kit.logging import configure_logging, get_logger
from kit.opscli import check_config, parse_command
from kit.runtime_config import RuntimeConfigError, load_runtime_config
from kit.settings import load_settings
from kit.tracing import setup_tracing


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM / SIGINT; in-flight requests get the shutdown grace."""
    if parse_command("edge_api", argv, migrate=False).check_config:
        return check_config("edge_api", EdgeSettings)
    settings = load_settings(EdgeSettings)
    configure_logging("edge-api", settings.log_level)
    setup_tracing("edge-api")
    log = get_logger("edge_api")
    try:
        runtime_config = load_runtime_config(settings.runtime_config_file)
    except RuntimeConfigError as error:
        log.error("edge.bad_runtime_config", error=str(error))
        return 2
    config = uvicorn.Config(
        create_app(settings, runtime_config),
        host=settings.edge_http_host,
        port=settings.edge_http_port,
        # Forwarding headers are interpreted by the app (trusted peers only), in one place.
        proxy_headers=False,
        server_header=False,
        access_log=False,  # the app writes its own structured access log
        log_config=None,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    log.info("edge.listening", host=settings.edge_http_host, port=settings.edge_http_port)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
