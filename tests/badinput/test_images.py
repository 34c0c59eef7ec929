"""Hostile images: truncated, polyglot, disguised and decompression bombs.

Truncated, disguised and huge-dimension files are refused with a 4xx before
anything is stored or charged; the bombs fast and without decoding (the process's
peak memory barely moves). A real image with another file glued on is accepted
as the image alone (see the polyglot test for why).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Any

import pytest
from PIL import Image

from tests.badinput.checks import assert_error, assert_nothing_left, submit_measured
from tests.e2e.harness import Stack, User, jpeg_bytes, objects_under

JPEG = jpeg_bytes()


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, rows: int = 1) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` with a tiny compressed body."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few rows of zeros: compresses to almost nothing, decoding would need gigabytes.
    raw = zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)) * rows, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose frame header is patched to declare another size."""
    data = bytearray(JPEG)
    index = data.index(b"\xff\xc0")
    data[index + 5 : index + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """An extended WebP header (VP8X) declaring a huge canvas, no image data."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<script>alert(1)</script>")
    return buffer.getvalue()


HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"

TRUNCATED = {
    "jpeg_half": JPEG[: len(JPEG) // 2],
    "jpeg_header_only": JPEG[:120],
    "jpeg_signature_only": b"\xff\xd8\xff",
    "png_half": png_bytes()[: len(png_bytes()) // 2],
    "png_signature_only": b"\x89PNG\r\n\x1a\n",
    "png_without_idat": png_declaring(64, 48)[:33] + _chunk(b"IEND", b""),
}


def jpeg_patched(marker: bytes, offset: int, value: int) -> bytes:
    """The real JPEG with one byte of its first ``marker`` segment replaced."""
    data = bytearray(JPEG)
    data[data.index(marker) + offset] = value
    return bytes(data)


# Whole in structure (the metadata strip walks them to the end, so they are stored
# while a worker decodes them), but libjpeg cannot decode them.
UNDECODABLE = {
    "jpeg_bogus_huffman_table": jpeg_patched(b"\xff\xc4", 5, 0xFF),
    "jpeg_undefined_quant_table": jpeg_patched(b"\xff\xc0", 12, 9),
}

DISGUISED = {
    "png_signature_then_html": b"\x89PNG\r\n\x1a\n" + HTML,
    "jpeg_signature_then_zip": b"\xff\xd8\xff\xe0" + zip_bytes(),
    "zip_then_jpeg": zip_bytes() + JPEG,
    "html_then_jpeg": HTML + JPEG,
    "riff_webp_then_html": b"RIFF\x00\x01\x00\x00WEBP" + HTML,
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "gif_named_jpeg": b"GIF89a" + b"\x00" * 64,
}

# (file, status): over the pixel cap is 400 ("too large to process"), dimensions no
# image can have are 415.
BOMBS = {
    "png_60000_square": (png_declaring(60000, 60000), 400),
    "png_1_by_max": (png_declaring(1, 2**31 - 1), 400),
    "png_zero_width": (png_declaring(0, 48), 415),
    "jpeg_65535_square": (jpeg_declaring(65535, 65535), 400),
    "jpeg_zero_height": (jpeg_declaring(64, 0), 415),
    "webp_16k_square": (webp_declaring(16383, 16383), 400),
}


async def _submit(user: User, data: bytes) -> int:
    response = await user.submit("redesign", images=[data])
    assert_error(response, {400, 413, 415}, "VALIDATION_ERROR")
    return response.status_code


@pytest.mark.parametrize("case", sorted(TRUNCATED))
async def test_truncated_images_are_415(stack: Stack, user: User, case: str) -> None:
    status = await _submit(user, TRUNCATED[case])
    assert status == 415
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
async def test_undecodable_jpegs_are_415_and_what_was_stored_meanwhile_is_removed(
    stack: Stack, user: User, case: str
) -> None:
    status = await _submit(user, UNDECODABLE[case])
    assert status == 415
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize("case", sorted(DISGUISED))
async def test_disguised_files_are_415(stack: Stack, user: User, case: str) -> None:
    status = await _submit(user, DISGUISED[case])
    assert status == 415
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize("case", sorted(BOMBS))
async def test_huge_dimensions_are_refused_without_decoding(
    stack: Stack, user: User, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = stack.ctx.decoder
    asked: list[object] = []
    # Counted: a worker's memory budget would refuse it too, as 400.
    in_worker = decoder._in_worker

    async def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(args[1])
        return await in_worker(*args, **kwargs)

    monkeypatch.setattr(decoder, "_in_worker", counted)
    data, status = BOMBS[case]
    response, cost = await submit_measured(stack, user, data)
    assert_error(response, status, "VALIDATION_ERROR")
    # Decoding 60000 x 60000 RGB would need ~10 GiB: refused from the header, in this
    # process, before any worker is asked.
    assert asked == [], asked
    assert cost.workers_cpu < 0.05, cost
    assert cost.service_peak_growth_mib < 64, cost
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize(
    ("case", "data", "payload"),
    [
        ("jpeg_then_zip", JPEG + zip_bytes(), b"payload.html"),
        ("jpeg_then_html", JPEG + HTML, b"<script>"),
        ("png_then_html", png_bytes() + HTML, b"<script>"),
    ],
)
async def test_polyglots_are_neutralized(
    stack: Stack, user: User, case: str, data: bytes, payload: bytes
) -> None:
    """A decodable image with another file glued on is stored as the image alone.

    Refusing trailing bytes would refuse real photos: phones append motion-photo
    videos and maker trailers after a JPEG's end. Instead the pixels are re-encoded,
    so what is stored (and sent to the provider) is a plain image, never the polyglot.
    """
    response = await user.submit("redesign", images=[data])
    assert response.status_code == 202, (case, response.text)
    [key] = await objects_under(stack, "private", f"{user.id}/inputs/")
    stored = await stack.ctx.storage.get_bytes("private", key, 10 * 1024 * 1024)
    assert stored is not None
    assert payload not in stored
    assert stored.endswith(b"\xff\xd9" if key.endswith(".jpg") else _chunk(b"IEND", b""))
    await user.wait_for(response.json()["id"], {"succeeded"})
