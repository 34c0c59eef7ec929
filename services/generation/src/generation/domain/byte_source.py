"""Buffered, forward-only reading of a binary file for the image parsers.

The header reader and the metadata stripper walk files that may be 10 MB or
more: they look a few bytes ahead, take small segments whole, and move large
runs through in pieces, so memory stays at about one piece whatever the size.
"""

from __future__ import annotations

import re
from typing import IO

# The piece size for reads and copies.
CHUNK_BYTES = 256 * 1024
_NOT_FILL = re.compile(rb"[^\xff]")


def last_fill(data: bytes, pos: int) -> int:
    """The index of the last 0xFF of the run that starts at ``pos`` (``pos`` if none)."""
    found = _NOT_FILL.search(data, pos)
    return max(pos, (found.start() if found is not None else len(data)) - 1)


class ByteSource:
    """Buffered reads from a file: look ahead a few bytes, take or copy exact counts."""

    def __init__(self, file: IO[bytes], chunk_bytes: int = CHUNK_BYTES) -> None:
        self._file = file
        self._chunk = chunk_bytes
        self._buffer = b""
        self._pos = 0

    def available(self, count: int) -> bool:
        """Whether ``count`` unread bytes exist (reading more when needed)."""
        while len(self._buffer) - self._pos < count:
            more = self._file.read(max(self._chunk, count - (len(self._buffer) - self._pos)))
            if not more:
                return False
            self._buffer = self._buffer[self._pos :] + more
            self._pos = 0
        return True

    def peek(self, count: int) -> bytes:
        """The next ``count`` buffered bytes (fewer when fewer are buffered), unconsumed."""
        return self._buffer[self._pos : self._pos + count]

    def window(self) -> tuple[bytes, int]:
        """The buffer and where its unread part starts (no copy, for scanning)."""
        return self._buffer, self._pos

    def take(self, count: int) -> bytes:
        """Consume ``count`` bytes that :meth:`available` confirmed."""
        piece = self._buffer[self._pos : self._pos + count]
        self._pos += count
        return piece

    def skip_fill(self, limit: int | None = None) -> int:
        """Consume a run of 0xFF bytes up to (not including) its last one; return its length.

        JPEG allows any number of 0xFF fill bytes before a marker. A run is
        skipped at C speed, so a file made of fill bytes costs no Python loop
        per byte; what follows the last 0xFF decides what the marker is. The
        count lets a caller refuse runs that a slower parser would walk byte by
        byte; past ``limit`` the walk stops there (the rest need not be read).
        """
        skipped = 0
        while True:
            start = self._pos
            self._pos = last_fill(self._buffer, self._pos)
            skipped += self._pos - start
            if self._pos < len(self._buffer) - 1 or (limit is not None and skipped > limit):
                return skipped
            # Everything buffered is 0xFF: the last one stays, read on.
            if not self.available(2):
                return skipped

    def skip(self, count: int) -> bool:
        """Consume ``count`` bytes without keeping them; False when the file ends first."""
        return self.copy(count, None)

    def copy(self, count: int, out: IO[bytes] | None) -> bool:
        """Move ``count`` bytes to ``out`` (None: skip them), a piece at a time."""
        while count > 0:
            if not self.available(1):
                return False
            piece = self.take(min(count, len(self._buffer) - self._pos))
            if out is not None:
                out.write(piece)
            count -= len(piece)
        return True
