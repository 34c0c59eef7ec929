"""Apply one service's migrations and exit (compose one-shot steps, the Kubernetes Job).

    python migrate.py generation    # GENERATION_DATABASE_URL, else DATABASE_URL
    python migrate.py usage         # USAGE_DATABASE_URL, else DATABASE_URL

``alembic upgrade head`` through ``kit.db.run_migrations`` with the service's own
migrations directory, under the same advisory lock the services take, so it is safe
to run while instances start. Neither service has a migrate-only command yet; this
stands in for ``python -m generation migrate`` / ``python -m usage migrate``.
Exit codes: 0 migrated, 2 bad usage or no database URL, 1 the migration failed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

SERVICES = ("generation", "usage")


def database_url(service: str, environ: Mapping[str, str]) -> str | None:
    """The service's URL with the same fallback its settings class uses."""
    for name in (f"{service.upper()}_DATABASE_URL", "DATABASE_URL"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def migrations_dir(service: str) -> Path:
    """The service's Alembic directory: ``<package>/persistence/alembic``.

    Found without importing the package (its wiring pulls in every dependency);
    tests/deploy checks it against the path the service's wiring module uses.
    """
    spec = importlib.util.find_spec(service)
    if spec is None or spec.origin is None:
        raise LookupError(f"the {service} package is not importable")
    return Path(spec.origin).parent / "persistence" / "alembic"


def _redacted(error: Exception, url: str) -> str:
    """The error's first line, without the DSN or its password."""
    text = (str(error).splitlines() or [""])[0]
    password = urlsplit(url).password
    for secret in (url, password):
        if secret:
            text = text.replace(secret, "***")
    return f"{type(error).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Migrate the service named in ``argv``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in SERVICES:
        print(f"usage: migrate.py {{{'|'.join(SERVICES)}}}", file=sys.stderr)
        return 2
    service = args[0]
    url = database_url(service, os.environ)
    if url is None:
        print(f"migrate: set {service.upper()}_DATABASE_URL or DATABASE_URL", file=sys.stderr)
        return 2
    from kit.db import run_migrations

    try:
        asyncio.run(run_migrations(migrations_dir(service), url))
    except Exception as error:
        print(f"migrate: {service} failed: {_redacted(error, url)}", file=sys.stderr)
        return 1
    print(f"migrate: {service} is at head")
    return 0


if __name__ == "__main__":
    sys.exit(main())
