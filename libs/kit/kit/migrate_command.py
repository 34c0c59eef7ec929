"""``python -m generation|usage migrate``: apply the service's migrations and exit.

It needs only the database URL, so a one-shot step or init container gets no
other secret. Only the services with a database import this module (it pulls in
SQLAlchemy through kit.db; Alembic only when a migration runs).

A service that migrates at start (``make run``, the test stacks; deployments run the
one-shot step instead) runs this same command as a child process and waits for it
(:func:`migrate_in_child`): Alembic, with Mako and its autogenerate machinery, is
about 11 MiB that a server importing it would hold for its whole life.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pydantic
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kit.db import SchemaAhead, SchemaBehind, run_migrations
from kit.logging import configure_logging, get_logger
from kit.opscli import EXIT_BAD_CONFIG, EXIT_FAILED, MASK, mask_url, validation_problems

# ``check-schema``: the database is behind this release (run ``migrate`` first).
EXIT_SCHEMA_BEHIND = 3


class MigrationFailed(Exception):
    """The migration child ended without reaching head (its own lines say why)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"the migration ended with exit code {exit_code}")
        self.exit_code = exit_code


async def prepare_schema(module: str, run_migrations: bool) -> None:
    """Before a server starts: migrate (``run_migrations``), or check that a one-shot
    step did (``check-schema``): a schema behind the code raises MigrationFailed
    (EXIT_SCHEMA_BEHIND). A check the database could not answer (down at start) lets
    the server start: it reports NOT_SERVING until its database answers, as before."""
    if run_migrations:
        await migrate_in_child(module)
        return
    try:
        await migrate_in_child(module, "check-schema")
    except MigrationFailed as error:
        if error.exit_code == EXIT_SCHEMA_BEHIND:
            raise
        get_logger("migrate").warning("migrate.schema_unchecked", exitCode=error.exit_code)


def not_started_because(error: MigrationFailed) -> str:
    """Why a service did not start, for its stderr."""
    if error.exit_code == EXIT_SCHEMA_BEHIND:
        return "the database schema is behind this release: run its migrate step first"
    return str(error)


class MigrationStopped(Exception):
    """SIGTERM or SIGINT came while the migration ran: the child was stopped with it."""


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def migrate_in_child(module: str, command: str = "migrate") -> None:
    """``python -m <module> migrate`` (or ``check-schema``) in a child process, waited for.

    The child reads the same environment as this process and writes its JSON lines
    to the same stdout and stderr. Cancelled, or the service asked to stop (SIGTERM,
    SIGINT: the server's own handlers come later) while it migrates, the child is
    killed: PostgreSQL rolls its transaction back and releases the advisory lock, and
    no migration outlives the service. Raises MigrationFailed, or MigrationStopped.
    """
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", module, command)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signalled = False

    def stop() -> None:
        nonlocal signalled
        signalled = True
        if task is not None:
            task.cancel()

    for number in _STOP_SIGNALS:
        loop.add_signal_handler(number, stop)
    try:
        code = await child.wait()
    except BaseException:
        if child.returncode is None:
            child.kill()
            await asyncio.shield(child.wait())
        if signalled and task is not None and task.uncancel() == 0:
            raise MigrationStopped from None
        raise
    finally:
        for number in _STOP_SIGNALS:
            loop.remove_signal_handler(number)
    if code != 0:
        raise MigrationFailed(code)


class _DatabaseOnly(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)


def database_url(settings_cls: type[BaseSettings]) -> str:
    """The service's database URL, read as its settings read it (same variables, fallback).

    Only this field is read, so a migration step needs no other variable.
    """
    field = settings_cls.model_fields["database_url"]
    model = pydantic.create_model(
        f"{settings_cls.__name__}Database", __base__=_DatabaseOnly, database_url=(SecretStr, field)
    )
    value = getattr(model(), "database_url")  # noqa: B009 - a dynamic model's field
    assert isinstance(value, SecretStr)
    return value.get_secret_value()


def _redacted(error: BaseException, url: str) -> str:
    """The error's first line, without the DSN or its password."""
    text = (str(error).splitlines() or [""])[0]
    password = urlsplit(url).password
    for secret in (url, password):
        if secret:
            text = text.replace(secret, MASK)
    return f"{type(error).__name__}: {text}"


def migrate(
    service: str, settings_cls: type[BaseSettings], migrations: Path, *, check_only: bool = False
) -> int:
    """``migrate``: ``alembic upgrade head`` under the advisory lock; the exit code.

    0 at head (a ``migrate.at_head`` log line) or at a later release's revision
    (``migrate.schema_ahead``: nothing done, the older code serves the newer schema),
    2 no usable database URL (on stderr), 1 the migration failed (a ``migrate.failed``
    line without the DSN or its password). ``check_only`` (``check-schema``): changes
    nothing, 3 when the database is behind this release (``migrate.schema_behind``).
    """
    try:
        url = database_url(settings_cls)
    except pydantic.ValidationError as error:
        print(f"{service} migrate: {validation_problems(error)}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    # Alembic's and SQLAlchemy's records too: a Job's output is collected like a pod's.
    configure_logging(service)
    log = get_logger("migrate")
    try:
        asyncio.run(run_migrations(migrations, url, check_only=check_only))
    except SchemaAhead as ahead:
        log.warning("migrate.schema_ahead", revision=ahead.revision, database=mask_url(url))
        return 0
    except SchemaBehind as behind:
        log.error("migrate.schema_behind", at=behind.stored, needs=behind.heads)
        return EXIT_SCHEMA_BEHIND
    except Exception as error:  # any failure is reported, never a traceback
        log.error("migrate.failed", error=_redacted(error, url))
        return EXIT_FAILED
    log.info("migrate.at_head", database=mask_url(url))
    return 0
