"""The layers' "never" rules (shared/architecture.json), checked on the source.

The domain sees ports only: no persistence, no SQLAlchemy, no kit.db. The
transport maps domain values, never ORM rows: no persistence, no SQLAlchemy.
wiring.py is the composition root and may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "generation"
FORBIDDEN = {
    "domain": ("generation.persistence", "generation.api", "sqlalchemy", "kit.db"),
    "api": ("generation.persistence", "sqlalchemy"),
}


def imported_modules(source: str) -> set[str]:
    """Every module an import statement of ``source`` names (relative ones never occur)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def breaks(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)


def test_the_check_sees_every_kind_of_import() -> None:
    source = "import sqlalchemy.orm\nfrom generation import persistence\nfrom kit.db import x\n"
    found = {name for name in imported_modules(source) if breaks(name, FORBIDDEN["domain"])}
    assert found == {"sqlalchemy.orm", "generation.persistence", "kit.db", "kit.db.x"}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_it_must_not(layer: str) -> None:
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, f"no modules found under {layer}/"
    offending = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in modules
        for name in imported_modules(path.read_text())
        if breaks(name, FORBIDDEN[layer])
    }
    assert not offending, "\n".join(sorted(offending))
