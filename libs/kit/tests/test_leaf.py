"""kit stays a leaf: the modules every service imports pull in no database library."""

from __future__ import annotations

import pytest

from testkit.imports import DATABASE_PACKAGES, packages_loaded_by

# Every kit module the edge and the webhook gateway import (and the gRPC server,
# which they share with the services that have a database).
SERVICE_MODULES = (
    "kit.clock",
    "kit.dev_values",
    "kit.errors",
    "kit.grpc_client",
    "kit.grpc_errors",
    "kit.grpc_interceptors",
    "kit.grpc_server",
    "kit.logging",
    "kit.metrics",
    "kit.modes",
    "kit.opscli",
    "kit.runtime_config",
    "kit.service_identity",
    "kit.settings",
    "kit.storage",
)


def test_the_modules_every_service_imports_need_no_database_library() -> None:
    assert packages_loaded_by(SERVICE_MODULES) & DATABASE_PACKAGES == set()


@pytest.mark.parametrize("module", ["kit.db", "kit.migrate_command"])
def test_the_probe_sees_a_database_library_when_one_is_imported(module: str) -> None:
    # The probe itself works: the database helpers do load SQLAlchemy.
    assert "sqlalchemy" in packages_loaded_by([module])


# Alembic and what it brings (Mako, its autogenerate machinery): about 11 MiB.
MIGRATION_PACKAGES = frozenset({"alembic", "mako"})


def test_the_servers_with_a_database_never_import_alembic() -> None:
    # They migrate at start in a child process (kit.migrate_command.migrate_in_child),
    # and deployments run the one-shot `migrate` step instead.
    serving = ["generation.__main__", "generation.wiring", "usage.__main__", "usage.wiring"]
    loaded = packages_loaded_by(serving)
    assert "sqlalchemy" in loaded
    assert loaded & MIGRATION_PACKAGES == set()


def test_the_probe_sees_alembic_when_a_migration_helper_uses_it() -> None:
    assert packages_loaded_by(["kit.migrations"]) >= MIGRATION_PACKAGES
