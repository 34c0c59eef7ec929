"""Inspecting and cleaning uploaded images before they are stored.

The type is decided from the bytes alone (file names and declared content types
are never trusted): the magic signature must name an accepted type AND Pillow must
decode the whole image as that same format. The pixel count is read from the
header by this module before Pillow sees the file, so a decompression bomb is
never decoded. The limit is the lower of the config's ``max_pixels`` and Pillow's
``MAX_IMAGE_PIXELS``, so Pillow does not reach its own bomb warning either (its
size is checked again after it reads the header); no global Pillow setting is changed.

Cleaning drops EXIF (GPS, camera serials), XMP, comments and PNG text chunks. A
JPEG or PNG that needs no rotation keeps its compressed pixels: the metadata is
cut out losslessly (``image_strip``) after the image was decoded for validation.
Anything else is re-encoded after the EXIF orientation has been applied, so the
photo stays upright. The ICC profile is kept: it is colour data, not personal data, and
dropping it would shift colours. It is dropped only when the pixels leave their
colour model (CMYK -> RGB), where it would no longer match.

Refusals: too many bytes -> 413 PayloadTooLarge; not an accepted, fully decodable
image -> 415 UnsupportedMediaType; too many pixels -> 400 ValidationError (the type
is fine, the dimensions are not). CPU-bound: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from generation.domain.image_strip import strip_jpeg, strip_png
from kit.errors import PayloadTooLarge, UnsupportedMediaType, ValidationError
from kit.runtime_config import Uploads

JPEG_QUALITY = 92
WEBP_QUALITY = 92

_TYPE_NAMES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
# Pillow formats accepted for each signature (phones write some JPEGs as MPO).
_PILLOW_FORMATS = {"image/jpeg": ("JPEG", "MPO"), "image/png": ("PNG",), "image/webp": ("WEBP",)}
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "RGB", "RGBA"})
# Modes stored as they are; others (CMYK JPEG, palette PNG) are converted by re-encoding.
_LOSSLESS_MODES = {"image/jpeg": frozenset({"L", "RGB"}), "image/png": _PNG_MODES}


@dataclass(frozen=True)
class CleanImage:
    """An accepted upload, re-encoded without metadata."""

    data: bytes
    mime_type: str
    extension: str
    width: int
    height: int


def inspect_and_clean(data: bytes, uploads: Uploads, field: str) -> CleanImage:
    """Check that ``data`` is an accepted image and return it re-encoded without metadata.

    ``field`` names the upload in error messages (``input1``). Raises
    :class:`PayloadTooLarge`, :class:`UnsupportedMediaType` or, for too many
    pixels, :class:`ValidationError`.
    """
    if len(data) > uploads.max_bytes:
        raise PayloadTooLarge(f"{field} is larger than {_human_size(uploads.max_bytes)}")
    header = _read_header(data)
    if header is None or header[0] not in uploads.accepted_mime_types:
        raise _unsupported(uploads, field)
    mime_type, width, height = header
    limit = _pixel_limit(uploads)
    if width * height > limit:
        raise ValidationError(
            f"{field} has too many pixels (at most {limit / 1_000_000:g} megapixels)"
        )
    lossless = _clean_losslessly(data, mime_type, limit, uploads, field)
    if lossless is not None:
        return CleanImage(lossless, mime_type, _EXTENSIONS[mime_type], width, height)
    try:
        image = _decode(data, _PILLOW_FORMATS[mime_type], limit)
    except Exception as exc:
        # Decoders raise many exception types on hostile input; all mean "not a valid image".
        raise _unsupported(uploads, field) from exc
    with image:
        clean = _strip(image, mime_type)
    with clean:
        return CleanImage(
            data=_encode(clean, mime_type),
            mime_type=mime_type,
            extension=_EXTENSIONS[mime_type],
            width=clean.width,
            height=clean.height,
        )


def _clean_losslessly(
    data: bytes, mime_type: str, limit: int, uploads: Uploads, field: str
) -> bytes | None:
    """JPEG/PNG that need no rotation: validated by decoding, metadata cut out.

    A JPEG is decoded at 1/8 scale: every block of the entropy-coded data is still
    read (a truncated or corrupt file fails), without the full-size pixels.
    Answers None when the image must be re-encoded instead.
    """
    if mime_type not in {"image/jpeg", "image/png"}:
        return None
    try:
        image = _open(data, _PILLOW_FORMATS[mime_type], limit)
        with image:
            if _orientation(image) != 1 or image.mode not in _LOSSLESS_MODES[mime_type]:
                return None
            if mime_type == "image/jpeg":
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as exc:
        raise _unsupported(uploads, field) from exc
    return strip_jpeg(data) if mime_type == "image/jpeg" else strip_png(data)


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation (1 = upright); None when the EXIF cannot be read."""
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:
        return None


