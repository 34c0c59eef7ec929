"""Lossless metadata removal keeps the pixels bit for bit and drops everything else."""

from __future__ import annotations

import io

from PIL import Image, ImageChops, PngImagePlugin

from generation.domain.image_strip import strip_jpeg, strip_png
from generation.domain.images import inspect_and_clean
from kit.runtime_config import Uploads

UPLOADS = Uploads()


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
        stripped = strip_jpeg(original)
        assert stripped is not None
        assert b"SecretCam" not in stripped
        assert b"home at 12" not in stripped
        assert b"PK\x03\x04" not in stripped
        assert stripped.endswith(b"\xff\xd9")
        assert _same_pixels(original, stripped)
        with Image.open(io.BytesIO(stripped)) as image:
            assert not image.getexif()


def test_jpeg_colour_profile_is_kept() -> None:
    profile = b"\x00" * 128 + b"fake-icc"
    stripped = strip_jpeg(_jpeg(icc=profile))
    assert stripped is not None
    with Image.open(io.BytesIO(stripped)) as image:
        assert image.info.get("icc_profile") == profile


def test_upright_jpeg_upload_is_not_reencoded() -> None:
    original = _jpeg()
    clean = inspect_and_clean(original, UPLOADS, "input1")
    assert clean.mime_type == "image/jpeg"
    assert (clean.width, clean.height) == (96, 64)
    assert len(clean.data) < len(original)
    assert b"SecretCam" not in clean.data
    assert _same_pixels(original, clean.data)


def test_png_text_and_exif_chunks_go() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Citizen")
    info.add_itxt("Location", "-33.86, 151.20")
    out = io.BytesIO()
    _photo().save(
        out, format="PNG", pnginfo=info, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"
    )
    original = out.getvalue() + b"trailing"
    stripped = strip_png(original)
    assert stripped is not None
    assert b"Jane Citizen" not in stripped
    assert b"151.20" not in stripped
    assert b"eXIf" not in stripped
    assert stripped.endswith(b"IEND\xaeB`\x82")
    assert _same_pixels(original, stripped)
    clean = inspect_and_clean(original, UPLOADS, "input1")
    assert clean.data == stripped


def test_unwalkable_streams_answer_none() -> None:
    assert strip_jpeg(b"\xff\xd8\xff\xe1\x00") is None
    assert strip_jpeg(b"not a jpeg") is None
    assert strip_png(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR") is None
