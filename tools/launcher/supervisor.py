"""Keeps the started parts running: restart what dies, give up if it keeps dying."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from launcher.reload import SourceWatcher
from launcher.stack import SERVICE_READY_TIMEOUT, Stack, log_tail, terminal_say
from launcher.units import ProcessUnit, StopRequested, Unit, UnitError

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RestartPolicy:
    """At most ``max_restarts`` within ``window_seconds``, with doubling backoff."""

    max_restarts: int = 3
    window_seconds: float = 120.0
    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 8.0
    # How long a restarted part may take to be ready again.
    ready_seconds: float = SERVICE_READY_TIMEOUT


class GaveUp(Exception):
    """A part kept dying; the whole system should stop."""


class Supervisor:
    """Watches a started :class:`Stack` until its ``cancel`` event is set."""

    def __init__(
        self,
        stack: Stack,
        policy: RestartPolicy | None = None,
        say: Callable[[str], None] | None = None,
        watcher: SourceWatcher | None = None,
    ) -> None:
        self.stack = stack
        self.policy = policy or RestartPolicy()
        self._say = say or terminal_say
        self._restarts: dict[str, deque[float]] = {}
        self._watcher = watcher
        # Reloaded parts whose new code did not start: they wait for the next edit
        # instead of being restarted until the supervisor gives up on the whole system.
        self._broken: set[str] = set()

    def run(self) -> None:
        """Block until asked to stop (returns) or a part keeps dying (raises GaveUp)."""
        cancel = self.stack.cancel
        while not cancel.wait(POLL_SECONDS):
            self._reload_changed()
            for unit in list(self.stack.units):
                if cancel.is_set():
                    return
                if not unit.alive() and unit.name not in self._broken:
                    self._recover(unit)

    def _reload_changed(self) -> None:
        """Restart the services whose source changed since the last poll, together."""
        names = self._watcher.changed() if self._watcher else []
        if not names or self.stack.cancel.is_set():
            return
        units = [self.stack.part(name) for name in names]
        for unit in units:
            self._say(f"==> source of {unit.description} changed: restarting")
        try:
            failed = self.stack.restart_together(units)
        except StopRequested:
            return
        for unit in units:
            exc = failed.get(unit.name)
            if exc is None:
                self._broken.discard(unit.name)
                self._say(f"==> {unit.description} reloaded")
                continue
            self._broken.add(unit.name)
            self._say(
                f"!! {unit.description} did not start: {exc}; waiting for the next edit "
                f"(log: {unit.log_path})"
            )

    def _recover(self, unit: Unit) -> None:
        # Failed restarts of this one recovery: a part that stays alive but never gets
        # ready takes the whole readiness wait per attempt, so the window alone (three
        # restarts within it) never caught it and it was restarted for ever.
        failed = 0
        why = _exit_text(unit)
        while True:
            attempt = self._record_restart(unit)
            backoff = min(
                self.policy.first_backoff_seconds * 2 ** (attempt - 1),
                self.policy.max_backoff_seconds,
            )
            self._say(
                f"!! {unit.description} {why}; restarting in {backoff:.0f} s "
                f"(attempt {attempt}/{self.policy.max_restarts}, log: {unit.log_path})"
            )
            if self.stack.cancel.wait(backoff):
                return
            try:
                self.stack.restart(unit, self.policy.ready_seconds)
            except StopRequested:
                return
            except UnitError as exc:
                self._say(f"!! {unit.description} did not come back: {exc}")
                failed += 1
                if failed >= self.policy.max_restarts:
                    tail = log_tail(unit.log_path) if unit.log_path else ""
                    raise GaveUp(
                        f"{unit.description} did not come back after {failed} restarts; "
                        f"stopping everything.\n   last lines of {unit.log_path}:\n{tail}"
                    ) from exc
                # Its own exit is not the reason any more: the launcher stopped it.
                why = f"did not come back ({exc})"
                continue
            self._say(f"==> {unit.description} is back")
            return

    def _record_restart(self, unit: Unit) -> int:
        now = time.monotonic()
        history = self._restarts.setdefault(unit.name, deque())
        while history and now - history[0] > self.policy.window_seconds:
            history.popleft()
        if len(history) >= self.policy.max_restarts:
            tail = log_tail(unit.log_path) if unit.log_path else ""
            raise GaveUp(
                f"{unit.description} keeps dying ({len(history)} restarts within "
                f"{self.policy.window_seconds:.0f} s); stopping everything.\n"
                f"   last lines of {unit.log_path}:\n{tail}"
            )
        history.append(now)
        return len(history)


def _exit_text(unit: Unit) -> str:
    code = unit.exit_code() if isinstance(unit, ProcessUnit) else None
    if code is None:
        return "stopped unexpectedly"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
