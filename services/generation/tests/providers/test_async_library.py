"""httpcore learns the async library without searching for sniffio on every request."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import pytest
from httpcore._synchronization import current_async_library

import generation.providers.replicate  # noqa: F401  (importing it settles the question)


class AskedNames:
    """A meta path finder that records the modules Python searches for, finding none."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.names.append(name)
        return None


@pytest.fixture
def asked() -> Iterator[AskedNames]:
    finder = AskedNames()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)


async def test_httpcore_asks_for_the_async_library_without_an_import_search(
    asked: AskedNames,
) -> None:
    for _ in range(3):
        assert current_async_library() == "asyncio"
    assert "sniffio" not in asked.names
