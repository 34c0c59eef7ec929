"""Thumbnails of stored renders: a JPEG of at most 512 px on its long side.

Galleries load these instead of full renders. A JPEG output is decoded at reduced
scale (``draft``: the decoder skips the detail a 512 px image cannot show), so a
thumbnail of a 1 MP render costs a few milliseconds. CPU-bound: run it in a thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

THUMBNAIL_EDGE = 512
THUMBNAIL_QUALITY = 85
# Provider outputs are about 1 MP; anything past this is not a render we decode.
MAX_OUTPUT_PIXELS = 50_000_000


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    # The full render's size, as stored.
    width: int
    height: int


class NotAnImage(Exception):
    """The bytes are not an image Pillow can decode within the limits."""


def make_thumbnail(data: bytes) -> Thumbnail:
    """The thumbnail of an encoded image and the image's own size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_OUTPUT_PIXELS:
                raise NotAnImage("too many pixels")
            image.draft("RGB", (THUMBNAIL_EDGE, THUMBNAIL_EDGE))
            small = image.convert("RGB")
            small.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    except NotAnImage:
        raise
    except Exception as error:  # decoders raise many types on bad input
        raise NotAnImage(type(error).__name__) from error
    return Thumbnail(out.getvalue(), width, height)
