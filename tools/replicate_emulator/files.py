"""Output files on disk, served at ``{public_url}/files/{prediction_id}/{name}``.

Replicate keeps outputs for an hour, and so does the emulator: held in memory, a long
run (a bench, an afternoon of ``make run``) grew the process by each output's size for
an hour. Each file is written to a private temporary directory instead, read back when
it is downloaded, and removed with the prediction's data (or when the emulator stops).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputFile:
    """One generated file."""

    name: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class _Stored:
    name: str
    content_type: str
    path: Path


class OutputFiles:
    """Files by prediction id; deleted when the prediction's data is removed."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="replicate-emulator-files-"))
        self._files: dict[str, _Stored] = {}
        # Removed at close(), or when this object goes (an app never closed) or the
        # interpreter exits, whichever comes first.
        self._remove = weakref.finalize(self, shutil.rmtree, self.directory, ignore_errors=True)

    def put(self, prediction_id: str, file: OutputFile) -> None:
        """Store ``file`` as the output of ``prediction_id``."""
        path = self.directory / prediction_id
        path.write_bytes(file.data)
        self._files[prediction_id] = _Stored(file.name, file.content_type, path)

    def get(self, prediction_id: str, name: str) -> OutputFile | None:
        """The file, or None when unknown or removed."""
        stored = self._files.get(prediction_id)
        if stored is None or stored.name != name:
            return None
        try:
            data = stored.path.read_bytes()
        except FileNotFoundError:
            return None
        return OutputFile(stored.name, data, stored.content_type)

    def delete(self, prediction_id: str) -> None:
        """Forget the output of ``prediction_id``."""
        stored = self._files.pop(prediction_id, None)
        if stored is not None:
            stored.path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every file."""
        for prediction_id in list(self._files):
            self.delete(prediction_id)

    def close(self) -> None:
        """Remove the directory and everything in it."""
        self._files.clear()
        self._remove()
