"""Upload inspection and cleaning, on real images made with Pillow in memory."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from generation.domain.images import inspect_and_clean
from generation.domain.spool import spooled_file
from kit.errors import PayloadTooLarge, UnsupportedMediaType, ValidationError
from kit.runtime_config import Uploads

UPLOADS = Uploads()
ACCEPTED_MESSAGE = "input1 must be a JPEG, PNG or WebP image"
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def two_tone(width: int = 40, height: int = 20, mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image.convert(mode)


def camera_exif() -> Image.Exif:
    """EXIF as a phone writes it: turned 90 degrees, a camera make and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "SecretCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (33.0, 51.0, 54.0)
    return exif


@dataclass(frozen=True)
class Cleaned:
    """A CleanImage's facts with its file's bytes (the file itself already closed)."""

    data: bytes
    size: int
    mime_type: str
    extension: str
    width: int
    height: int


def clean_bytes(data: bytes, uploads: Uploads, field: str) -> Cleaned:
    """inspect_and_clean on ``data``; the result's file is read back and closed."""
    with io.BytesIO(data) as source:
        image = inspect_and_clean(source, uploads, field)
    try:
        assert image.file.tell() == 0
        content = image.file.read()
    finally:
        image.close()
    assert len(content) == image.size
    return Cleaned(content, image.size, image.mime_type, image.extension, image.width, image.height)


def reopen(clean: Cleaned) -> Image.Image:
    image = Image.open(io.BytesIO(clean.data))
    image.load()
    return image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def refused(data: bytes, uploads: Uploads = UPLOADS, field: str = "input1") -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        clean_bytes(data, uploads, field)
    return caught.value


def test_jpeg_comes_back_upright_without_exif_gps_or_comment() -> None:
    data = encode(two_tone(), "JPEG", exif=camera_exif(), comment=b"hello-comment")
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)

    clean = clean_bytes(data, UPLOADS, "input1")

    assert (clean.mime_type, clean.extension) == ("image/jpeg", "jpg")
    assert (clean.width, clean.height) == (20, 40)  # orientation 6 applied: turned upright
    image = reopen(clean)
    assert image.format == "JPEG"
    assert image.size == (20, 40)
    assert dict(image.getexif()) == {}
    assert "exif" not in image.info
    assert "comment" not in image.info
    for secret in (b"Exif\x00\x00", b"SecretCam", b"hello-comment"):
        assert secret not in clean.data
    # The left (red) half of the stored pixels is now on top.
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert isinstance(top, tuple)
    assert isinstance(bottom, tuple)
    assert top[0] > 200 > top[2]
    assert bottom[2] > 200 > bottom[0]


def test_png_loses_text_and_exif_but_keeps_its_icc_profile_and_alpha() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_itxt("Comment", "lives at home", zip=True)
    image = two_tone(mode="RGBA")
    image.putpixel((0, 0), (0, 0, 0, 0))
    data = encode(image, "PNG", pnginfo=info, exif=camera_exif(), icc_profile=SRGB_ICC)

    clean = clean_bytes(data, UPLOADS, "input1")

    assert (clean.mime_type, clean.extension) == ("image/png", "png")
    result = reopen(clean)
    assert result.mode == "RGBA"
    # Orientation 6 applied: the stored top-left corner is now the top-right one.
    assert result.size == (20, 40)
    assert result.getpixel((19, 0)) == (0, 0, 0, 0)
    assert result.info.get("icc_profile") == SRGB_ICC
    assert dict(result.getexif()) == {}
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"Jane Doe", b"SecretCam"):
        assert chunk not in clean.data


def test_webp_loses_exif_and_xmp_but_keeps_its_icc_profile() -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp</x:xmpmeta>'
    data = encode(two_tone(), "WEBP", exif=camera_exif(), xmp=xmp, icc_profile=SRGB_ICC)
    assert b"EXIF" in data
    assert b"XMP " in data

    clean = clean_bytes(data, UPLOADS, "input1")

    assert (clean.mime_type, clean.extension) == ("image/webp", "webp")
    assert (clean.width, clean.height) == (20, 40)
    result = reopen(clean)
    assert result.format == "WEBP"
    assert result.info.get("icc_profile") == SRGB_ICC
    for secret in (b"EXIF", b"XMP ", b"secret-xmp", b"SecretCam"):
        assert secret not in clean.data


