"""The launcher's signal handling: when its terminal is gone, and a second Ctrl-C."""

from __future__ import annotations

import errno
import io
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launcher import components
from launcher.__main__ import _install_signal_handlers
from launcher.components import ChildProcess


class _GoneTerminal(io.TextIOBase):
    """A closed terminal: every write fails with EIO, as after a hangup."""

    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


def test_a_hangup_after_the_terminal_closed_still_stops_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The handler used to print first: EIO escaped it, the stop was never asked for, and
    # the parts (each in a session of its own) kept running with nobody to stop them.
    stack: Any = SimpleNamespace(cancel=threading.Event())
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    gone = _GoneTerminal()
    monkeypatch.setattr(sys, "stdout", gone)
    try:
        _install_signal_handlers(stack)
        signal.raise_signal(signal.SIGHUP)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if sys.stdout is not gone:  # the launcher writes to nowhere from then on
            sys.stdout.close()
    assert stack.cancel.is_set()


@pytest.fixture
def handlers_restored() -> Iterator[None]:
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        components.STOP_NOW.clear()


def test_a_second_ctrl_c_stops_at_once(
    handlers_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    stack: Any = SimpleNamespace(cancel=threading.Event())
    _install_signal_handlers(stack)

    signal.raise_signal(signal.SIGINT)
    assert stack.cancel.is_set()
    assert not components.STOP_NOW.is_set()  # the first one lets every part stop cleanly

    signal.raise_signal(signal.SIGINT)
    assert components.STOP_NOW.is_set()
    said = capsys.readouterr().out
    assert "again to stop at once" in said
    assert "SIGINT again: killing what is left" in said


# A part that ignores SIGTERM: only SIGKILL ends it.
STUBBORN = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
time.sleep(120)
"""


def test_stop_now_cuts_a_part_s_grace_period_short(handlers_restored: None, tmp_path: Path) -> None:
    armed = tmp_path / "armed"
    child = ChildProcess(
        "stubborn", [sys.executable, "-c", STUBBORN, str(armed)], log_path=tmp_path / "s.log"
    )
    child.start()
    deadline = time.monotonic() + 20
    while not armed.exists():
        assert time.monotonic() < deadline
        assert child.alive()
        time.sleep(0.02)
    stopping = threading.Thread(target=child.stop, kwargs={"grace": 120.0})
    stopping.start()
    time.sleep(0.3)
    assert child.alive()  # SIGTERM ignored: the stop is waiting out its grace

    components.STOP_NOW.set()  # what a second Ctrl-C does
    stopping.join(timeout=10)
    assert not stopping.is_alive(), "the stop kept waiting after STOP_NOW"
    assert not child.alive()
