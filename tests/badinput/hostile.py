"""Hostile images that cost a decoder far more than their size, built with Pillow.

Shared by the bad-input suite (through the whole stack) and generation's unit tests
of the structural checks. Each builder starts from a real image and breaks one rule.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

from PIL import Image


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def noise(width: int, height: int, seed: int = 3) -> Image.Image:
    """Random pixels: they do not compress, so the file weighs what a photo would."""
    return Image.frombytes(
        "RGB", (width, height), random.Random(seed).randbytes(width * height * 3)
    )


def flat_lossless_webp(width: int = 6300, height: int = 6300) -> bytes:
    """The attacker's file: ~1.6 KB that decodes to width x height x 4 bytes."""
    return encode(Image.new("RGB", (width, height), (200, 200, 200)), "WEBP", lossless=True)


def jpeg(width: int = 64, height: int = 48, **options: Any) -> bytes:
    return encode(Image.new("RGB", (width, height), (180, 120, 90)), "JPEG", quality=90, **options)


def jpeg_with_fill(fill: int, before: bytes = b"\xff\xdb") -> bytes:
    """A real JPEG with ``fill`` 0xFF bytes inserted before the first ``before`` marker
    (DQT: right after SOI's first segment; SOF0 b"\\xff\\xc0"; SOS b"\\xff\\xda")."""
    data = jpeg()
    index = data.index(before)
    return data[:index] + b"\xff" * fill + data[index:]


def jpeg_with_markers_in_header(count: int, marker: int = 0xD0) -> bytes:
    """A real JPEG with ``count`` markers that carry no length (RSTn by default) after SOI."""
    data = jpeg()
    return data[:2] + bytes([0xFF, marker]) * count + data[2:]


def jpeg_with_markers_after_scan(count: int, marker: int = 0x01) -> bytes:
    """A real JPEG whose end-of-image comes only after ``count`` markers that carry no
    length (TEM by default) following its scan: accepted and stored before, after
    seconds of a Python step per marker in the structure checks."""
    data = jpeg()
    assert data.endswith(b"\xff\xd9")
    return data[:-2] + bytes([0xFF, marker]) * count + b"\xff\xd9"


def jpeg_with_segments(count: int, marker: int = 0xFE) -> bytes:
    """A real JPEG with ``count`` extra 4-byte segments (comments by default) after SOI."""
    data = jpeg()
    segment = bytes([0xFF, marker]) + struct.pack(">H", 4) + b"hi"
    return data[:2] + segment * count + data[2:]


def jpeg_with_two_frames(width: int, height: int) -> bytes:
    """A real JPEG followed, before its scan, by a second frame header of another size."""
    data = jpeg()
    start = data.index(b"\xff\xc0")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    sof = bytearray(data[start : start + 2 + length])
    sof[5:9] = struct.pack(">HH", height, width)
    return data[: start + 2 + length] + bytes(sof) + data[start + 2 + length :]


def jpeg_with_scans(count: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``count`` scans."""
    data = jpeg(256, 192, progressive=True)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]
    present = data.count(b"\xff\xda")
    return data[:-2] + scan * max(0, count - present) + b"\xff\xd9"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int = 64, height: int = 48) -> bytes:
    return encode(Image.new("RGB", (width, height), (40, 90, 160)), "PNG")


def png_with_chunks(count: int) -> bytes:
    """A real PNG with ``count`` empty private chunks before its image data."""
    data = png()
    idat = data.index(b"IDAT") - 4
    return data[:idat] + png_chunk(b"prVt", b"") * count + data[idat:]


def png_lying_ihdr(width: int, height: int) -> bytes:
    """A real 64 x 48 PNG whose IHDR declares ``width`` x ``height``."""
    data = png()
    ihdr = png_chunk(b"IHDR", struct.pack(">II", width, height) + data[24:29])
    return data[:8] + ihdr + data[33:]


def png_second_ihdr(width: int, height: int) -> bytes:
    """A real PNG with a second IHDR (Pillow takes its size) declaring another size."""
    data = png()
    ihdr = png_chunk(b"IHDR", struct.pack(">II", width, height) + data[24:29])
    return data[:33] + ihdr + data[33:]


def webp_with_canvas(width: int, height: int, frame: bytes | None = None) -> bytes:
    """A VP8X WebP declaring a ``width`` x ``height`` canvas around a real (smaller) frame."""
    still = frame if frame is not None else encode(noise(64, 48), "WEBP", lossless=True)
    image_chunk = still[12:]  # the VP8L chunk of a simple lossless file
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + image_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_animation(frames: int, size: tuple[int, int] = (32, 24)) -> bytes:
    """An animated WebP with ``frames`` different frames."""
    images = [Image.new("RGB", size, (i % 256, 40, 90)) for i in range(frames)]
    return encode(images[0], "WEBP", save_all=True, append_images=images[1:], lossless=True)


def palette_noise_png(side: int = 5000) -> bytes:
    """25 MP of four-colour noise at 2 bits a pixel (~6.3 MB): re-encoded as RGB it
    cost 6.4 CPU s; it keeps its palette now."""
    rng = random.Random(7)
    image = Image.frombytes("P", (side, side), bytes(v & 3 for v in rng.randbytes(side * side)))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    return encode(image, "PNG", bits=2)


def noisy_webp(side: int = 5000, exif: Image.Exif | None = None) -> bytes:
    """25 MP of blocky noise as a low-quality lossy WebP (~2.4 MB): re-encoding it cost
    2.9 CPU s at libwebp's default effort."""
    blocks = noise(side // 4, side // 4, seed=7).resize((side, side), Image.Resampling.NEAREST)
    return encode(blocks, "WEBP", quality=5, method=0, exif=exif or Image.Exif())


def turned() -> Image.Exif:
    """EXIF saying the picture must be turned 90 degrees to stand upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif
