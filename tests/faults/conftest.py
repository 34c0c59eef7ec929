"""One real system for the whole fault package (starting it takes seconds), clean knobs
per test: every case ends by checking the invariants, so the next starts from a clean state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.system import System, running_system


@pytest.fixture(scope="package")
def system() -> Iterator[System]:
    with running_system() as started:
        yield started


@pytest.fixture
def quiet(system: System) -> Iterator[System]:
    """The system with every emulator fault knob back to normal, before and after."""
    system.control.reset()
    yield system
    system.control.reset()
