"""`make run RELOAD=1`: restart a service when its source changes.

The launcher polls file modification times (no watcher thread, no new dependency):
each service restarts when a file under its own ``services/<dir>/src`` changes, and
every service restarts (all at once) when the shared ``libs/kit`` or ``libs/contracts``
changes. The web client's files are not watched: the edge reads them at each request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

# The launcher's part name of each service, and its source directory in the repository.
SERVICE_SOURCES: Mapping[str, str] = {
    "usage": "services/usage/src",
    "generation": "services/generation/src",
    "edge-api": "services/edge-api/src",
    "webhook-gateway": "services/webhook-gateway/src",
}
# Code every service imports: a change there restarts them all.
SHARED_SOURCES = ("libs/kit", "libs/contracts")
# What counts as source: code, and the files code reads at import or start.
SOURCE_SUFFIXES = frozenset({".py", ".toml", ".json", ".yaml", ".yml", ".ini", ".sql"})

Snapshot = dict[Path, tuple[int, int]]


def snapshot(directory: Path) -> Snapshot:
    """(modification time, size) of every source file under ``directory``."""
    found: Snapshot = {}
    for path in directory.rglob("*"):
        if path.suffix not in SOURCE_SUFFIXES or "__pycache__" in path.parts:
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed while we walked: the next poll sees it gone
            continue
        found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


class SourceWatcher:
    """Which services' source changed since the last call of :meth:`changed`."""

    def __init__(self, root: Path, services: Iterable[str]) -> None:
        self.root = root
        self.services = [name for name in services if name in SERVICE_SOURCES]
        self._seen = {directory: snapshot(root / directory) for directory in self._watched()}

    def _watched(self) -> list[str]:
        return [*SHARED_SOURCES, *(SERVICE_SOURCES[name] for name in self.services)]

    def changed(self) -> list[str]:
        """The services to restart, in start order; each change is reported once."""
        moved = set()
        for directory in self._watched():
            now = snapshot(self.root / directory)
            if now != self._seen[directory]:
                moved.add(directory)
                self._seen[directory] = now
        if moved & set(SHARED_SOURCES):
            return list(self.services)
        return [name for name in self.services if SERVICE_SOURCES[name] in moved]
