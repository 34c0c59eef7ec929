"""The launcher's signal handling when its terminal is gone."""

from __future__ import annotations

import errno
import io
import signal
import sys
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from launcher.__main__ import _install_signal_handlers


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
