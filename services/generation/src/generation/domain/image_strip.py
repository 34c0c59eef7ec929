"""Lossless metadata removal: the compressed pixels are copied byte for byte.

Re-encoding a photo only to drop its EXIF costs a full decode and encode and
makes the file larger; when the picture needs no rotation, removing the
metadata segments is enough. JPEG keeps only JFIF, the ICC profile and Adobe's
colour-transform segment; PNG keeps only the chunks that define the pixels and
their colours. Anything after the end of the image (a second MPO picture, an
appended archive) is dropped.

Both functions copy file to file in bounded pieces (a JPEG segment is at most
64 KiB; PNG chunks and the JPEG's entropy-coded data are copied in pieces of
``chunk_bytes``), so a 10 MB photo never sits in memory whole. Each answers
False when the stream cannot be walked (what it wrote is then meaningless), and
the caller falls back to re-encoding.
"""

from __future__ import annotations

import re
from typing import IO

from generation.domain.byte_source import CHUNK_BYTES, ByteSource

_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks about the pixels and their colours; text, EXIF, time and private chunks go.
_PNG_KEEP = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"IDAT",
        b"IEND",
        b"tRNS",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"iCCP",
        b"sBIT",
        b"pHYs",
        b"bKGD",
    }
)


def _keep_jpeg_segment(marker: int, segment: bytes) -> bool:
    if marker == _COM:
        return False
    if 0xE0 <= marker <= 0xEF:
        payload = segment[4:]
        return (
            (marker == 0xE0 and payload.startswith(b"JFIF\x00"))
            or (marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"))
            or (marker == 0xEE and payload.startswith(b"Adobe"))
        )
    return True


# In entropy-coded data, 0xFF 0x00 (a stuffed byte) and restart markers (0xFF 0xD0-D7)
# belong to the scan and 0xFF 0xFF is a fill byte: a marker is the last 0xFF of a run
# followed by any other byte. Searched in C: a photo's scan holds thousands of 0xFF.
_SCAN_END = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")


def _marker_at(data: bytes, start: int) -> int | None:
    """Where a marker starts in entropy-coded ``data[start:]``; None when none is sure yet.

    A 0xFF at the very end needs the next byte, so it is never a sure marker.
    """
    found = _SCAN_END.search(data, start)
    return found.start() if found is not None else None


def copy_scan(source: ByteSource, out: IO[bytes] | None) -> bool:
    """Copy (None: skip) entropy-coded data, or any bytes that are not a marker, up to
    (not including) the next marker; False when the file ends first."""
    while source.available(2):
        data, start = source.window()
        end = _marker_at(data, start)
        if end is not None:
            piece = source.take(end - start)
            if out is not None:
                out.write(piece)
            return True
        # Keep a trailing 0xFF: whether it starts a marker depends on the next byte.
        keep = 1 if data.endswith(b"\xff") else 0
        piece = source.take(len(data) - start - keep)
        if out is not None:
            out.write(piece)
    return False  # the file ends inside the scan


def strip_jpeg(src: IO[bytes], dst: IO[bytes], chunk_bytes: int = CHUNK_BYTES) -> bool:
    """Write the JPEG from ``src`` to ``dst`` without EXIF, XMP, IPTC, comments or trailer."""
    source = ByteSource(src, chunk_bytes)
    if not source.available(2) or source.take(2) != b"\xff\xd8":
        return False
    dst.write(b"\xff\xd8")
    while source.available(2):
        head = source.peek(2)
        if head[0] != 0xFF:
            return False
        marker = head[1]
        if marker == 0xFF:
            source.skip_fill()
            continue
        if marker == _EOI:
            dst.write(b"\xff\xd9")
            return True
        if marker in STANDALONE or marker == _SOI:
            return False  # not where a header may be
        if not source.available(4):
            return False
        length = int.from_bytes(source.peek(4)[2:4], "big")
        if length < 2 or not source.available(2 + length):
            return False
        segment = source.take(2 + length)
        if marker == _SOS:
            dst.write(segment)
            if not copy_scan(source, dst):
                return False
        elif _keep_jpeg_segment(marker, segment):
            dst.write(segment)
    return False


def strip_png(src: IO[bytes], dst: IO[bytes], chunk_bytes: int = CHUNK_BYTES) -> bool:
    """Write the PNG from ``src`` to ``dst`` with only the chunks that define the picture."""
    source = ByteSource(src, chunk_bytes)
    if not source.available(len(_PNG_SIGNATURE)):
        return False
    if source.take(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
        return False
    dst.write(_PNG_SIGNATURE)
    while source.available(12):
        head = source.peek(8)
        length = int.from_bytes(head[0:4], "big")
        chunk_type = head[4:8]
        # Length, type, data and CRC.
        if not source.copy(12 + length, dst if chunk_type in _PNG_KEEP else None):
            return False
        if chunk_type == b"IEND":
            return True
    return False
