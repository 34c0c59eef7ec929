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


def _crashing_once(
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
    signal: int,
    last_argument: str | None = None,
    leaves: Callable[[Path], None] | None = None,
) -> list[list[str]]:
    """Make the first call of ``tool`` (ending with ``last_argument``, when given) die
    by ``signal`` before running, after ``leaves`` wrote into its data directory; the
    calls that crashed are returned (filled in as they happen)."""
    real = components._pg_tool
    crashes: list[list[str]] = []

    def crashing(name: str) -> Callable[..., str]:
        command = real(name)

        def run(arguments: list[str], **kwargs: Any) -> str:
            matches = last_argument is None or arguments[-1] == last_argument
            if name == tool and matches and not crashes:
                crashes.append(arguments)
                if leaves is not None:
                    leaves(kwargs["pgdata"])
                raise subprocess.CalledProcessError(-signal, [name, *arguments])
            return command(arguments, **kwargs)

        return run

    monkeypatch.setattr(components, "_pg_tool", crashing)
    return crashes


def _half_done_initdb(data_dir: Path) -> None:
    # What a half-done initdb leaves: initdb refuses a directory not empty.
    (data_dir / "global").mkdir()
    (data_dir / "PG_VERSION.partial").write_text("18")


@pytest.mark.parametrize(
    ("tool", "signal", "last_argument", "leaves"),
    [
        # Seen once in a full run: pg_ctl died with SIGSEGV before it did anything, and
        # every later fault test found no database.
        ("pg_ctl", 11, "start", None),
        # Seen once in a full run: initdb died with SIGBUS, forked from a test worker
        # full of gRPC threads, and the database never started.
        ("initdb", 7, None, _half_done_initdb),
    ],
)
def test_a_start_whose_tool_a_signal_killed_runs_it_once_more(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
    signal: int,
    last_argument: str | None,
    leaves: Callable[[Path], None] | None,
) -> None:
    crashes = _crashing_once(monkeypatch, tool, signal, last_argument, leaves)
    server = PostgresServer(tmp_path / "pg", free_port())
    try:
        server.start()
        assert crashes
        assert server.postmaster_pid() is not None
    finally:
        server.stop()
    assert server.postmaster_pid() is None


def test_a_pg_ctl_stop_killed_by_a_signal_is_run_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PostgresServer(tmp_path / "pg", free_port())
    server.start()
    try:
        crashes = _crashing_once(monkeypatch, "pg_ctl", 11, last_argument="stop")
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


def test_a_tool_that_fails_says_why_in_the_units_error(tmp_path: Path) -> None:
    """initdb's reason (here: a data directory that is not empty) reaches the message
    `make run` prints; before, it went only to a log the launcher keeps silent."""
    data_dir = tmp_path / "pg"
    data_dir.mkdir()
    (data_dir / "stray").write_text("not a cluster")
    unit = PostgresUnit(PostgresServer(data_dir, free_port()), ["generation"])
    with pytest.raises(UnitError, match="exists but is not empty"):
        unit.launch()


def test_the_servers_log_keeps_no_row_values_of_a_failed_statement(tmp_path: Path) -> None:
    """PostgreSQL writes a failing row's values (a prompt, an e-mail) into its DETAIL
    line at its default verbosity; the embedded server logs errors tersely."""
    import asyncio

    import asyncpg

    log_path = tmp_path / "pg.log"
    server = PostgresServer(tmp_path / "pg", free_port(), log_path)
    server.start()

    async def violate() -> None:
        connection = await asyncpg.connect(server.admin_dsn)
        try:
            await connection.execute("CREATE TABLE t (prompt text, n int NOT NULL)")
            with pytest.raises(asyncpg.NotNullViolationError):
                await connection.execute("INSERT INTO t VALUES ($1, $2)", "a quokka room", None)
        finally:
            await connection.close()

    try:
        asyncio.run(violate())
    finally:
        server.stop()
    log = log_path.read_text()
    assert 'null value in column "n"' in log  # the error itself is logged
    assert "quokka" not in log


def test_a_data_directory_with_spaces_and_a_long_path_starts(tmp_path: Path) -> None:
    """`make run` keeps its data in the checkout: one under "~/My Projects", or deep
    enough to pass a Unix socket's 107 bytes, must start all the same (pg_ctl hands
    the server's options to a shell, and the socket lived in the data directory)."""
    import asyncio

    import asyncpg

    directory = tmp_path / ("My Projects " + "x" * 80) / "data dir" / "pg"
    assert " " in str(directory)
    assert len(str(directory)) > 107
    server = PostgresServer(directory, free_port())
    server.start()
    try:

        async def ask() -> object:
            connection = await asyncpg.connect(server.admin_dsn)
            try:
                return await connection.fetchval("SELECT 1")
            finally:
                await connection.close()

        assert asyncio.run(ask()) == 1
    finally:
        server.stop()
