"""The whole local system, started and stopped in order.

``Stack(config).start()`` brings up every part the configuration does not
replace with an external one, waiting for each to be ready; ``.stop()`` stops
them in reverse order. The launcher uses it; tests and the bench get it through
``testkit.stack.process_stack`` (free ports, a temporary directory).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from kit.settings import S3Settings
from kit.tracing import traces_url
from launcher import keys, plan, state
from launcher.config import LauncherConfig
from launcher.devtoken import make_dev_token
from launcher.envoy import write_local_config
from launcher.units import StopRequested, Unit, UnitError, ensure_buckets

# Seconds each group of parts gets to become ready (generous: a busy 2-core machine).
STORAGE_READY_TIMEOUT = 45.0
SERVICE_READY_TIMEOUT = 60.0
ENVOY_READY_TIMEOUT = 20.0


class LauncherError(Exception):
    """The system cannot be started as configured (a port taken, a module missing)."""


def terminal_say(line: str, end: str = "\n") -> None:
    """Print to the terminal, which may be gone (closed, its pipe broken): then to
    nowhere, so that stopping what was started never fails on a message."""
    try:
        print(line, end=end, flush=True)
    except OSError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as we do


class Stack:
    """Every part of the local system, in start order."""

    def __init__(
        self,
        config: LauncherConfig,
        *,
        say: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self.cancel = threading.Event()
        self.units: list[Unit] = []  # started, in start order
        self._say = say or terminal_say
        self._lock_file: IO[str] | None = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def dev_token(self) -> str:
        """A user token the local edge accepts."""
        return make_dev_token(self.config.auth_jwt_secret)

    def start(self) -> None:
        """Start everything; on any failure stop what was started and raise."""
        started = time.monotonic()
        self._preflight()
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        state.write(self.config, self.units, ready=True)
        self._say(f"==> all parts ready in {time.monotonic() - started:.1f} s", "\n")

    def _start_all(self) -> None:
        config = self.config
        # First what needs no other part, so a broken config fails before anything runs.
        envoy_config = config.data_dir / "envoy" / "envoy.yaml"
        self._step(
            "checking the Envoy config (envoy --mode validate)",
            lambda: write_local_config(
                envoy_config,
                listener_port=config.ports.public,
                admin_port=config.ports.envoy_admin,
                stats_port=config.ports.envoy_stats,
                edge_port=config.ports.edge_http,
                gateway_port=config.ports.gateway_http,
                # Envoy traces when the services do, to the same collector.
                otlp_traces_url=traces_url(config.environ),
                # The bench measures the system's cost, not Envoy's token buckets.
                rate_limits_enforced=not config.rate_limits_report_only,
                listener_host=config.public_host,
                # Envoy's own answers (429, 413, 503) reach the same pages the edge's do.
                cors_origins=config.cors_origins(),
            ),
        )
        storage = [plan.s3(config)] if config.embedded_s3 else []
        storage += [plan.postgres(config)] if config.embedded_postgres else []
        if storage:
            self._start_group(storage, timeout=STORAGE_READY_TIMEOUT)
        settings = s3_settings(config)
        buckets = (settings.s3_private_bucket, settings.s3_public_bucket)
        self._step(
            f"creating buckets {', '.join(buckets)} (unless they exist)",
            lambda: ensure_buckets(settings, buckets),
        )
        self._step(
            f"service identity keys in {keys.keys_dir(config)} (unless they exist)",
            lambda: keys.ensure_keys(config),
        )
        # The services connect to each other lazily, so they can all start at once:
        # on few cores that halves the wait compared with starting them in a row.
        services = [plan.emulator(config)] if config.embedded_emulator else []
        services += [
            plan.usage(config),
            plan.generation(config),
            plan.edge_api(config),
            plan.webhook_gateway(config),
        ]
        self._start_group(services, timeout=SERVICE_READY_TIMEOUT)
        self._start_group([plan.envoy(config, envoy_config)], timeout=ENVOY_READY_TIMEOUT)

    def stop(self) -> None:
        """Stop every started part, last started first; safe to call twice."""
        while self.units:
            self._stop_unit(self.units.pop())
        state.remove(self.config)
        self._release_lock()

    def _stop_unit(self, unit: Unit) -> None:
        began = time.monotonic()
        self._say(f"==> stopping {unit.description} ...", "")
        try:
            unit.stop()
        except Exception as exc:  # keep stopping the others
            self._say(f" failed: {exc}", "\n")
            return
        self._say(f" ok ({time.monotonic() - began:.1f} s)", "\n")

    def restart(self, unit: Unit, timeout: float = SERVICE_READY_TIMEOUT) -> None:
        """Start a part that died again, in place (raises UnitError if it fails)."""
        failed = self.restart_together([unit], timeout)
        if failed:
            raise failed[unit.name]

    def restart_together(
        self, units: Sequence[Unit], timeout: float = SERVICE_READY_TIMEOUT
    ) -> dict[str, UnitError]:
        """Restart parts that do not depend on each other at once (the services after an
        edit of the code they share): all stopped, all launched, then each waited for,
        so they get ready in parallel as at start. Returns the ones that failed, by name.
        """
        with ThreadPoolExecutor(max_workers=len(units) or 1) as pool:
            list(pool.map(lambda unit: unit.stop(), units))
        failed: dict[str, UnitError] = {}
        launched: list[Unit] = []
        for unit in units:
            try:
                unit.launch()
            except UnitError as exc:
                failed[unit.name] = exc
                continue
            launched.append(unit)
        state.write(self.config, self.units, ready=False)  # new pids, before they are ready
        began = time.monotonic()
        for unit in launched:
            try:
                unit.wait_ready(max(timeout - (time.monotonic() - began), 0.0), self.cancel)
            except UnitError as exc:
                failed[unit.name] = exc
        state.write(self.config, self.units, ready=True)
        return failed

    # -- one part at a time (fault-injection tests, operators) ----------------------

    def part(self, name: str) -> Unit:
        """The started part called ``name``: "postgres", "s3", "emulator", "usage",
        "generation", "edge-api", "webhook-gateway" or "envoy"."""
        for unit in self.units:
            if unit.name == name:
                return unit
        known = ", ".join(unit.name for unit in self.units)
        raise KeyError(f"no started part named {name!r} (started: {known})")

    def kill(self, name: str) -> None:
        """SIGKILL one part, as a crash would, and wait until it is gone."""
        self.part(name).kill()
        state.write(self.config, self.units, ready=True)

    def stop_part(self, name: str) -> None:
        """Stop one part gracefully (PostgreSQL: fast shutdown); start_part brings it back
        on the same data and port."""
        self.part(name).stop()
        state.write(self.config, self.units, ready=True)

    def start_part(self, name: str, timeout: float = SERVICE_READY_TIMEOUT) -> None:
        """Start a stopped (or killed) part again and wait until it is ready."""
        self.part(name).start(timeout, self.cancel)
        state.write(self.config, self.units, ready=True)

    def _start_group(self, group: Sequence[Unit], timeout: float) -> None:
        """Start parts that do not depend on each other; they get ready in parallel."""
        self._check_cancel()
        began = time.monotonic()
        launched: list[Unit] = []
        try:
            for unit in group:
                try:
                    unit.launch()
                except UnitError as exc:
                    self._say(f"==> starting {unit.description} ...", "")
                    raise self._failed(_failure_message(unit, exc)) from exc
                launched.append(unit)
                # Recorded at once, not when the group is ready: a launcher killed
                # meanwhile left parts no state file named, which the next start could
                # neither stop nor start beside (their ports taken).
                state.write(self.config, [*self.units, *launched], ready=False)
            for unit in group:
                self._say(f"==> starting {unit.description} ...", "")
                try:
                    unit.wait_ready(timeout - (time.monotonic() - began), self.cancel)
                except UnitError as exc:
                    raise self._failed(_failure_message(unit, exc)) from exc
                except BaseException:
                    self._say(" interrupted", "\n")
                    raise
                self._say(f" ok ({time.monotonic() - began:.1f} s)", "\n")
        except BaseException:
            for unit in reversed(launched):
                self._stop_unit(unit)
            raise
        self.units.extend(group)
        state.write(self.config, self.units, ready=False)

    def _step(self, what: str, action: Callable[[], object]) -> None:
        self._check_cancel()
        began = time.monotonic()
        self._say(f"==> {what} ...", "")
        try:
            action()
        except Exception as exc:
            raise self._failed(f"{what} failed: {exc}") from exc
        self._say(f" ok ({time.monotonic() - began:.1f} s)", "\n")

    def _failed(self, message: str) -> UnitError:
        """Say why at once (before the stop lines that follow) and build the error."""
        self._say(" FAILED", "\n")
        self._say(f"!! {message}", "\n")
        return UnitError(message)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise StopRequested

    def _preflight(self) -> None:
        """Refuse early and clearly: missing modules, a second launcher, busy ports."""
        missing = [m for m in plan.required_modules(self.config) if not _module_exists(m)]
        if missing:
            raise LauncherError(
                "cannot start: no entry point for " + ", ".join(f"`python -m {m}`" for m in missing)
            )
        try:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LauncherError(
                f"LAUNCHER_DATA_DIR={self.config.data_dir} cannot be used: {exc.strerror}"
            ) from None
        self._take_lock()
        try:
            orphans = state.reap_orphans(self.config)
            if orphans:
                self._say(
                    "==> stopped parts a killed launcher left running: " + ", ".join(orphans), "\n"
                )
            busy = plan.busy_ports(self.config)
        except BaseException:
            self._release_lock()
            raise
        if busy:
            self._release_lock()
            raise LauncherError(
                "; ".join(f"port {port} is in use: set {var}=<another port>" for var, port in busy)
            )

    def _take_lock(self) -> None:
        path = self.config.data_dir / "launcher.lock"
        handle = path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LauncherError(
                f"another launcher is running on {self.config.data_dir}: "
                "stop it first, or set LAUNCHER_DATA_DIR to another directory"
            ) from None
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def s3_settings(config: LauncherConfig) -> S3Settings:
    """The S3 settings the services get (bucket names included), for the launcher's calls."""
    known = {field.alias for field in S3Settings.model_fields.values()}
    given = {key: value for key, value in config.environ.items() if key in known}
    resolved = {
        key: config.service_env()[key]
        for key in ("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SECURE")
    }
    return S3Settings.model_validate({**given, **resolved})


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ModuleNotFoundError:
        return False


def _failure_message(unit: Unit, error: Exception) -> str:
    message = f"{unit.description}: {error}"
    if unit.log_path is not None:
        message += f"\n   last lines of {unit.log_path}:\n{log_tail(unit.log_path)}"
    return message


_TAIL_BYTES = 64 * 1024


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of a log file, indented, for error messages."""
    try:
        with path.open("rb") as log:  # only the end: a log may be many megabytes
            log.seek(max(0, log.seek(0, os.SEEK_END) - _TAIL_BYTES))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return "   (no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"   | {line}" for line in tail) or "   (empty log)"


__all__ = ["LauncherError", "Stack", "StopRequested", "UnitError", "log_tail", "s3_settings"]
