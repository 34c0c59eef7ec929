"""The bad-input suite runs against the e2e suite's in-process real stack.

The fixtures are the e2e ones (imported, not copied), so this directory gets its
own session-scoped stack: its users, jobs and ledger never mix with other suites.
"""

from __future__ import annotations

from tests.e2e.conftest import http, other_user, reset_emulator, stack, user

__all__ = ["http", "other_user", "reset_emulator", "stack", "user"]
