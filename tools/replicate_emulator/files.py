"""Output files in memory, served at ``{public_url}/files/{prediction_id}/{name}``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputFile:
    """One generated file."""

    name: str
    data: bytes
    content_type: str


class OutputFiles:
    """Files by prediction id; deleted when the prediction's data is removed."""

    def __init__(self) -> None:
        self._files: dict[str, OutputFile] = {}

    def put(self, prediction_id: str, file: OutputFile) -> None:
        """Store ``file`` as the output of ``prediction_id``."""
        self._files[prediction_id] = file

    def get(self, prediction_id: str, name: str) -> OutputFile | None:
        """The file, or None when unknown or removed."""
        file = self._files.get(prediction_id)
        return file if file is not None and file.name == name else None

    def delete(self, prediction_id: str) -> None:
        """Forget the output of ``prediction_id``."""
        self._files.pop(prediction_id, None)

    def clear(self) -> None:
        """Forget every file."""
        self._files.clear()