def test_modes_are_converted_to_what_the_format_stores() -> None:
    cmyk = clean_bytes(encode(two_tone(mode="CMYK"), "JPEG"), UPLOADS, "input1")
    grey = clean_bytes(encode(two_tone(mode="L"), "JPEG"), UPLOADS, "input1")
    palette = two_tone(mode="P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    turned_png = clean_bytes(encode(palette, "PNG", exif=camera_exif()), UPLOADS, "input1")

    assert reopen(cmyk).mode == "RGB"
    assert reopen(grey).mode == "L"
    # A palette PNG that must be turned is re-encoded as RGBA: its transparency stays.
    result = reopen(turned_png)
    assert (result.mode, result.size) == ("RGBA", (20, 40))
    assert result.getpixel((19, 0)) == (255, 0, 0, 0)
    assert result.getpixel((19, 39)) == (0, 0, 255, 255)


def test_an_upright_palette_png_keeps_its_palette_bytes() -> None:
    """A 2-bit palette PNG of noise re-encoded as RGB took 6.4 s of CPU at 25 MP; cut
    losslessly, it costs its decode (0.05 s) and keeps its palette and transparency."""
    palette = two_tone(mode="P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    data = encode(palette, "PNG", pnginfo=info)

    clean = clean_bytes(data, UPLOADS, "input1")

    assert b"Jane Doe" not in clean.data
    assert len(clean.data) == len(data) - (12 + len(b"Author\0Jane Doe"))
    result = reopen(clean)
    assert result.mode == "P"
    assert result.convert("RGBA").getpixel((0, 0)) == (255, 0, 0, 0)
    assert result.convert("RGBA").getpixel((39, 0)) == (0, 0, 255, 255)


def _chunks(webp: bytes) -> list[bytes]:
    """The fourccs of a WebP's chunks, in order."""
    found, position = [], 12
    while position + 8 <= len(webp):
        length = int.from_bytes(webp[position + 4 : position + 8], "little")
        found.append(webp[position : position + 4])
        position += 8 + length + (length & 1)
    return found


def test_an_upright_webp_keeps_its_compressed_pixels() -> None:
    """Re-encoding a 25 MP WebP took 2.9 s of CPU; an upright one is cut losslessly."""
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp</x:xmpmeta>'
    exif = camera_exif()
    exif[ExifTags.Base.Orientation] = 1
    image = two_tone(mode="RGBA")
    image.putpixel((0, 0), (0, 0, 0, 0))
    data = encode(image, "WEBP", exif=exif, xmp=xmp, icc_profile=SRGB_ICC, lossless=True)
    assert _chunks(data) == [b"VP8X", b"ICCP", b"VP8L", b"EXIF", b"XMP "]

    clean = clean_bytes(data + b"appended", UPLOADS, "input1")

    assert _chunks(clean.data) == [b"VP8X", b"ICCP", b"VP8L"]
    # The image chunk byte for byte; the VP8X flags say ICC and alpha, no EXIF or XMP.
    vp8l = data.index(b"VP8L")
    assert data[vp8l : data.index(b"EXIF")] in clean.data
    assert clean.data[20] == 0x20 | 0x10
    assert int.from_bytes(clean.data[4:8], "little") == len(clean.data) - 8
    result = reopen(clean)
    assert result.info.get("icc_profile") == SRGB_ICC
    assert result.getpixel((0, 0)) == (0, 0, 0, 0)
    assert result.getpixel((39, 19)) == (0, 0, 255, 255)
    for secret in (b"EXIF", b"XMP ", b"secret-xmp", b"SecretCam"):
        assert secret not in clean.data


def test_a_kept_chunk_of_odd_length_keeps_its_pad_byte() -> None:
    icc = SRGB_ICC + b"x" * (1 - len(SRGB_ICC) % 2)  # an odd length: a pad byte follows
    data = encode(two_tone(), "WEBP", icc_profile=icc, xmp=b"<x:xmpmeta>secret</x:xmpmeta>")
    assert _chunks(data) == [b"VP8X", b"ICCP", b"VP8 ", b"XMP "]

    clean = clean_bytes(data, UPLOADS, "input1")

    assert _chunks(clean.data) == [b"VP8X", b"ICCP", b"VP8 "]
    assert clean.data[12 + 18 :] == data[12 + 18 : data.index(b"XMP ")]
    assert reopen(clean).info.get("icc_profile") == icc


def test_an_animated_webp_is_re_encoded_from_its_first_frame() -> None:
    frames = [two_tone(), two_tone().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert b"ANMF" in data

    clean = clean_bytes(data, UPLOADS, "input1")

    assert b"ANMF" not in clean.data
    result = reopen(clean)
    assert getattr(result, "n_frames", 1) == 1
    pixel = result.convert("RGB").getpixel((0, 0))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 200 > 50 > pixel[2]  # the first frame: red on the left


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("WEBP", {"quality": 50})],
)
def test_a_png_or_webp_that_must_be_re_encoded_is_refused_over_4_megapixels(
    fmt: str, options: dict[str, Any]
) -> None:
    """Turning a 25 MP PNG or WebP upright costs seconds of encoding: over 4 MP, a 400."""
    turned = Image.Exif()
    turned[ExifTags.Base.Orientation] = 6
    data = encode(Image.new("RGB", (2001, 2000), (90, 120, 30)), fmt, exif=turned, **options)

    with pytest.raises(ValidationError) as caught:
        clean_bytes(data, UPLOADS, "input1")
    assert caught.value.message == (
        "input1 is too large to process; please upload at most 4 megapixels"
    )
    # At the cap, it is turned.
    data = encode(Image.new("RGB", (2000, 2000), (90, 120, 30)), fmt, exif=turned, **options)
    assert clean_bytes(data, UPLOADS, "input1").width == 2000


def test_multi_picture_jpeg_from_a_phone_is_accepted_as_jpeg() -> None:
    data = encode(two_tone(), "MPO", save_all=True, append_images=[two_tone(mode="L")])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    clean = clean_bytes(data, UPLOADS, "input1")
    assert (clean.mime_type, reopen(clean).format) == ("image/jpeg", "JPEG")


def test_trailing_bytes_are_accepted_but_not_kept() -> None:
    payload = b"PK\x03\x04 a zip file hidden after the image"
    clean = clean_bytes(encode(two_tone(), "JPEG") + payload, UPLOADS, "input1")
    assert clean.mime_type == "image/jpeg"
    assert b"hidden after the image" not in clean.data


def jpeg_bytes() -> bytes:
    noise = Image.effect_noise((64, 64), 64).convert("RGB")
    return encode(noise, "JPEG", quality=95)


NOT_ACCEPTED = {
    "empty": b"",
    "text": b"just some text, not an image",
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    "gif": encode(two_tone(), "GIF"),
    "bmp": encode(two_tone(), "BMP"),
    "tiff": encode(two_tone(), "TIFF"),
    "truncated jpeg": jpeg_bytes()[: len(jpeg_bytes()) // 2],
    "png signature then jpeg": b"\x89PNG\r\n\x1a\n" + jpeg_bytes(),
    "png header then jpeg data": encode(two_tone(), "PNG")[:33] + jpeg_bytes(),
    "jpeg signature then garbage": b"\xff\xd8\xff\xe0" + b"\x00" * 200,
    "webp header then garbage": b"RIFF\x00\x01\x00\x00WEBPVP8 " + b"\x00" * 100,
    "png with a corrupted pixel chunk": encode(two_tone(), "PNG").replace(
        b"IDAT", b"IDAT\x00\x00\x00\x00", 1
    ),
}


@pytest.mark.parametrize("data", NOT_ACCEPTED.values(), ids=NOT_ACCEPTED.keys())
def test_anything_but_a_whole_accepted_image_is_refused_with_415(data: bytes) -> None:
    error = refused(data)
    assert type(error) is UnsupportedMediaType
    assert error.reason == "UNSUPPORTED_MEDIA_TYPE"
    assert error.code == "VALIDATION_ERROR"
    assert error.message == ACCEPTED_MESSAGE


def test_narrowed_accepted_types_refuse_webp() -> None:
    uploads = Uploads(accepted_mime_types=("image/jpeg", "image/png"))
    error = refused(encode(two_tone(), "WEBP"), uploads, field="input2")
    assert type(error) is UnsupportedMediaType
    assert error.message == "input2 must be a JPEG or PNG image"
    assert clean_bytes(encode(two_tone(), "PNG"), uploads, "input2").mime_type == "image/png"


def test_too_many_bytes_is_413_naming_the_configured_limit() -> None:
    error = refused(b"\xff\xd8\xff" + b"\x00" * UPLOADS.max_bytes)
    assert type(error) is PayloadTooLarge
    assert error.reason == "PAYLOAD_TOO_LARGE"
    assert error.message == "input1 is larger than 10 MB"
    small = Uploads(max_bytes=2048)
    assert refused(jpeg_bytes(), small).message == "input1 is larger than 2 KB"


def test_exactly_the_byte_limit_is_accepted() -> None:
    data = encode(two_tone(), "PNG")
    padded = data + b"\x00" * (4096 - len(data))
    assert clean_bytes(padded, Uploads(max_bytes=4096), "input1").width == 40


def test_pixel_limit_from_the_config_is_enforced() -> None:
    uploads = Uploads(max_pixels=800)
    assert clean_bytes(encode(two_tone(), "PNG"), uploads, "input1").height == 20
    error = refused(encode(two_tone(41, 20), "PNG"), uploads)
    assert type(error) is ValidationError
    assert error.reason == "VALIDATION_ERROR"
    assert error.message == "input1 has too many pixels (at most 0.0008 megapixels)"


def huge_png() -> bytes:
    """A PNG declaring 50000 x 50000 pixels with a few bytes of compressed data."""
    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


def huge_jpeg() -> bytes:
    data = bytearray(encode(two_tone(), "JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", 60_000, 60_000)
    return bytes(data)


def huge_webp() -> bytes:
    """An extended WebP whose canvas is 16000 x 16000."""
    canvas = b"\x00\x00\x00\x00" + (15_999).to_bytes(3, "little") * 2
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(canvas)) + canvas
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "data", [huge_png(), huge_jpeg(), huge_webp()], ids=["png", "jpeg", "webp"]
)
def test_decompression_bombs_are_refused_from_the_header_without_decoding(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow must not open a decompression bomb")

    monkeypatch.setattr(Image, "open", no_decoding)
    error = refused(data)
    assert type(error) is ValidationError
    assert error.reason == "VALIDATION_ERROR"
    assert error.message == "input1 has too many pixels (at most 25 megapixels)"


def test_pillow_bomb_limit_applies_when_it_is_lower_than_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow would warn above its own limit; the check refuses before it gets there.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    error = refused(encode(two_tone(), "PNG"))
    assert error.message == "input1 has too many pixels (at most 0.0005 megapixels)"


def test_a_big_upload_is_cleaned_from_a_file_on_disk_into_another() -> None:
    photo = Image.effect_noise((1400, 1000), 90).convert("RGB")
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    data = encode(photo, "JPEG", quality=98, exif=exif)
    assert len(data) > 1024 * 1024  # more than a spool keeps in memory
    with spooled_file() as source:
        source.write(data)
        clean = inspect_and_clean(source, UPLOADS, "input1")
        assert not source.closed  # the caller's file: it stays open
    try:
        assert clean.file is not source
        content = clean.file.read()
    finally:
        clean.close()
    assert clean.file.closed
    assert len(content) == clean.size
    assert b"SecretCam" not in content
    with Image.open(io.BytesIO(content)) as image:
        assert image.size == (1400, 1000)
        assert "exif" not in image.info
