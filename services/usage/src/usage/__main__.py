"""``python -m usage``: settings, logs, migrations, then serve until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from kit.logging import configure_logging, get_logger
from kit.metrics import start_metrics_server
from kit.runtime_config import RuntimeConfigError, load_runtime_config
from kit.settings import load_settings
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate

log = get_logger("usage")


async def serve(settings: UsageSettings) -> None:
    """Migrate, start, and run until SIGTERM/SIGINT; then stop gracefully."""
    config = load_runtime_config(settings.runtime_config_file)
    await migrate(settings.database_url.get_secret_value())
    log.info("usage.migrated")
    server, _ = build_server(settings, runtime_config=config)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    await server.serve_until_signal(settings.shutdown_grace_seconds)


def main() -> int:
    """Entry point; returns the exit code (exits with a message on bad settings)."""
    settings = load_settings(UsageSettings)
    configure_logging("usage", settings.log_level)
    try:
        asyncio.run(serve(settings))
    except RuntimeConfigError as error:
        log.error("usage.bad_runtime_config", error=str(error))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
