"""``python -m edge_api``: settings, logging, then uvicorn until SIGTERM.

``--check-config`` validates and prints the configuration (secrets masked) without serving.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from edge_api.app import create_app
from edge_api.feed import JobFeed
from edge_api.settings import EdgeSettings
from kit.logging import configure_logging, get_logger
from kit.opscli import check_config, parse_command
from kit.runtime_config import RuntimeConfigError, load_runtime_config
from kit.settings import load_settings
from kit.tracing import setup_tracing


class EdgeServer(uvicorn.Server):
    """uvicorn's server that, told to stop, first ends the open event streams.

    uvicorn waits for every open connection (up to the grace) before the app's own
    shutdown runs, and an event stream never ends by itself: each one held a stopping
    edge for the whole grace, then was cut. Its client resumes it on any instance
    (Last-Event-ID), so the streams end cleanly as the stop begins.
    """

    def __init__(self, config: uvicorn.Config, feed: JobFeed) -> None:
        super().__init__(config)
        self._feed = feed
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:
            # A signal handler: the streams are woken from the loop, not from here.
            self._loop.call_soon_threadsafe(self._feed.stop_streams)


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
    app = create_app(settings, runtime_config)
    config = uvicorn.Config(
        app,
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
    server = EdgeServer(config, app.state.edge.feed)
    log.info("edge.listening", host=settings.edge_http_host, port=settings.edge_http_port)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