def _open(data: bytes, formats: tuple[str, ...], limit: int) -> Image.Image:
    """The image, opened but not decoded; raises when Pillow disagrees with the signature."""
    with Image.open(io.BytesIO(data), formats=formats[:1]) as probe:
        probe.verify()
    image = Image.open(io.BytesIO(data), formats=formats[:1])
    try:
        if image.format not in formats:
            raise ValueError("decoded format differs from the signature")
        # Pillow's size is what it will allocate; a header crafted to disagree is refused.
        if image.width * image.height > limit:
            raise ValueError("decoded size differs from the header")
    except BaseException:
        image.close()
        raise
    return image


def _decode(data: bytes, formats: tuple[str, ...], limit: int) -> Image.Image:
    """The fully decoded image."""
    image = _open(data, formats, limit)
    try:
        image.load()
    except BaseException:
        image.close()
        raise
    return image


def _strip(image: Image.Image, mime_type: str) -> Image.Image:
    """A copy of ``image``, upright, in a mode its format stores, with no metadata."""
    icc_profile = image.info.get("icc_profile")
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:
        # Unreadable EXIF: keep the pixels as stored rather than refuse the photo.
        upright = image.copy()
    target = _target_mode(upright, mime_type)
    if target != upright.mode:
        if upright.mode == "CMYK":
            icc_profile = None
        converted = upright.convert(target)
        upright.close()
        upright = converted
    # Savers fall back to ``info`` for comments, transparency and profiles: start empty.
    upright.info = {"icc_profile": icc_profile} if icc_profile else {}
    return upright


def _target_mode(image: Image.Image, mime_type: str) -> str:
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if mime_type == "image/jpeg":
        return image.mode if image.mode in {"L", "RGB"} else "RGB"
    if mime_type == "image/png" and image.mode in _PNG_MODES:
        return image.mode
    # Palettes and other modes become RGB(A): no palette transparency to carry over.
    return "RGBA" if has_alpha else "RGB"


def _encode(image: Image.Image, mime_type: str) -> bytes:
    options: dict[str, object] = {}
    if icc_profile := image.info.get("icc_profile"):
        options["icc_profile"] = icc_profile
    if mime_type == "image/jpeg":
        options["quality"] = JPEG_QUALITY
    elif mime_type == "image/webp":
        options["quality"] = WEBP_QUALITY
    out = io.BytesIO()
    image.save(out, format=_PILLOW_FORMATS[mime_type][0], **options)
    return out.getvalue()


def _pixel_limit(uploads: Uploads) -> int:
    if Image.MAX_IMAGE_PIXELS is None:
        return uploads.max_pixels
    return min(uploads.max_pixels, int(Image.MAX_IMAGE_PIXELS))


def _unsupported(uploads: Uploads, field: str) -> UnsupportedMediaType:
    names = [_TYPE_NAMES[mime] for mime in uploads.accepted_mime_types]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return UnsupportedMediaType(f"{field} must be a {listed} image")


def _human_size(size: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


# --- Header reading: the type and the declared size, without decoding anything. ---

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _read_header(data: bytes) -> tuple[str, int, int] | None:
    """``(mime_type, width, height)`` from the signature and header, or None."""
    size: tuple[int, int] | None = None
    mime_type = ""
    if data.startswith(b"\xff\xd8\xff"):
        mime_type, size = "image/jpeg", _jpeg_size(data)
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


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The largest frame declared before the image data starts (SOS)."""
    largest: tuple[int, int] | None = None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in {0xD9, 0xDA}:  # end of image, start of scan: headers are over
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            if largest is None or width * height > largest[0] * largest[1]:
                largest = (width, height)
        pos += 2 + length
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
