"""Alembic environment of the generation service (async, under an advisory lock)."""

from generation.persistence.models import Base
from kit.migrations import run_env

# Any constant unique to this service: serializes concurrent migration runs.
MIGRATION_LOCK_ID = 7_420_001

run_env(Base.metadata, MIGRATION_LOCK_ID, version_table="alembic_version_generation")
