"""Lossless metadata removal: the compressed pixels are copied byte for byte.

Re-encoding a photo only to drop its EXIF costs a full decode and encode and
makes the file larger; when the picture needs no rotation, removing the
metadata segments is enough. JPEG keeps only JFIF, the ICC profile and Adobe's
colour-transform segment; PNG keeps only the chunks that define the pixels and
their colours; a still WebP keeps its VP8X header (with the EXIF and XMP flags
cleared), ICC profile, alpha and image chunks. Anything after the end of the image
(a second MPO picture, an appended archive) is dropped.

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

_WEBP_KEEP = frozenset({b"VP8X", b"ICCP", b"ALPH", b"VP8 ", b"VP8L"})
# VP8X flags: the file holds EXIF (0x08) or XMP (0x04); an animation (0x02).
_WEBP_METADATA_FLAGS = 0x08 | 0x04
_WEBP_ANIMATION_FLAG = 0x02
_WEBP_MAX_CHUNKS = 64


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


def strip_webp(src: IO[bytes], dst: IO[bytes], chunk_bytes: int = CHUNK_BYTES) -> bool:
    """Write the still WebP from ``src`` to ``dst`` without its EXIF, XMP and unknown
    chunks. False for an animation (only its first frame is decoded to prove it, so
    it is re-encoded from that frame) and for a stream that cannot be walked.

    ``src`` is seekable: its chunk headers (a few) are read first, for the new size.
    """
    chunks = _webp_chunks(src)
    if chunks is None:
        return False
    kept = [chunk for chunk in chunks if chunk[0] in _WEBP_KEEP]
    size = 4 + sum(_padded(length) for _, _, length in kept)
    dst.write(b"RIFF" + size.to_bytes(4, "little") + b"WEBP")
    for fourcc, start, length in kept:
        src.seek(start)
        if fourcc == b"VP8X":
            chunk = bytearray(src.read(_padded(length)))
            chunk[8] &= ~_WEBP_METADATA_FLAGS & 0xFF
            dst.write(chunk)
        elif not ByteSource(src, chunk_bytes).copy(_padded(length), dst):
            return False
    return True


def _padded(length: int) -> int:
    """A chunk's bytes: its header, its data and a pad byte after an odd length."""
    return 8 + length + (length & 1)


def _webp_chunks(src: IO[bytes]) -> list[tuple[bytes, int, int]] | None:
    """``(fourcc, offset, data length)`` of each chunk of a still WebP; None for an
    animation, a chunk past the RIFF's end or the file's, or too many chunks."""
    src.seek(0)
    riff = src.read(12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WEBP":
        return None
    end = 8 + int.from_bytes(riff[4:8], "little")
    if end > src.seek(0, 2):
        return None
    chunks: list[tuple[bytes, int, int]] = []
    position = 12
    while position < end:
        if len(chunks) == _WEBP_MAX_CHUNKS or position + 8 > end:
            return None
        src.seek(position)
        head = src.read(9)
        fourcc, length = head[0:4], int.from_bytes(head[4:8], "little")
        if position + _padded(length) > end or fourcc in {b"ANIM", b"ANMF"}:
            return None
        if fourcc == b"VP8X" and (length < 10 or head[8] & _WEBP_ANIMATION_FLAG):
            return None
        chunks.append((fourcc, position, length))
        position += _padded(length)
    return chunks
