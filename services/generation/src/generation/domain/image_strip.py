"""Lossless metadata removal: the compressed pixels are copied byte for byte.

Re-encoding a photo only to drop its EXIF costs a full decode and encode and
makes the file larger; when the picture needs no rotation, removing the
metadata segments is enough. JPEG keeps only JFIF, the ICC profile and Adobe's
colour-transform segment; PNG keeps only the chunks that define the pixels and
their colours. Anything after the end of the image (a second MPO picture, an
appended archive) is dropped. Each function answers None when the stream cannot
be walked, and the caller falls back to re-encoding.
"""

from __future__ import annotations

_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
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


def _scan_end(data: bytes, start: int) -> int | None:
    """Where the entropy-coded data that begins at ``start`` ends (at a marker)."""
    pos = start
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return None
        following = data[pos + 1]
        if following == 0xFF:  # fill byte before a marker
            pos += 1
        elif following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
            pos += 2
        else:
            return pos


def strip_jpeg(data: bytes) -> bytes | None:
    """The JPEG without EXIF, XMP, IPTC, comments or trailing data."""
    if not data.startswith(b"\xff\xd8"):
        return None
    out = bytearray(b"\xff\xd8")
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == _EOI:
            out += b"\xff\xd9"
            return bytes(out)
        if marker in _STANDALONE or marker == _SOI:
            return None  # not where a header may be
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            return None
        if marker == _SOS:
            scan_end = _scan_end(data, end)
            if scan_end is None:
                return None
            out += data[pos:scan_end]
            pos = scan_end
            continue
        if _keep_jpeg_segment(marker, data[pos:end]):
            out += data[pos:end]
        pos = end
    return None


def strip_png(data: bytes) -> bytes | None:
    """The PNG with only the chunks that define the picture, up to IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out = bytearray(_PNG_SIGNATURE)
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk_type = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        if chunk_type in _PNG_KEEP:
            out += data[pos:end]
        if chunk_type == b"IEND":
            return bytes(out)
        pos = end
    return None
