"""What the "model" does: download the inputs and paint a real output picture.

The output is derived from the inputs (re-toned, cropped to the aspect ratio,
blended with a second input) so it is a valid image that differs from every
input; with no input it is a deterministic picture drawn from the prompt's hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import random
import urllib.parse

import httpx
from PIL import Image, ImageDraw, ImageEnhance, ImageOps, UnidentifiedImageError

MAX_SIDE = 1024
_RATIOS = {
    "1:1": (1, 1),
    "2:3": (2, 3),
    "3:2": (3, 2),
    "3:4": (3, 4),
    "4:3": (4, 3),
    "4:5": (4, 5),
    "5:4": (5, 4),
    "9:16": (9, 16),
    "16:9": (16, 9),
    "21:9": (21, 9),
}


class InputError(Exception):
    """An input image could not be used; the message is the prediction's ``error``."""


async def fetch_inputs(client: httpx.AsyncClient, urls: list[str], max_bytes: int) -> list[bytes]:
    """Download every ``image_input`` URL, as the real model does; raise InputError."""
    return [await _fetch_one(client, index, url, max_bytes) for index, url in enumerate(urls)]


def data_uri_bytes(uri: str) -> bytes | None:
    """The bytes a ``data:`` URI carries (RFC 2397, base64 or percent-encoded; the way
    the official client sends a file with ``file_encoding_strategy="base64"``), or None
    when it is not one."""
    header, comma, payload = uri.partition(",")
    if not (comma and header[:5].lower() == "data:"):
        return None
    if header.lower().endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error:
            return None
    return urllib.parse.unquote_to_bytes(payload)


async def _fetch_one(client: httpx.AsyncClient, index: int, url: str, max_bytes: int) -> bytes:
    if url[:5].lower() == "data:":
        carried = data_uri_bytes(url)
        if carried is None:
            raise InputError(f"image_input[{index}] is not a valid data URI")
        if len(carried) > max_bytes:
            raise InputError(f"image_input[{index}] is larger than {max_bytes} bytes")
        return carried
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InputError(
                    f"Failed to download image_input[{index}]: HTTP {response.status_code}"
                )
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise InputError(f"image_input[{index}] is larger than {max_bytes} bytes")
            return bytes(data)
    except httpx.HTTPError as exc:
        raise InputError(f"Failed to download image_input[{index}]: {type(exc).__name__}") from exc


def render(inputs: list[bytes], prompt: str, aspect_ratio: str, output_format: str) -> bytes:
    """The output file's bytes (JPEG or PNG)."""
    seed = hashlib.sha256(prompt.encode()).digest()
    pictures = [_decode(index, data) for index, data in enumerate(inputs)]
    picture = _restyle(pictures, seed, aspect_ratio) if pictures else _imagine(seed, aspect_ratio)
    buffer = io.BytesIO()
    if output_format == "png":
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def _decode(index: int, data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return upright.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"image_input[{index}] is not a supported image") from exc


def _target_size(aspect_ratio: str, fallback: tuple[int, int]) -> tuple[int, int]:
    width, height = _RATIOS.get(aspect_ratio, fallback)
    scale = MAX_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _restyle(pictures: list[Image.Image], seed: bytes, aspect_ratio: str) -> Image.Image:
    base = pictures[0]
    if aspect_ratio in _RATIOS:
        base = ImageOps.fit(base, _target_size(aspect_ratio, base.size))
    base = base.copy()
    base.thumbnail((MAX_SIDE, MAX_SIDE))
    styled = ImageOps.autocontrast(base, cutoff=1)
    styled = ImageEnhance.Color(styled).enhance(1.3)
    tint = Image.new("RGB", styled.size, (seed[0], seed[1], seed[2]))
    styled = Image.blend(styled, tint, 0.2)
    for extra in pictures[1:]:
        # "Compose": the other inputs show through, as a style reference would.
        styled = Image.blend(styled, ImageOps.fit(extra, styled.size), 0.25)
    return styled


def _imagine(seed: bytes, aspect_ratio: str) -> Image.Image:
    size = _target_size(aspect_ratio, (1, 1))
    top = Image.new("RGB", size, (seed[0], seed[1], seed[2]))
    bottom = Image.new("RGB", size, (seed[3], seed[4], seed[5]))
    mask = Image.linear_gradient("L").resize(size)
    picture = Image.composite(bottom, top, mask)
    draw = ImageDraw.Draw(picture)
    rng = random.Random(seed)
    width, height = size
    for _ in range(6):
        x0, y0 = rng.randrange(width - 64), rng.randrange(height // 3, height - 64)
        x1, y1 = x0 + rng.randrange(48, width // 3), y0 + rng.randrange(48, height // 3)
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=color)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=color)
    return picture
