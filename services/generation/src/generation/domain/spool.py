"""Temporary files for uploads on their way through the service.

A received upload goes straight to a named file (``spooled_file``): the decode
worker opens it by that name, so its bytes are never copied for the worker, and
memory holds none of them. A cleaned image (``memory_spool``) stays in memory
while small; past ``SPOOL_MEMORY_BYTES`` it moves to a file in the temp
directory, so memory per file stays bounded whatever its size. Whoever creates a
spool closes it (which deletes the file).
"""

from __future__ import annotations

import tempfile
from typing import IO

SPOOL_MEMORY_BYTES = 1024 * 1024


def memory_spool() -> IO[bytes]:
    """A new empty binary temporary file, in memory until it outgrows the threshold."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, mode="w+b")


def spooled_file() -> IO[bytes]:
    """A new empty binary temporary file on disk, with a name another process can open."""
    return tempfile.NamedTemporaryFile(prefix="upload-")


def file_size(file: IO[bytes]) -> int:
    """The file's size in bytes; the position is left at the start."""
    size = file.seek(0, 2)
    file.seek(0)
    return size
