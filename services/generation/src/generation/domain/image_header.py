"""Reading an upload's type and declared size from its header, decoding nothing.

The magic signature names the type; the size comes from the PNG IHDR chunk, the
WebP VP8/VP8L/VP8X header, or the largest JPEG frame declared before the image
data. The JPEG walk reads the file forward in bounded pieces (segments are
skipped, runs of fill bytes at C speed), so a hostile 10 MB header costs little.
"""

from __future__ import annotations

from typing import IO

from generation.domain.byte_source import ByteSource

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Enough for the PNG and WebP size fields (the JPEG header is walked instead).
_HEADER_BYTES = 30
# Start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def read_header(source: IO[bytes]) -> tuple[str, int, int] | None:
    """``(mime_type, width, height)`` from the signature and header, or None."""
    source.seek(0)
    data = source.read(_HEADER_BYTES)
    size: tuple[int, int] | None = None
    mime_type = ""
    if data.startswith(b"\xff\xd8\xff"):
        source.seek(0)
        mime_type, size = "image/jpeg", _jpeg_size(ByteSource(source))
    elif data.startswith(_PNG_SIGNATURE):
        mime_type, size = "image/png", _png_size(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime_type, size = "image/webp", _webp_size(data)
    if size is None or min(size) <= 0:
        return None
    return mime_type, size[0], size[1]


def _png_size(data: bytes) -> tuple[int, int] | None:
    # The first chunk must be IHDR (length 13): width and height, big-endian.
    if data[8:16] != b"\x00\x00\x00\x0dIHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(source: ByteSource) -> tuple[int, int] | None:
    """The largest frame declared before the image data starts (SOS)."""
    largest: tuple[int, int] | None = None
    if not source.skip(2):
        return None
    while source.available(4):
        head = source.peek(4)
        if head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill bytes
            source.skip_fill()
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            source.skip(2)
            continue
        if marker in {0xD9, 0xDA}:  # end of image, start of scan: headers are over
            break
        length = int.from_bytes(head[2:4], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF and source.available(9):
            head = source.peek(9)
            height = int.from_bytes(head[5:7], "big")
            width = int.from_bytes(head[7:9], "big")
            if largest is None or width * height > largest[0] * largest[1]:
                largest = (width, height)
        if not source.skip(2 + length):
            break
    return largest


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if len(data) < 30:
        return None
    if chunk == b"VP8X":  # extended: 24-bit canvas width - 1 and height - 1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width - 1, height - 1
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        return width, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None
