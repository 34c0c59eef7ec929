"""Watching what a factory hands out during a test, without changing what it does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def record_results(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[Any]:
    """Wrap ``owner.name`` (a callable) so each value it returns is also kept in the list.

    For example every spool a module opens, so a test can check they were all closed.
    The original is restored when the test ends (``monkeypatch``).
    """
    created: list[Any] = []
    original: Callable[..., Any] = getattr(owner, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        created.append(result)
        return result

    monkeypatch.setattr(owner, name, recording)
    return created
