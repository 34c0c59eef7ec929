"""Structural checks on an upload, decoding nothing: what would make a decoder
loop per byte or allocate far beyond the file's size is refused before it runs.

Each check is a C-speed scan (a regex search) or a walk over at most a few
thousand chunk headers, so it costs milliseconds on a 10 MB file:

- density: a file orders of magnitude too small for its pixel count (see
  ``Uploads.max_pixels_per_byte``) is a decompression bomb within the pixel cap;
- PNG: IHDR first and only once (Pillow takes the size of the last IHDR it sees),
  at most ``MAX_PNG_CHUNKS`` chunks up to IEND (Pillow reads each in Python);
- WebP: at most ``MAX_WEBP_CHUNKS`` RIFF chunks (animation frames included), and a
  still extended (VP8X) file's canvas must be its image's size (libwebp allocates
  the canvas);
- JPEG: at most ``MAX_JPEG_SCANS`` scans up to the end of the image (a progressive
  decoder walks every block of the image once per scan), and at most
  ``MAX_JPEG_WALKED_SEGMENTS`` segments on the way. The header's own limits (fill
  runs, segments, tables, one frame) are in ``image_header``.

Every function answers a short reason (for logs and tests) or None when fine.
``prefix_problem`` answers from an upload's first bytes, while the rest is still
on its way: only what those bytes already prove (see there).
"""

from __future__ import annotations

from typing import IO

from generation.domain.byte_source import ByteSource
from generation.domain.image_header import jpeg_header_problem, read_header, vp8_size
from generation.domain.image_strip import STANDALONE, copy_scan

# libpng writes 8 KiB IDAT chunks (a 10 MB PNG has ~1,300); some encoders use 4 KiB.
MAX_PNG_CHUNKS = 4096
# A still WebP has 1-5 chunks (VP8X, ICCP, ALPH, VP8, EXIF, XMP); a short animation ~20.
MAX_WEBP_CHUNKS = 64
# libjpeg writes 10 scans for a progressive photo, mozjpeg up to ~15.
MAX_JPEG_SCANS = 64
# Segments of the whole image, header and tables between scans included (the header
# alone is held to image_header's MAX_JPEG_SEGMENTS): each is a step of the walk.
MAX_JPEG_WALKED_SEGMENTS = 1024
_SOS, _EOI = 0xDA, 0xD9
_PNG_START = b"\x89PNG\r\n\x1a\n"
_ANIMATION_FLAG = 0x02


def density_problem(size: int, width: int, height: int, max_pixels_per_byte: int) -> str | None:
    """Too many pixels for so few bytes: it decodes to far more memory than it weighs."""
    if width * height > size * max_pixels_per_byte:
        return "implausibly small for its pixel count"
    return None


def prefix_problem(prefix: IO[bytes], max_pixels: int) -> str | None:
    """A reason to refuse (415) that the first bytes of an upload already prove, or None.

    Only refusals no later byte can change: the JPEG header walk and the PNG chunk walk
    read forward, so what they refuse in a prefix they refuse in the whole file. A PNG
    over ``max_pixels`` is left to the whole file's check (it is a 400, which comes
    first); WebP files are judged whole (their checks need the file's size).
    """
    prefix.seek(0)
    start = prefix.read(len(_PNG_START))
    prefix.seek(0)
    if start.startswith(b"\xff\xd8\xff"):
        return jpeg_header_problem(ByteSource(prefix))
    if start == _PNG_START:
        header = read_header(prefix)
        if header is not None and header[1] * header[2] > max_pixels:
            return None
        problem = "no readable IHDR" if header is None else _png_problem(prefix)
        return None if problem == "truncated" else problem
    return None


def structure_problem(source: IO[bytes], mime_type: str, width: int, height: int) -> str | None:
    """The first structural reason to refuse ``source`` (of ``mime_type``), or None."""
    source.seek(0)
    try:
        if mime_type == "image/png":
            return _png_problem(source)
        if mime_type == "image/webp":
            return _webp_problem(source, width, height)
        return _jpeg_problem(source)
    finally:
        source.seek(0)


def _png_problem(source: IO[bytes]) -> str | None:
    source.seek(8)  # after the signature (checked by the header reader)
    for index in range(MAX_PNG_CHUNKS):
        head = source.read(8)
        if len(head) < 8:
            return "truncated"
        chunk_type = head[4:8]
        if (chunk_type == b"IHDR") != (index == 0):
            return "IHDR not first or repeated"
        if chunk_type == b"IEND":
            return None
        # Data and CRC; a length past the end shows up as a short read next time.
        source.seek(int.from_bytes(head[0:4], "big") + 4, 1)
    return "too many chunks"


def _webp_problem(source: IO[bytes], width: int, height: int) -> str | None:
    riff = source.read(12)
    end = 8 + int.from_bytes(riff[4:8], "little")
    position, flags = 12, 0
    frame: tuple[int, int] | None = None
    for _ in range(MAX_WEBP_CHUNKS):
        if position + 8 > end:
            return _webp_canvas_problem(flags, frame, width, height)
        source.seek(position)
        head = source.read(18)
        if len(head) < 8:
            return "truncated"
        fourcc, length = head[0:4], int.from_bytes(head[4:8], "little")
        if fourcc == b"VP8X":
            flags = head[8] if len(head) > 8 else 0
        elif fourcc in {b"VP8 ", b"VP8L"} and frame is None:
            frame = vp8_size(fourcc, head[8:])
        position += 8 + length + (length & 1)
    return "too many chunks"


def _webp_canvas_problem(
    flags: int, frame: tuple[int, int] | None, width: int, height: int
) -> str | None:
    if flags & _ANIMATION_FLAG:
        return None  # frames are placed on the canvas; their count is bounded above
    if frame is None:
        return "no image data"
    if frame != (width, height):
        return "canvas and image sizes differ"
    return None


def _jpeg_problem(source: IO[bytes]) -> str | None:
    """Counts the scans a decoder reads: the file is walked as libjpeg reads it, from
    its start to its end-of-image marker. Segments are skipped by their length (an
    EXIF thumbnail's own scans are not the image's), entropy-coded data is searched for
    the marker that ends it at C speed, and bytes that are no marker where one must be
    are skipped to the next one (libjpeg resynchronizes the same way). What follows
    the end of the image (a phone's motion-photo video, an appended archive) is never
    decoded, so it is not counted. A file the walk cannot finish is left to the
    decoder, which refuses it."""
    walk = ByteSource(source)
    if not walk.skip(2):
        return None
    scans = segments = 0
    while walk.available(2):
        head = walk.peek(2)
        if head[0] != 0xFF:
            if not copy_scan(walk, None):
                return None
            continue
        marker = head[1]
        if marker == 0xFF:
            walk.skip_fill()
            continue
        if marker == _EOI:
            return None
        segments += 1  # markers without a length too: each is a step of the walk
        if segments > MAX_JPEG_WALKED_SEGMENTS:
            return "too many segments"
        if marker in STANDALONE:
            walk.skip(2)
            continue
        if not walk.available(4):
            return None
        if not walk.skip(2 + int.from_bytes(walk.peek(4)[2:4], "big")):
            return None
        if marker == _SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                return "too many scans"
            if not copy_scan(walk, None):
                return None
    return None
