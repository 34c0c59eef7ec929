"""`python -m generation`: migrate, serve gRPC, sweep, stop gracefully on SIGTERM.

``python -m generation migrate`` only applies the migrations; ``--check-config``
validates and prints the configuration (secrets masked) without serving.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from generation.settings import GenerationSettings
from generation.wiring import MIGRATIONS, build_app
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


async def main() -> None:
    settings = load_settings(GenerationSettings)
    configure_logging("generation", settings.log_level)
    setup_tracing("generation")
    log = get_logger("generation")
    if not settings.replicate_api_base_url.startswith(("http://127.", "http://localhost")):
        log.info("provider.remote", baseUrl=settings.replicate_api_base_url)
    # A bad runtime config stops the start before anything else is done (exit 2).
    config = load_runtime_config(settings.runtime_config_file)
    # In a child process: this one never imports Alembic (kit.migrate_command). Not
    # migrating at start (a one-shot step does it), it still never serves a schema
    # behind its code: check-schema refuses the start until the step has run.
    await prepare_schema("generation", settings.run_migrations)
    settings = settings.model_copy(update={"run_migrations": False})
    app = await build_app(settings, runtime_config=config)
    if app.sweeper is not None:
        app.sweeper.start()
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    await app.server.serve_until_signal(settings.shutdown_grace_seconds)


def run(argv: Sequence[str] | None = None) -> None:
    """Serve (no arguments), or run one operator command and exit with its code."""
    args = parse_command("generation", argv, migrate=True)
    if args.check_config:
        raise SystemExit(check_config("generation", GenerationSettings))
    if args.command in ("migrate", "check-schema"):
        check_only = args.command == "check-schema"
        raise SystemExit(
            migrate("generation", GenerationSettings, MIGRATIONS, check_only=check_only)
        )
    try:
        asyncio.run(main())
    except RuntimeConfigError as error:
        print(f"generation: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except MigrationFailed as error:
        print(f"generation: not started: {not_started_because(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    except MigrationStopped:
        get_logger("generation").info("generation.stopped", reason="stopped while migrating")


if __name__ == "__main__":
    run(sys.argv[1:])
