"""``python -m usage``: settings, logs, migrations, then serve until SIGTERM.

``python -m usage migrate`` only applies the migrations; ``--check-config``
validates and prints the configuration (secrets masked) without serving.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from kit.logging import configure_logging, get_logger
from kit.metrics import start_metrics_server
from kit.migrate_command import (
    MigrationFailed,
    MigrationStopped,
    migrate,
    not_started_because,
    prepare_schema,
)
from kit.opscli import check_config, parse_command
from kit.runtime_config import RuntimeConfigError, load_runtime_config
from kit.settings import load_settings
from kit.tracing import setup_tracing
from usage.settings import UsageSettings
from usage.wiring import MIGRATIONS_DIR, build_server

log = get_logger("usage")


async def serve(settings: UsageSettings) -> None:
    """Migrate, start, and run until SIGTERM/SIGINT; then stop gracefully."""
    config = load_runtime_config(settings.runtime_config_file)
    # In a child process: this one never imports Alembic (kit.migrate_command). Not
    # migrating at start (a one-shot step does it), it still never serves a schema
    # behind its code: check-schema refuses the start until the step has run.
    await prepare_schema("usage", settings.run_migrations)
    if settings.run_migrations:
        log.info("usage.migrated")
    server, _ = build_server(settings, runtime_config=config)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    await server.serve_until_signal(settings.shutdown_grace_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (exits with a message on bad settings)."""
    args = parse_command("usage", argv, migrate=True)
    if args.check_config:
        return check_config("usage", UsageSettings)
    if args.command in ("migrate", "check-schema"):
        check_only = args.command == "check-schema"
        return migrate("usage", UsageSettings, MIGRATIONS_DIR, check_only=check_only)
    settings = load_settings(UsageSettings)
    configure_logging("usage", settings.log_level)
    setup_tracing("usage")
    try:
        asyncio.run(serve(settings))
    except RuntimeConfigError as error:
        log.error("usage.bad_runtime_config", error=str(error))
        return 2
    except MigrationFailed as error:
        print(f"usage: not started: {not_started_because(error)}", file=sys.stderr)
        return 1
    except MigrationStopped:
        log.info("usage.stopped", reason="stopped while migrating")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
