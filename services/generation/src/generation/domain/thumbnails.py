"""Thumbnails of stored renders: a JPEG of at most 512 px on its long side.

Galleries load these instead of full renders. A JPEG output is decoded at reduced
scale (``draft``: the decoder skips the detail a 512 px image cannot show), so a
thumbnail of a 1 MP render costs a few milliseconds. It is made while the render is
settled (a webhook waits on it), so it is encoded without ``optimize``: an extra pass
over the Huffman tables that cost about as much as the reduced decode for ~5% fewer
bytes; and the last step from the reduced decode (a 1184x864 render decodes at
592x432) to 512 px is bicubic, not Lanczos: for a step that small the two look the
same, and Lanczos took longer than the decode itself (5.0 against 3.5 ms, measured).
CPU-bound: run it in a thread.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

THUMBNAIL_EDGE = 512
THUMBNAIL_QUALITY = 85
# A render stored from an output that was not a JPEG (see as_jpeg).
OUTPUT_QUALITY = 92
_JPEG_MAGIC = b"\xff\xd8\xff"
# Provider outputs are about 1 MP; anything past this is not a render we decode. A PNG
# decodes whole (no reduced scale): 16 MP as RGBA and RGB is about 112 MB per slot.
MAX_OUTPUT_PIXELS = 16_000_000


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    # The full render's size, as stored.
    width: int
    height: int


class NotAnImage(Exception):
    """The bytes are not an image Pillow can decode within the limits."""


def draft_box(width: int, height: int) -> tuple[int, int]:
    """The thumbnail's own size for a ``width`` x ``height`` image (at least 1 px a side).

    ``draft`` only scales down while BOTH sides stay at or above the box it is given,
    so a square 512 box would keep a 1024x768 render at full scale (768 / 2 < 512).
    """
    scale = THUMBNAIL_EDGE / max(width, height, 1)
    if scale >= 1:
        return width, height
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


@contextlib.contextmanager
def _opened(data: bytes) -> Iterator[Image.Image]:
    """The encoded image, opened once its header says it is within MAX_OUTPUT_PIXELS;
    whatever the decoder raises, there or in the caller's block, is NotAnImage."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_OUTPUT_PIXELS:
                raise NotAnImage("too many pixels")
            yield image
    except NotAnImage:
        raise
    except Exception as error:  # decoders raise many types on bad input
        raise NotAnImage(type(error).__name__) from error


def make_thumbnail(data: bytes) -> Thumbnail:
    """The thumbnail of an encoded image and the image's own size."""
    with _opened(data) as image:
        width, height = image.size
        image.draft("RGB", draft_box(width, height))
        small = image.convert("RGB")
        small.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        small.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
    return Thumbnail(out.getvalue(), width, height)


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts as a JPEG does (the model's default output)."""
    return data.startswith(_JPEG_MAGIC)


def as_jpeg(data: bytes) -> bytes:
    """An output that is not a JPEG (a model asked for PNG: ``output_format``) as the
    JPEG its ``<idx>.jpg`` key and ``image/jpeg`` Content-Type promise. Transparent
    pixels go on white, as a page would show them. Raises NotAnImage."""
    with _opened(data) as image:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        else:
            rgb = image.convert("RGB")
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=OUTPUT_QUALITY)
    return out.getvalue()
