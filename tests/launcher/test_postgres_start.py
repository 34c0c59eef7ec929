"""Starting the embedded PostgreSQL survives a pg_ctl killed by a signal."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launcher import components
from launcher.components import PostgresServer, free_port
from launcher.units import PostgresUnit, UnitError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_pg_ctl_killed_by_a_signal_is_run_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen once in a full run: pg_ctl died with SIGSEGV before it did anything, and every
    later fault test found no database."""
    real = components._pg_tool
    crashes: list[list[str]] = []

    def crashing_once(tool: str) -> Callable[..., str]:
        command = real(tool)

        def run(arguments: list[str], **kwargs: Any) -> str:
            if tool == "pg_ctl" and arguments[-1] == "start" and not crashes:
                crashes.append(arguments)
                raise subprocess.CalledProcessError(-11, ["pg_ctl", *arguments])
            return command(arguments, **kwargs)

        return run

    monkeypatch.setattr(components, "_pg_tool", crashing_once)
    server = PostgresServer(tmp_path / "pg", free_port())
    try:
        server.start()
        assert crashes
        assert server.postmaster_pid() is not None
    finally:
        server.stop()
    assert server.postmaster_pid() is None


def test_an_initdb_killed_by_a_signal_starts_over_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen once in a full run: initdb died with SIGBUS, forked from a test worker full
    of gRPC threads, and the database never started."""
    real = components._pg_tool
    crashes: list[list[str]] = []

    def crashing_once(tool: str) -> Callable[..., str]:
        command = real(tool)

        def run(arguments: list[str], **kwargs: Any) -> str:
            if tool == "initdb" and not crashes:
                crashes.append(arguments)
                # What a half-done initdb leaves: initdb refuses a directory not empty.
                (kwargs["pgdata"] / "global").mkdir()
                (kwargs["pgdata"] / "PG_VERSION.partial").write_text("18")
                raise subprocess.CalledProcessError(-7, ["initdb", *arguments])
            return command(arguments, **kwargs)

        return run

    monkeypatch.setattr(components, "_pg_tool", crashing_once)
    server = PostgresServer(tmp_path / "pg", free_port())
    try:
        server.start()
        assert crashes
        assert server.postmaster_pid() is not None
    finally:
        server.stop()


def test_a_pg_ctl_stop_killed_by_a_signal_is_run_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = components._pg_tool
    crashes: list[list[str]] = []

    def crashing_once(tool: str) -> Callable[..., str]:
        command = real(tool)

        def run(arguments: list[str], **kwargs: Any) -> str:
            if tool == "pg_ctl" and arguments[-1] == "stop" and not crashes:
                crashes.append(arguments)
                raise subprocess.CalledProcessError(-11, ["pg_ctl", *arguments])
            return command(arguments, **kwargs)

        return run

    server = PostgresServer(tmp_path / "pg", free_port())
    server.start()
    try:
        monkeypatch.setattr(components, "_pg_tool", crashing_once)
        server.stop()
        assert crashes
        assert server.postmaster_pid() is None
    finally:
        monkeypatch.undo()
        server.stop()


def test_a_pg_ctl_that_fails_on_its_own_is_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def failing(tool: str) -> Callable[..., str]:
        def run(arguments: list[str], **kwargs: Any) -> str:
            calls.append(arguments[-1])
            if tool == "pg_ctl" and arguments[-1] == "start":
                raise subprocess.CalledProcessError(1, ["pg_ctl", *arguments])
            return ""

        return run

    monkeypatch.setattr(components, "_pg_tool", failing)
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("18\n")  # as if initdb had run
    with pytest.raises(subprocess.CalledProcessError):
        PostgresServer(tmp_path / "pg", free_port()).start()
    assert calls.count("start") == 1


def test_a_server_whose_databases_cannot_be_made_is_stopped_again(tmp_path: Path) -> None:
    """The unit is not launched then, so nothing else would ever stop the server."""
    server = PostgresServer(tmp_path / "pg", free_port(), tmp_path / "pg.log")

    def refuse(name: str) -> None:
        raise RuntimeError(f"createdb {name}: refused")

    server.create_database = refuse  # type: ignore[method-assign]
    unit = PostgresUnit(server, ["generation"])
    try:
        with pytest.raises(UnitError, match="createdb generation: refused"):
            unit.launch()
        assert server.postmaster_pid() is None
    finally:
        server.stop()
