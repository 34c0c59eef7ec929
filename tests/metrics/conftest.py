"""The metrics suites run against the real in-process system of the e2e suites.

The fixtures are the e2e ones (imported, so this directory gets its own
session stack); every service in it writes to this process's default registry,
which the edge and the gateway expose at ``GET /metrics``.
"""

from __future__ import annotations

from tests.e2e.conftest import http, reset_emulator, stack, user

__all__ = ["http", "reset_emulator", "stack", "user"]
