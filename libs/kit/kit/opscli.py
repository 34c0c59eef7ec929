"""Operator commands every service shares: ``--check-config`` and ``migrate``.

``python -m <service> --check-config`` builds the settings exactly as a start
would (production checks included) and reads the runtime config file, then
prints what would be used as JSON with every secret masked, or names the
problem on stderr and exits 2. ``python -m generation|usage migrate`` applies
the service's migrations and exits: it needs only the database URL, so a
one-shot step or init container gets no other secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pydantic
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from kit.db import run_migrations
from kit.logging import configure_logging, get_logger
from kit.runtime_config import RuntimeConfigError, load_runtime_config
from kit.settings import ServiceSettings

MASK = "***"
# A field or query parameter with one of these in its name holds a secret.
_SECRET_NAME = re.compile(r"secret|token|password|passwd|key|credential", re.IGNORECASE)
EXIT_BAD_CONFIG = 2
EXIT_FAILED = 1


def parse_command(service: str, argv: Sequence[str] | None, *, migrate: bool) -> argparse.Namespace:
    """``[--check-config]`` (and ``migrate`` for services with a database); none: serve.

    ``argv`` is the arguments after the module name; None is no arguments, so a
    caller that runs the entry point in-process never picks up its own argv.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {service}")
    if migrate:
        parser.add_argument(
            "command",
            nargs="?",
            choices=["migrate"],
            help="apply the database migrations and exit (default: serve)",
        )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the environment and runtime config, print them (secrets masked), exit",
    )
    args = parser.parse_args(list(argv or ()))
    if not migrate:
        args.command = None
    return args


def is_secret_name(name: str) -> bool:
    """True for names such as ``S3_SECRET_KEY``, ``replicate_api_token``, ``password``."""
    return _SECRET_NAME.search(name) is not None


def mask_url(text: str) -> str:
    """``text`` with a URL's password (userinfo, secret-named query parameters) masked."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked_pairs = [(k, MASK if is_secret_name(k) else v) for k, v in pairs]
        query = urlencode(masked_pairs, safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def masked(value: Any, name: str = "") -> Any:
    """A JSON-ready copy of ``value``: secrets (by type or by name) and URL passwords masked."""
    if value is None:
        return None
    if is_secret_name(name):
        return MASK
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        # A URL keeps its shape (host, database) so an operator can check it.
        return mask_url(secret) if _is_url(secret) else MASK
    if isinstance(value, dict):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked(item) for item in value]
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, bool | int | float):
        return value
    return mask_url(str(value))


def _is_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc)


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable a settings field is read from (the first one it accepts)."""
    if field.alias:
        return field.alias
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return name.upper()


def settings_view(settings: BaseSettings) -> dict[str, Any]:
    """Every setting by its variable name, masked; a field is secret by either name."""
    view: dict[str, Any] = {}
    for name, field in type(settings).model_fields.items():
        variable = env_name(name, field)
        secret_named = is_secret_name(name) or is_secret_name(variable)
        view[variable] = masked(getattr(settings, name), "secret" if secret_named else "")
    return view


def validation_problems(error: pydantic.ValidationError) -> str:
    """The problems, each naming its variable, without the values (a secret may be one)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    )


def check_config(service: str, settings_cls: type[ServiceSettings]) -> int:
    """``--check-config``: print the masked configuration (exit 0) or the problem (exit 2)."""
    try:
        settings = settings_cls()
        runtime_config = load_runtime_config(settings.runtime_config_file)
    except pydantic.ValidationError as error:
        print(f"{service}: invalid configuration: {validation_problems(error)}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except RuntimeConfigError as error:
        print(f"{service}: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    report = {
        "service": service,
        "appEnv": settings.app_env.value,
        "settings": settings_view(settings),
        "runtimeConfig": masked(runtime_config.model_dump(mode="json")),
    }
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


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


def migrate(service: str, settings_cls: type[BaseSettings], migrations: Path) -> int:
    """``migrate``: ``alembic upgrade head`` under the advisory lock; the exit code.

    0 at head (a ``migrate.at_head`` log line), 2 no usable database URL (on stderr),
    1 the migration failed (a ``migrate.failed`` line without the DSN or its password).
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
        asyncio.run(run_migrations(migrations, url))
    except Exception as error:  # any failure is reported, never a traceback
        log.error("migrate.failed", error=_redacted(error, url))
        return EXIT_FAILED
    log.info("migrate.at_head", database=mask_url(url))
    return 0
