"""The runtime part of requirements.lock, hashes and markers untouched (image build step).

requirements.lock is compiled with the ``dev`` extra (pytest, mypy, ruff, locust, ...),
and uv writes the same ``# via interior-backend (pyproject.toml)`` note for a runtime
and for a dev top-level package. So the runtime set is computed from the graph the
notes describe: the packages named in ``[project].dependencies`` (minus ``--exclude``),
then every locked package whose ``# via`` names a package already in the set, until
nothing changes. Each kept entry is copied verbatim, so ``pip install --require-hashes``
still checks every file against the lock, and pip itself fails the build if the subset
ever misses a dependency (in hash-checking mode every dependency must be listed).

    python runtime_requirements.py pyproject.toml requirements.lock \
        [--exclude NAME ...] > runtime.lock
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
_ROOT_NOTE = "interior-backend"


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class LockEntry:
    """One pinned requirement of the lock: its name, text and ``# via`` parents."""

    name: str
    text: str
    parents: frozenset[str]


def parse_lock(text: str) -> list[LockEntry]:
    """The entries of a ``uv pip compile --generate-hashes`` file, in file order."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    return [_entry(block) for block in blocks]


def _entry(lines: list[str]) -> LockEntry:
    match = _NAME.match(lines[0])
    if match is None:
        raise ValueError(f"not a requirement line: {lines[0]!r}")
    parents: set[str] = set()
    for line in lines[1:]:
        note = line.strip()
        if note.startswith("# via"):
            note = note.removeprefix("# via")
        elif note.startswith("#"):
            note = note.removeprefix("#")
        else:
            continue
        parent = note.strip().split(" ")[0]
        if parent:
            parents.add(normalize(parent))
    body = [line for line in lines if line.strip()]
    return LockEntry(normalize(match.group(1)), "\n".join(body), frozenset(parents))


def runtime_roots(pyproject: str) -> set[str]:
    """Normalized names of ``[project].dependencies``."""
    data = tomllib.loads(pyproject)
    roots: set[str] = set()
    for requirement in data["project"]["dependencies"]:
        match = _NAME.match(requirement.strip())
        if match is None:
            raise ValueError(f"cannot read the dependency {requirement!r}")
        roots.add(normalize(match.group(1)))
    return roots


def runtime_subset(
    entries: Sequence[LockEntry], roots: Iterable[str], exclude: Iterable[str] = ()
) -> list[LockEntry]:
    """The entries reachable from ``roots`` (without ``exclude``), in lock order."""
    excluded = {normalize(name) for name in exclude}
    known = {entry.name for entry in entries}
    wanted = {normalize(name) for name in roots} - excluded
    missing = wanted - known
    if missing:
        raise ValueError(f"runtime dependencies missing from the lock: {sorted(missing)}")
    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.name in wanted or entry.name in excluded:
                continue
            if entry.parents & wanted:
                wanted.add(entry.name)
                changed = True
    return [entry for entry in entries if entry.name in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the runtime subset of the lock to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("lock", type=Path)
    parser.add_argument("--exclude", nargs="*", default=[], help="runtime roots to leave out")
    args = parser.parse_args(argv)
    roots = runtime_roots(args.pyproject.read_text(encoding="utf-8"))
    entries = parse_lock(args.lock.read_text(encoding="utf-8"))
    subset = runtime_subset(entries, roots, args.exclude)
    header = f"# Runtime subset of {args.lock.name} (deploy/docker/runtime_requirements.py)"
    sys.stdout.write("\n".join([header, *(entry.text for entry in subset)]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
