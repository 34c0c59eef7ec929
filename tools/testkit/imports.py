"""Which top-level packages a fresh interpreter loads when it imports some modules.

A fresh interpreter, because the test process may already hold anything.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

DATABASE_PACKAGES = frozenset({"sqlalchemy", "alembic", "asyncpg"})

_PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(" ".join(sorted({module.split(".")[0] for module in sys.modules})))
"""


def packages_loaded_by(modules: Iterable[str]) -> frozenset[str]:
    """The top-level packages in ``sys.modules`` after importing ``modules``."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return frozenset(result.stdout.split())
