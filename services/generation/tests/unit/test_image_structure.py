"""The structural pre-checks: hostile files refused before decoding, real ones kept.

Each hostile case is checked twice: the check names it, and ``inspect_and_clean``
refuses it with 415 without Pillow decoding a pixel (Pillow's decoders are
forbidden from running while it is refused).
"""

from __future__ import annotations

import functools
import io
import os

import pytest
from PIL import Image, ImageFile

from generation.domain import image_structure
from generation.domain.byte_source import ByteSource
from generation.domain.image_header import MAX_JPEG_FILL, MAX_JPEG_SEGMENTS, read_header
from generation.domain.image_structure import (
    MAX_JPEG_SCANS,
    MAX_JPEG_WALKED_SEGMENTS,
    MAX_PNG_CHUNKS,
    MAX_WEBP_CHUNKS,
    density_problem,
    prefix_problem,
    structure_problem,
)
from generation.domain.images import check_before_decoding, inspect_and_clean
from kit.errors import UnsupportedMediaType
from kit.runtime_config import Uploads
from tests.badinput import hostile

UPLOADS = Uploads()


def problem(data: bytes) -> str | None:
    header = read_header(io.BytesIO(data))
    assert header is not None
    return structure_problem(io.BytesIO(data), *header)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Pillow starts decoding pixels (refusals must come first)."""

    def forbidden(self: ImageFile.ImageFile) -> None:
        raise AssertionError("decoded a file that should have been refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(Image.Image, "load", forbidden)


def assert_refused(data: bytes, uploads: Uploads = UPLOADS) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        inspect_and_clean(io.BytesIO(data), uploads, "input1")
    assert caught.value.reason == "UNSUPPORTED_MEDIA_TYPE"
    assert caught.value.__cause__ is None  # refused by a check, not by a decoder failing


REAL = {
    "jpeg": hostile.jpeg(),
    "jpeg_progressive": hostile.jpeg(640, 480, progressive=True),
    "jpeg_few_fill_bytes": hostile.jpeg_with_fill(MAX_JPEG_FILL),
    "png": hostile.png(),
    "png_some_chunks": hostile.png_with_chunks(100),
    "webp_lossy": hostile.encode(hostile.noise(64, 48), "WEBP", quality=80),
    "webp_lossless": hostile.encode(hostile.noise(64, 48), "WEBP", lossless=True),
    "webp_vp8x_icc": hostile.encode(hostile.noise(64, 48), "WEBP", icc_profile=b"\0" * 64),
    "webp_vp8x_true_canvas": hostile.webp_with_canvas(64, 48),
    "webp_short_animation": hostile.webp_animation(4),
}


@pytest.mark.parametrize("case", sorted(REAL))
def test_real_images_pass_every_check(case: str) -> None:
    data = REAL[case]
    header = read_header(io.BytesIO(data))
    assert header is not None
    assert structure_problem(io.BytesIO(data), *header) is None
    assert density_problem(len(data), header[1], header[2], UPLOADS.max_pixels_per_byte) is None
    clean = inspect_and_clean(io.BytesIO(data), UPLOADS, "input1")
    clean.close()


HEADER_REFUSED = {
    "jpeg_fill_before_dqt": hostile.jpeg_with_fill(MAX_JPEG_FILL + 2),
    "jpeg_fill_before_sof": hostile.jpeg_with_fill(1_000_000, b"\xff\xc0"),
    "jpeg_fill_before_sos": hostile.jpeg_with_fill(9_000_000, b"\xff\xda"),
    "jpeg_comment_flood": hostile.jpeg_with_segments(MAX_JPEG_SEGMENTS + 1),
    "jpeg_dqt_flood": hostile.jpeg_with_segments(40, 0xDB),
    "jpeg_app1_flood": hostile.jpeg_with_segments(100_000, 0xE1),
    "jpeg_two_frames": hostile.jpeg_with_two_frames(4000, 3000),
}


@pytest.mark.parametrize("case", sorted(HEADER_REFUSED))
def test_jpeg_headers_pillow_would_walk_byte_by_byte_are_refused(
    case: str, no_decoding: None
) -> None:
    data = HEADER_REFUSED[case]
    assert read_header(io.BytesIO(data)) is None
    assert_refused(data)


STRUCTURE_REFUSED = {
    "jpeg_many_scans": (hostile.jpeg_with_scans(MAX_JPEG_SCANS + 1), "too many scans"),
    "png_100k_chunks": (hostile.png_with_chunks(100_000), "too many chunks"),
    "png_just_too_many_chunks": (hostile.png_with_chunks(MAX_PNG_CHUNKS), "too many chunks"),
    "png_second_ihdr": (hostile.png_second_ihdr(4000, 3000), "IHDR not first or repeated"),
    "webp_canvas_lies": (
        hostile.webp_with_canvas(640, 480, hostile.encode(hostile.noise(320, 240), "WEBP")),
        "canvas and image sizes differ",
    ),
    "webp_lossless_canvas_lies": (
        hostile.webp_with_canvas(
            640, 480, hostile.encode(hostile.noise(320, 240), "WEBP", lossless=True)
        ),
        "canvas and image sizes differ",
    ),
    "webp_many_frames": (hostile.webp_animation(MAX_WEBP_CHUNKS), "too many chunks"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE_REFUSED))
def test_floods_and_lying_sizes_are_refused(case: str, no_decoding: None) -> None:
    data, reason = STRUCTURE_REFUSED[case]
    assert problem(data) == reason
    assert_refused(data)


DENSITY_REFUSED = {
    "webp_6300_square_lossless": hostile.flat_lossless_webp(6300, 6300),
    "webp_4900_square_lossless": hostile.flat_lossless_webp(4900, 4900),
    "png_lying_ihdr": hostile.png_lying_ihdr(4000, 3000),
    "webp_vp8x_huge_canvas": hostile.webp_with_canvas(5000, 5000),
}


@pytest.mark.parametrize("case", sorted(DENSITY_REFUSED))
def test_files_far_too_small_for_their_pixels_are_refused(case: str, no_decoding: None) -> None:
    data = DENSITY_REFUSED[case]
    header = read_header(io.BytesIO(data))
    assert header is not None
    assert density_problem(len(data), header[1], header[2], UPLOADS.max_pixels_per_byte)
    # Under a pixel cap that lets them through, the density check alone refuses them.
    assert_refused(data, Uploads(max_pixels=40_000_000))


def test_density_threshold_is_the_configured_ratio() -> None:
    assert density_problem(1_000, 2_000, 1_000, 2_000) is None
    assert density_problem(1_000, 2_001, 1_000, 2_000) is not None
    # Photo-like and flat lossy images are far from it (calibration in runtime.toml).
    flat = hostile.encode(Image.new("RGB", (4000, 3000), (200, 200, 200)), "WEBP", quality=92)
    assert density_problem(len(flat), 4000, 3000, 2_000) is None


def test_jpeg_scans_are_counted_to_the_limit_and_across_read_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert problem(hostile.jpeg_with_scans(MAX_JPEG_SCANS)) is None
    assert problem(hostile.jpeg_with_scans(MAX_JPEG_SCANS + 1)) == "too many scans"
    # Read in pieces of every small size, a marker is split across two pieces somewhere:
    # it is still counted, and once.
    data = hostile.jpeg_with_scans(MAX_JPEG_SCANS + 1)
    for piece in (2, 3, 7, 64):
        monkeypatch.setattr(
            image_structure, "ByteSource", functools.partial(ByteSource, chunk_bytes=piece)
        )
        assert problem(data) == "too many scans"
        assert problem(hostile.jpeg_with_scans(MAX_JPEG_SCANS)) is None


def _noise_jpeg() -> bytes:
    return hostile.encode(hostile.noise(640, 480), "JPEG", quality=85)


def test_what_follows_the_end_of_a_jpeg_is_not_counted() -> None:
    """A phone's motion photo: the video after the end marker holds ~16 start-of-scan
    byte pairs per MB of compressed data, which a decoder never reads."""
    trailer = (b"\x00\xff\xda\x00" * 64 + os.urandom(1024)) * 40
    assert trailer.count(b"\xff\xda") > MAX_JPEG_SCANS
    photo = _noise_jpeg() + trailer
    assert problem(photo) is None
    inspect_and_clean(io.BytesIO(photo), UPLOADS, "input1").close()


def test_scans_inside_a_segment_are_not_the_images() -> None:
    """An EXIF thumbnail (or any segment's payload) may hold start-of-scan byte pairs."""
    payload = b"Exif\x00\x00" + b"\xff\xda\x00\x08" * 1000
    data = _noise_jpeg()
    with_app1 = data[:2] + b"\xff\xe1" + (2 + len(payload)).to_bytes(2, "big") + payload + data[2:]
    assert problem(with_app1) is None


def test_an_end_marker_inside_a_segment_does_not_end_the_count() -> None:
    """A comment between scans holding FF D9 must not hide the scans after it."""
    data = hostile.jpeg_with_scans(MAX_JPEG_SCANS + 1)
    first = data.index(b"\xff\xda")
    second = data.index(b"\xff\xda", first + 2)
    comment = b"\xff\xd9" * 8
    com = b"\xff\xfe" + (2 + len(comment)).to_bytes(2, "big") + comment
    assert problem(data[:second] + com + data[second:]) == "too many scans"


def test_scans_after_bytes_that_are_no_marker_are_counted() -> None:
    """libjpeg skips stray bytes to the next marker and reads on: so does the count."""
    data = hostile.jpeg_with_scans(MAX_JPEG_SCANS + 1)
    first = data.index(b"\xff\xda")
    second = data.index(b"\xff\xda", first + 2)
    assert problem(data[:second] + b"\x00\x01garbage\x02" + data[second:]) == "too many scans"


def test_a_flood_of_segments_between_scans_is_refused() -> None:
    data = _noise_jpeg()
    end = data.index(b"\xff\xd9")
    flood = b"\xff\xfe\x00\x02" * (MAX_JPEG_WALKED_SEGMENTS + 1)
    assert problem(data[:end] + flood + data[end:]) == "too many segments"


PREFIX = 64 * 1024


def prefix_of(data: bytes) -> str | None:
    return prefix_problem(io.BytesIO(data[:PREFIX]), UPLOADS.max_pixels)


@pytest.mark.parametrize(
    "data",
    [
        hostile.jpeg_with_fill(9_000_000),
        hostile.jpeg_with_fill(4_000_000, b"\xff\xc0"),
        hostile.jpeg_with_segments(200_000, 0xE1),
        hostile.jpeg_with_two_frames(4000, 3000),
        hostile.png_with_chunks(100_000),
        hostile.png_second_ihdr(5000, 5000),
    ],
    ids=[
        "jpeg_fill",
        "jpeg_fill_before_sof",
        "jpeg_app1_flood",
        "jpeg_two_frames",
        "png_chunks",
        "png_second_ihdr",
    ],
)
def test_a_prefix_proves_what_the_whole_file_check_refuses(data: bytes) -> None:
    assert prefix_of(data) is not None
    with pytest.raises(UnsupportedMediaType):
        check_before_decoding(io.BytesIO(data), UPLOADS, "input1")


@pytest.mark.parametrize("cut", [3, 100, 2000, PREFIX])
def test_a_prefix_of_a_real_photo_or_png_proves_nothing(cut: int) -> None:
    photo = hostile.encode(hostile.noise(1200, 900), "JPEG", quality=95)
    png = hostile.encode(hostile.noise(600, 400), "PNG")
    assert prefix_problem(io.BytesIO(photo[:cut]), UPLOADS.max_pixels) is None
    assert prefix_problem(io.BytesIO(png[:cut]), UPLOADS.max_pixels) is None


def test_a_png_over_the_pixel_cap_is_left_to_the_whole_check() -> None:
    # Its whole-file answer is the 400 for too many pixels, which comes before a 415.
    data = hostile.png_with_chunks(100_000)
    assert prefix_problem(io.BytesIO(data[:PREFIX]), max_pixels=10) is None
