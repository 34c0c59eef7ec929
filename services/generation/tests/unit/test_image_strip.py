"""Lossless metadata removal keeps the pixels bit for bit and drops everything else.

The strippers work file to file in bounded pieces. Their output is compared
with the previous whole-bytes implementation (kept below, verbatim, as the
oracle) on the same fixtures, with pieces so small that every boundary case
(a 0xFF at the end of a piece, a segment split in two) is crossed.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

import pytest
from PIL import Image, ImageChops, PngImagePlugin

import generation.domain
from generation.domain.image_header import read_header
from generation.domain.image_strip import (
    _EOI,
    _PNG_KEEP,
    _PNG_SIGNATURE,
    _SOI,
    _SOS,
    STANDALONE,
    _keep_jpeg_segment,
    strip_jpeg,
    strip_png,
)
from generation.domain.images import inspect_and_clean
from kit.runtime_config import Uploads

UPLOADS = Uploads()
Stripper = Callable[[IO[bytes], IO[bytes], int], bool]


# The parsers under test live here; only their lines are counted.
DOMAIN_DIR = str(Path(generation.domain.__file__).parent)


def stripped(strip: Stripper, data: bytes, chunk_bytes: int = 256 * 1024) -> bytes | None:
    """``strip`` from one in-memory file to another; None when it cannot walk ``data``."""
    out = io.BytesIO()
    return out.getvalue() if strip(io.BytesIO(data), out, chunk_bytes) else None


def strip_jpeg_bytes(data: bytes) -> bytes | None:
    return stripped(strip_jpeg, data)


def strip_png_bytes(data: bytes) -> bytes | None:
    return stripped(strip_png, data)


def clean_bytes(data: bytes) -> bytes:
    with io.BytesIO(data) as source:
        clean = inspect_and_clean(source, UPLOADS, "input1")
    with clean.file:
        return clean.file.read()


# --- The previous implementation (whole bytes in, whole bytes out): the oracle. ---


# The constants and the per-segment decision are shared with the module: the oracle
# checks the streaming machinery (pieces, look-ahead, fill bytes), not those rules.
def _r_scan_end(data: bytes, start: int) -> int | None:
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


def reference_strip_jpeg(data: bytes) -> bytes | None:
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
        if marker in STANDALONE or marker == _SOI:
            return None  # not where a header may be
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > len(data):
            return None
        if marker == _SOS:
            scan_end = _r_scan_end(data, end)
            if scan_end is None:
                return None
            out += data[pos:scan_end]
            pos = scan_end
            continue
        if _keep_jpeg_segment(marker, data[pos:end]):
            out += data[pos:end]
        pos = end
    return None


def reference_strip_png(data: bytes) -> bytes | None:
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


# --- Tests. ---


def _photo(size: tuple[int, int] = (96, 64)) -> Image.Image:
    image = Image.new("RGB", size)
    for x in range(size[0]):
        for y in range(size[1]):
            image.putpixel((x, y), (x * 2 % 256, y * 3 % 256, (x + y) % 256))
    return image


def _jpeg(progressive: bool = False, icc: bytes | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif[0x0112] = 1
    exif[0x8825] = {1: "S", 2: (33.0, 52.0, 7.0)}
    out = io.BytesIO()
    options: dict[str, object] = {"exif": exif, "quality": 85, "progressive": progressive}
    if icc:
        options["icc_profile"] = icc
    _photo().save(out, format="JPEG", **options)
    data = out.getvalue()
    # A comment segment after SOI and an archive appended after EOI.
    return data[:2] + b"\xff\xfe\x00\x0ehome at 12 x" + data[2:] + b"PK\x03\x04zipzipzip"


def _same_pixels(a: bytes, b: bytes) -> bool:
    with Image.open(io.BytesIO(a)) as first, Image.open(io.BytesIO(b)) as second:
        return ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is None


def test_jpeg_metadata_and_trailer_go_and_pixels_stay() -> None:
    for progressive in (False, True):
        original = _jpeg(progressive=progressive)
        result = strip_jpeg_bytes(original)
        assert result is not None
        assert b"SecretCam" not in result
        assert b"home at 12" not in result
        assert b"PK\x03\x04" not in result
        assert result.endswith(b"\xff\xd9")
        assert _same_pixels(original, result)
        with Image.open(io.BytesIO(result)) as image:
            assert not image.getexif()


def test_jpeg_colour_profile_is_kept() -> None:
    profile = b"\x00" * 128 + b"fake-icc"
    result = strip_jpeg_bytes(_jpeg(icc=profile))
    assert result is not None
    with Image.open(io.BytesIO(result)) as image:
        assert image.info.get("icc_profile") == profile


def test_upright_jpeg_upload_is_not_reencoded() -> None:
    original = _jpeg()
    with io.BytesIO(original) as source:
        clean = inspect_and_clean(source, UPLOADS, "input1")
    with clean.file:
        data = clean.file.read()
    assert clean.mime_type == "image/jpeg"
    assert (clean.width, clean.height) == (96, 64)
    assert len(data) == clean.size < len(original)
    assert b"SecretCam" not in data
    assert _same_pixels(original, data)


# The EXIF below is cut short; Pillow warns as it reads it, and a warning made an error
# (the suite's setting) would read as an unreadable orientation and send the PNG to be
# re-encoded, which production never does for it.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_png_text_and_exif_chunks_go() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Citizen")
    info.add_itxt("Location", "-33.86, 151.20")
    out = io.BytesIO()
    _photo().save(
        out, format="PNG", pnginfo=info, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"
    )
    original = out.getvalue() + b"trailing"
    result = strip_png_bytes(original)
    assert result is not None
    assert b"Jane Citizen" not in result
    assert b"151.20" not in result
    assert b"eXIf" not in result
    assert result.endswith(b"IEND\xaeB`\x82")
    assert _same_pixels(original, result)
    assert clean_bytes(original) == result


def test_unwalkable_streams_answer_none() -> None:
    assert strip_jpeg_bytes(b"\xff\xd8\xff\xe1\x00") is None
    assert strip_jpeg_bytes(b"not a jpeg") is None
    assert strip_png_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR") is None


def _png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Citizen")
    info.add_itxt("Location", "-33.86, 151.20", zip=True)
    out = io.BytesIO()
    _photo((120, 90)).save(out, format="PNG", pnginfo=info)
    return out.getvalue() + b"trailing"


def _jpeg_with_restarts() -> bytes:
    out = io.BytesIO()
    _photo().save(out, format="JPEG", quality=90, restart_marker_blocks=2)
    return out.getvalue()


def _with_fill_bytes(data: bytes) -> bytes:
    """Fill bytes (0xFF runs) before a header marker and before the end of the image."""
    sof = data.index(b"\xff\xdb")
    body = data[:sof] + b"\xff" * 700 + data[sof:]
    end = body.rindex(b"\xff\xd9")
    return body[:end] + b"\xff" * 9 + body[end:]


JPEG_FIXTURES = {
    "exif and gps": _jpeg(),
    "progressive": _jpeg(progressive=True),
    "icc profile": _jpeg(icc=b"\x00" * 128 + b"fake-icc"),
    "restart markers": _jpeg_with_restarts(),
    "fill bytes": _with_fill_bytes(_jpeg()),
}
CHUNK_SIZES = [1, 2, 3, 7, 64, 4096, 256 * 1024]


@pytest.mark.parametrize("name", list(JPEG_FIXTURES))
def test_file_to_file_jpeg_equals_the_bytes_version_at_any_piece_size(name: str) -> None:
    data = JPEG_FIXTURES[name]
    expected = reference_strip_jpeg(data)
    assert expected is not None
    for chunk_bytes in CHUNK_SIZES:
        assert stripped(strip_jpeg, data, chunk_bytes) == expected, chunk_bytes


def test_file_to_file_png_equals_the_bytes_version_at_any_piece_size() -> None:
    data = _png_with_text()
    expected = reference_strip_png(data)
    assert expected is not None
    for chunk_bytes in CHUNK_SIZES:
        assert stripped(strip_png, data, chunk_bytes) == expected, chunk_bytes


def test_truncated_and_damaged_streams_are_judged_like_the_bytes_version() -> None:
    jpeg, png = _jpeg(progressive=True), _png_with_text()
    for cut in range(0, len(jpeg), 13):
        assert stripped(strip_jpeg, jpeg[:cut], 5) == reference_strip_jpeg(jpeg[:cut]), cut
    for cut in range(0, len(png), 29):
        assert stripped(strip_png, png[:cut], 5) == reference_strip_png(png[:cut]), cut
    for position in range(2, 600, 11):  # one byte damaged in the headers
        damaged = jpeg[:position] + b"\x00" + jpeg[position + 1 :]
        assert stripped(strip_jpeg, damaged, 7) == reference_strip_jpeg(damaged), position


def test_runs_of_fill_bytes_cost_no_per_byte_work() -> None:
    base = _jpeg()
    base = base[: base.rindex(b"\xff\xd9") + 2]  # without the appended archive
    run = b"\xff" * 4_000_000
    sof = base.index(b"\xff\xdb")
    hostile = base[:sof] + run + base[sof:-2] + run + b"\xff\xd9"
    # Counted, not timed: the Python lines the parsers run grow with the pieces read,
    # never with the bytes (a loop over 8 million fill bytes would run millions).
    lines = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal lines
        if event == "line" and frame.f_code.co_filename.startswith(DOMAIN_DIR):
            lines += 1
        return tracer

    sys.settrace(tracer)
    try:
        result = stripped(strip_jpeg, hostile)
        header = read_header(io.BytesIO(hostile))  # the walk before Pillow sees a byte
    finally:
        sys.settrace(None)
    assert lines < 20_000, lines
    # Header fill bytes go; those inside the scan are data and stay.
    expected = reference_strip_jpeg(base)
    assert expected is not None
    assert result == expected[:-2] + run + b"\xff\xd9"
    # The header walk skips the run as fast, then refuses it: Pillow would not.
    assert header is None
