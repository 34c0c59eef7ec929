"""The edge has no database: starting it loads no database library."""

from __future__ import annotations

from testkit.imports import DATABASE_PACKAGES, packages_loaded_by


def test_the_edge_entry_point_loads_no_database_library() -> None:
    assert packages_loaded_by(["edge_api.__main__"]) & DATABASE_PACKAGES == set()
