"""Alembic environment of the usage service (async, under an advisory lock)."""

from kit.migrations import run_env
from usage.persistence.models import metadata

# Arbitrary but fixed: two usage instances starting at once migrate one after the other.
USAGE_MIGRATION_LOCK_ID = 0x5553_4147_4501

run_env(metadata, lock_id=USAGE_MIGRATION_LOCK_ID, version_table="alembic_version_usage")
