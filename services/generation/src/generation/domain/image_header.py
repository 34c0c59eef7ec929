"""Reading an upload's type and declared size from its header, decoding nothing.

The magic signature names the type; the size comes from the PNG IHDR chunk, the
WebP VP8/VP8L/VP8X header, or the largest JPEG frame declared before the image
data. The JPEG walk reads the file forward in bounded pieces (segments are
skipped, runs of fill bytes at C speed), so a hostile 10 MB header costs little.

The JPEG walk also refuses (answers None) what Pillow's own header parser, a
Python loop, would walk one byte or one segment at a time: a run of more than
``MAX_JPEG_FILL`` fill bytes, more than ``MAX_JPEG_SEGMENTS`` segments or
``MAX_JPEG_TABLES`` tables before the image data, and more than one frame header
(Pillow keeps the last frame's size, libjpeg refuses a second one: a file whose
size depends on who reads it is a lie).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

from generation.domain.byte_source import ByteSource

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Enough for the PNG and WebP size fields (the JPEG header is walked instead).
_HEADER_BYTES = 30
# Start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Tables: Huffman (DHT), quantization (DQT), restart interval (DRI), arithmetic (DAC).
_JPEG_TABLES = frozenset({0xC4, 0xDB, 0xDD, 0xCC})
# Encoders write a handful of fill bytes at most; Pillow walks each in a Python loop.
MAX_JPEG_FILL = 64
# A photo's header has about 10-20 segments (APPn, DQT, SOF, DHT); extended XMP or a
# split ICC profile add a few dozen. Each costs Pillow a Python iteration.
MAX_JPEG_SEGMENTS = 512
# Baseline needs at most 4 DQT + 4 DHT (often merged into fewer segments).
MAX_JPEG_TABLES = 32


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
    """The one frame declared before the image data starts (SOS); None if refused."""
    walk = _walk_jpeg_header(source)
    return None if walk.problem else walk.frame


def jpeg_header_problem(source: ByteSource) -> str | None:
    """Why the header walk refuses these bytes, or None: fine so far, or too few bytes to
    tell. The walk reads forward only, so bytes it refuses refuse any longer file too."""
    walk = _walk_jpeg_header(source)
    if walk.problem is None and walk.ended and walk.frame is None:
        return "no frame before the image data"
    return walk.problem


@dataclass
class _JpegWalk:
    frame: tuple[int, int] | None = None
    # Why the walk stopped refusing the file; None when it did not.
    problem: str | None = None
    # Whether the walk reached the image data or the end of image (not the bytes' end).
    ended: bool = False


def _walk_jpeg_header(source: ByteSource) -> _JpegWalk:
    walk = _JpegWalk()
    segments = tables = 0
    if not source.skip(2):
        return walk
    while source.available(4):
        head = source.peek(4)
        if head[0] != 0xFF:
            walk.problem = "no marker where one must be"
            return walk
        marker = head[1]
        if marker == 0xFF:  # fill bytes
            if source.skip_fill(MAX_JPEG_FILL) > MAX_JPEG_FILL:
                walk.problem = "a run of fill bytes"
                return walk
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            # Counted as segments: millions of them were a Python step each (seconds).
            segments += 1
            if segments > MAX_JPEG_SEGMENTS:
                walk.problem = "too many markers"
                return walk
            source.skip(2)
            continue
        if marker in {0xD9, 0xDA}:  # end of image, start of scan: headers are over
            walk.ended = True
            return walk
        length = int.from_bytes(head[2:4], "big")
        segments += 1
        tables += marker in _JPEG_TABLES
        if length < 2 or segments > MAX_JPEG_SEGMENTS or tables > MAX_JPEG_TABLES:
            walk.problem = "a bad length, or too many segments or tables"
            return walk
        if marker in _JPEG_SOF and source.available(9):
            if walk.frame is not None:
                walk.problem = "a second frame header"
                return walk
            head = source.peek(9)
            walk.frame = (int.from_bytes(head[7:9], "big"), int.from_bytes(head[5:7], "big"))
        if not source.skip(2 + length):
            break
    return walk


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit canvas width - 1 and height - 1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    return vp8_size(chunk, data[20:30])


def vp8_size(fourcc: bytes, payload: bytes) -> tuple[int, int] | None:
    """The size in a VP8L or VP8 chunk, from the first 10 bytes of its payload."""
    if fourcc == b"VP8L" and payload[:1] == b"\x2f" and len(payload) >= 5:
        bits = int.from_bytes(payload[1:5], "little")  # 14-bit width - 1, height - 1
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if fourcc == b"VP8 " and payload[3:6] == b"\x9d\x01\x2a" and len(payload) >= 10:
        width = int.from_bytes(payload[6:8], "little") & 0x3FFF  # lossy key frame
        return width, int.from_bytes(payload[8:10], "little") & 0x3FFF
    return None
