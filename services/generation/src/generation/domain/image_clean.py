"""Inspecting and cleaning uploaded images before they are stored.

The type is decided from the bytes alone (file names and declared content types
are never trusted): the magic signature must name an accepted type AND Pillow must
decode the whole image as that same format. The pixel count is read from the
header (``image_header``) before Pillow sees the file, so a decompression bomb is
never decoded; nor is a file whose structure would make a decoder loop per byte
or allocate far beyond the file's size (``image_structure``, refused with 415).
The limit is the lower of the config's ``max_pixels`` and Pillow's
``MAX_IMAGE_PIXELS``, so Pillow does not reach its own bomb warning either (its
size is checked again after it reads the header); no global Pillow setting is changed.

Cleaning drops EXIF (GPS, camera serials), XMP, comments and PNG text chunks. A
JPEG, PNG or still WebP that needs no rotation keeps its compressed pixels: the
metadata is cut out losslessly (``image_strip``) after the image was decoded for
validation. For a JPEG the two halves can also run apart (``strip_unproven``, then
``prove_whole``), so the caller can store the stripped copy while the decode runs.
Anything else is re-encoded after the EXIF orientation has been applied, so the
photo stays upright. Encoding is what costs CPU (a 25 MP noisy WebP took 2.9 s at
libwebp's default effort, a palette PNG turned RGB 6.4 s at zlib's default level),
so a PNG or WebP is re-encoded only up to ``REENCODE_MAX_PIXELS``, at cheap encoder
settings; a JPEG (0.35 s at 25 MP) has no such cap.

The ICC profile is kept: it is colour data, not personal data, and dropping it would
shift colours. It is dropped only when the pixels leave their colour model
(CMYK -> RGB), where it would no longer match.

Refusals are ``ImageRefused`` with the HTTP status they stand for: too many bytes
-> 413; not an accepted, fully decodable image -> 415; too many pixels, or more
memory to decode and re-encode than the worker's budget -> 400 (the type is fine,
the dimensions are not). ``images`` turns them into the service's domain errors.
CPU-bound: the service calls it in a worker process with a memory and CPU budget
(``decoder``).

This module runs in the decode workers, so it imports Pillow and the image checks
only: no kit (grpc, pydantic), no SQLAlchemy. A worker that imported those would
carry ~35 MiB more of its own memory for nothing (``image_worker``).

Memory: the upload is read from a seekable file, never whole. The lossless path
decodes a JPEG at 1/8 scale and copies the kept bytes file to file in bounded
pieces; only the re-encode path holds the decoded pixels (it has to). The output
is a new file from ``output`` (by default a spooled temporary file,
``spool.memory_spool``; a decode worker writes straight into the service's file),
owned by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from PIL import Image, ImageOps

from generation.domain.image_header import read_header
from generation.domain.image_strip import strip_jpeg, strip_png, strip_webp
from generation.domain.image_structure import density_problem, structure_problem
from generation.domain.spool import file_size, memory_spool

JPEG_QUALITY = 92
WEBP_QUALITY = 92

_STRIP = {"image/jpeg": strip_jpeg, "image/png": strip_png, "image/webp": strip_webp}
_TYPE_NAMES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
# Pillow formats accepted for each signature (phones write some JPEGs as MPO).
_PILLOW_FORMATS = {"image/jpeg": ("JPEG", "MPO"), "image/png": ("PNG",), "image/webp": ("WEBP",)}
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "RGB", "RGBA"})
# Modes stored as they are; others (CMYK JPEG) are converted by re-encoding. A palette
# PNG keeps its palette (PLTE and tRNS are kept chunks); re-encoded, it becomes RGB(A).
_LOSSLESS_MODES = {
    "image/jpeg": frozenset({"L", "RGB"}),
    "image/png": _PNG_MODES | {"P"},
    "image/webp": frozenset({"RGB", "RGBA"}),
}
# The most pixels a PNG or WebP is re-encoded at (rotated, animated, odd modes): the
# encode costs ~0.06 CPU s a megapixel at the settings below (noise, the worst case;
# measured 2026-12-07), so about a quarter of a second here.
REENCODE_MAX_PIXELS = 4_000_000
# zlib's fastest level (1.35 s against 6.4 s at its default for 25 MP of noise; the file
# is larger) and libwebp's effort 2 of 6 (0.49 s against 1.06 s for a 25 MP photo).
PNG_COMPRESS_LEVEL = 1
WEBP_METHOD = 2


class Limits(Protocol):
    """What the checks read of the upload settings (``kit.runtime_config.Uploads`` has it)."""

    @property
    def max_bytes(self) -> int: ...
    @property
    def accepted_mime_types(self) -> tuple[str, ...]: ...
    @property
    def max_pixels(self) -> int: ...
    @property
    def max_pixels_per_byte(self) -> int: ...


@dataclass(frozen=True)
class ImageLimits:
    """The upload limits as a plain value: what crosses to a decode worker (pickling
    the pydantic settings would import pydantic and kit there)."""

    max_bytes: int
    accepted_mime_types: tuple[str, ...]
    max_pixels: int
    max_pixels_per_byte: int

    @classmethod
    def of(cls, limits: Limits) -> ImageLimits:
        """A plain copy of ``limits``."""
        return cls(
            limits.max_bytes,
            tuple(limits.accepted_mime_types),
            limits.max_pixels,
            limits.max_pixels_per_byte,
        )


class ImageRefused(Exception):
    """An upload refused, with the HTTP status it stands for and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        # Both in ``args``: the exception is pickled back from a worker as it was raised.
        super().__init__(status, message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class CleanImage:
    """An accepted upload without metadata, in a temporary file the owner must close."""

    file: IO[bytes]
    size: int
    mime_type: str
    extension: str
    width: int
    height: int

    def close(self) -> None:
        """Release the temporary file (idempotent)."""
        self.file.close()


def inspect_and_clean(
    source: IO[bytes],
    uploads: Limits,
    field: str,
    checked: tuple[str, int, int] | None = None,
    output: Callable[[], IO[bytes]] = memory_spool,
) -> CleanImage:
    """Check that ``source`` holds an accepted image; return it cleaned of metadata.

    ``source`` is a seekable binary file (it stays open; the caller closes it).
    ``field`` names the upload in error messages (``input1``). ``checked``: what
    :func:`check_before_decoding` answered for these very bytes, when the caller
    already ran it (the decode workers' caller does, before handing the file over);
    the checks then are not run twice. ``output`` opens the empty file the cleaned
    image is written to (called again, it must start that file afresh). Raises
    :class:`ImageRefused`: 413, 415 or, for too many pixels or more memory than the
    process may use, 400.
    The result's file is at position 0.
    """
    if checked is None:
        checked = check_before_decoding(source, uploads, field)
    mime_type = checked[0]
    limit = pixel_limit(uploads)
    lossless = _clean_losslessly(source, checked, uploads, field, output)
    if lossless is not None:
        return lossless
    _, width, height = checked
    if mime_type != "image/jpeg" and width * height > REENCODE_MAX_PIXELS:
        raise ImageRefused(
            400,
            f"{field} is too large to process; please upload at most "
            f"{REENCODE_MAX_PIXELS / 1_000_000:g} megapixels",
        )
    try:
        image = _decode(source, _PILLOW_FORMATS[mime_type], limit)
    except MemoryError as exc:
        raise over_budget(field) from exc
    except Exception as exc:
        # Decoders raise many exception types on hostile input; all mean "not a valid image".
        raise unsupported(uploads, field) from exc
    with image:
        return _reencode(image, mime_type, field, output)


def check_before_decoding(source: IO[bytes], uploads: Limits, field: str) -> tuple[str, int, int]:
    """``(mime_type, width, height)`` of an upload that passes every check made without
    decoding (size, type, pixel cap, density, structure); raises the refusal otherwise.

    Milliseconds of C-speed scans, so a hostile file is refused before it is handed
    to a decode worker.
    """
    if file_size(source) > uploads.max_bytes:
        raise too_large(uploads, field)
    header = read_header(source)
    if header is None or header[0] not in uploads.accepted_mime_types:
        raise unsupported(uploads, field)
    mime_type, width, height = header
    limit = pixel_limit(uploads)
    if width * height > limit:
        raise ImageRefused(
            400, f"{field} has too many pixels (at most {limit / 1_000_000:g} megapixels)"
        )
    size = file_size(source)
    if density_problem(size, width, height, uploads.max_pixels_per_byte) or structure_problem(
        source, mime_type, width, height
    ):
        raise unsupported(uploads, field)
    return header


def too_large(uploads: Limits, field: str) -> ImageRefused:
    """The refusal of an upload over ``uploads.max_bytes`` (one wording everywhere)."""
    return ImageRefused(413, f"{field} is larger than {_human_size(uploads.max_bytes)}")


def over_budget(field: str) -> ImageRefused:
    """The refusal of an image whose decoding needs more memory than a decode may use."""
    return ImageRefused(400, f"{field} is too large to process; please upload fewer megapixels")


def _reencode(
    image: Image.Image, mime_type: str, field: str, output: Callable[[], IO[bytes]]
) -> CleanImage:
    try:
        clean = _strip(image, mime_type)
        try:
            encoded = _encode(clean, mime_type, output)
            return _result(encoded, mime_type, clean.width, clean.height)
        finally:
            if clean is not image:
                clean.close()
    except (MemoryError, ValueError, OSError) as exc:
        # Out of the decode's memory budget: the encoders report it as ValueError/OSError.
        raise over_budget(field) from exc


def _result(file: IO[bytes], mime_type: str, width: int, height: int) -> CleanImage:
    return CleanImage(file, file_size(file), mime_type, _EXTENSIONS[mime_type], width, height)


def _clean_losslessly(
    source: IO[bytes],
    checked: tuple[str, int, int],
    uploads: Limits,
    field: str,
    output: Callable[[], IO[bytes]],
) -> CleanImage | None:
    """JPEG/PNG/still WebP that need no rotation: validated by decoding (``_load``),
    metadata cut out. Answers None when the image must be re-encoded instead.
    """
    if checked[0] not in _LOSSLESS_MODES:
        return None
    return _lossless_copy(source, uploads, field, checked, output, decode=True)


def strip_unproven(
    source: IO[bytes],
    uploads: Limits,
    field: str,
    checked: tuple[str, int, int],
    output: Callable[[], IO[bytes]] = memory_spool,
) -> CleanImage | None:
    """A JPEG without its metadata, before its pixels are proven whole: for one that
    needs no rotation and no change of mode, its bytes with the metadata segments cut
    out (``image_strip``). None for anything else (``inspect_and_clean`` cleans it)
    or when its stream cannot be walked.

    Pillow reads only the header here (a PNG's EXIF may follow its pixels, so reading
    its orientation decodes it: PNGs are left to ``inspect_and_clean``, which decodes
    once). The caller must still :func:`prove_whole` the upload before anything uses
    the result; it may store the result meanwhile, and must remove it when the proof
    refuses. ``checked`` is ``check_before_decoding``'s answer for these bytes. Raises
    :class:`ImageRefused` (415; 400 over the memory budget).
    """
    if checked[0] != "image/jpeg":
        return None
    return _lossless_copy(source, uploads, field, checked, output, decode=False)


def _lossless_copy(
    source: IO[bytes],
    uploads: Limits,
    field: str,
    checked: tuple[str, int, int],
    output: Callable[[], IO[bytes]],
    *,
    decode: bool,
) -> CleanImage | None:
    """The upload's bytes without metadata when it keeps its pixels (decoded first when
    ``decode``); None when it must be re-encoded or cannot be walked."""
    mime_type, width, height = checked
    try:
        with _open(source, _PILLOW_FORMATS[mime_type], pixel_limit(uploads)) as image:
            if not _keeps_pixels(image, mime_type):
                return None
            if decode:
                _load(image, mime_type)
    except MemoryError as exc:
        raise over_budget(field) from exc
    except Exception as exc:
        raise unsupported(uploads, field) from exc
    stripped = _stripped_copy(source, mime_type, output)
    return None if stripped is None else _result(stripped, mime_type, width, height)


def prove_whole(
    source: IO[bytes], uploads: Limits, field: str, checked: tuple[str, int, int]
) -> None:
    """Decode the whole image, or refuse it: 415 when it does not decode, 400 over the
    memory budget."""
    mime_type = checked[0]
    try:
        with _open(source, _PILLOW_FORMATS[mime_type], pixel_limit(uploads)) as image:
            _load(image, mime_type)
    except MemoryError as exc:
        raise over_budget(field) from exc
    except Exception as exc:
        raise unsupported(uploads, field) from exc


def _keeps_pixels(image: Image.Image, mime_type: str) -> bool:
    """True when the cleaned image can be the upload's own bytes without metadata."""
    return _orientation(image) == 1 and image.mode in _LOSSLESS_MODES[mime_type]


def _load(image: Image.Image, mime_type: str) -> None:
    """Decode every pixel; a JPEG at 1/8 scale (every block of its entropy-coded data
    is still read, so a truncated or corrupt file fails, without the full-size pixels)."""
    if mime_type == "image/jpeg":
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()


def _stripped_copy(
    source: IO[bytes], mime_type: str, output: Callable[[], IO[bytes]]
) -> IO[bytes] | None:
    """The metadata-free copy in a new spool; None when the stream cannot be walked."""
    out = output()
    try:
        source.seek(0)
        if _STRIP[mime_type](source, out):
            return out
    except BaseException:
        out.close()
        raise
    out.close()
    return None


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation (1 = upright); None when the EXIF cannot be read."""
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:
        return None


def _open(source: IO[bytes], formats: tuple[str, ...], limit: int) -> Image.Image:
    """The image, opened but not decoded; raises when Pillow disagrees with the signature.

    Pillow reads ``source`` from the start each time and leaves it open (a
    ``with`` block never closes a file Pillow did not open itself).
    """
    with Image.open(source, formats=formats[:1]) as probe:
        probe.verify()
    image = Image.open(source, formats=formats[:1])
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


def _decode(source: IO[bytes], formats: tuple[str, ...], limit: int) -> Image.Image:
    """The fully decoded image."""
    image = _open(source, formats, limit)
    try:
        image.load()
    except BaseException:
        image.close()
        raise
    return image


def _strip(image: Image.Image, mime_type: str) -> Image.Image:
    """``image`` turned upright in place, with no metadata; a copy only when its mode
    must change to one its format stores (the caller then closes both)."""
    icc_profile = image.info.get("icc_profile")
    try:
        # In place: a 25 MP image is 100 MB of pixels, a copy would double the peak.
        ImageOps.exif_transpose(image, in_place=True)
    except MemoryError:
        raise  # over the decode budget: refused by the caller
    except Exception:  # noqa: S110 (unreadable EXIF: keep the pixels as stored, not refuse)
        pass
    upright = image
    target = _target_mode(upright, mime_type)
    if target != upright.mode:
        if upright.mode == "CMYK":
            icc_profile = None
        upright = upright.convert(target)
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


def _encode(image: Image.Image, mime_type: str, output: Callable[[], IO[bytes]]) -> IO[bytes]:
    options: dict[str, object] = {}
    if icc_profile := image.info.get("icc_profile"):
        options["icc_profile"] = icc_profile
    if mime_type == "image/jpeg":
        options["quality"] = JPEG_QUALITY
    elif mime_type == "image/png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    elif mime_type == "image/webp":
        options.update(quality=WEBP_QUALITY, method=WEBP_METHOD)
    out = output()
    try:
        image.save(out, format=_PILLOW_FORMATS[mime_type][0], **options)
    except BaseException:
        out.close()
        raise
    return out


def pixel_limit(uploads: Limits) -> int:
    """The most pixels an upload may have: the config's, or Pillow's own limit if lower."""
    if Image.MAX_IMAGE_PIXELS is None:
        return uploads.max_pixels
    return min(uploads.max_pixels, int(Image.MAX_IMAGE_PIXELS))


def unsupported(uploads: Limits, field: str) -> ImageRefused:
    """The refusal of a file that is not an accepted, decodable image (one wording)."""
    names = [_TYPE_NAMES[mime] for mime in uploads.accepted_mime_types]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return ImageRefused(415, f"{field} must be a {listed} image")


def _human_size(size: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
