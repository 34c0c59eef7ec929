"""Operator commands every service shares: ``--check-config`` (``migrate``: kit.migrate_command).

``python -m <service> --check-config`` builds the settings exactly as a start
would (production checks included) and reads the runtime config file, then
prints what would be used as JSON with every secret masked, or names the
problem on stderr and exits 2. The ``migrate`` command lives apart because it
needs SQLAlchemy and Alembic, which the services without a database never import.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pydantic
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

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
            choices=["migrate", "check-schema"],
            help="migrate: apply the database migrations and exit; check-schema: exit 0 when"
            " the database is at (or past) this release's migrations, 3 when behind"
            " (default: serve)",
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
