"""Storing a prediction's outputs: the original's PUT and its thumbnail run at once."""

from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass, field
from typing import cast

import pytest
from PIL import Image

from generation.domain.assets import store_render_variants
from generation.domain.context import GenerationContext
from generation.domain.jobs import thumbnail_key, variant_key
from kit.runtime_config import load_runtime_config
from kit.storage import StorageError
from testkit.config import REPO_RUNTIME_CONFIG

# Long enough for a thumbnail on a loaded machine, short next to the test timeout.
WAIT_SECONDS = 5.0


def _render_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1024, 768), (180, 140, 90)).save(out, format="JPEG", quality=90)
    return out.getvalue()


@dataclass
class _Provider:
    data: bytes

    async def download_output(self, url: str, max_bytes: int) -> bytes:
        return self.data


@dataclass
class _Storage:
    """Objects in a dict; the original's PUT can be held until the thumbnail's begins."""

    hold_original_for_thumbnail: bool = False
    fail_original: bool = False
    objects: dict[str, bytes] = field(default_factory=dict)
    thumbnail_put: asyncio.Event = field(default_factory=asyncio.Event)

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        if key.endswith(".thumb.jpg"):
            self.thumbnail_put.set()
        else:
            if self.hold_original_for_thumbnail:
                await asyncio.wait_for(self.thumbnail_put.wait(), WAIT_SECONDS)
            if self.fail_original:
                raise StorageError("object storage call failed: OSError")
        self.objects[key] = data


@dataclass
class _Ctx:
    provider: _Provider
    storage: _Storage
    config: object = field(default_factory=lambda: load_runtime_config(REPO_RUNTIME_CONFIG))
    public_bucket: str = "public"
    thumbnail_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


def _ctx(storage: _Storage) -> GenerationContext:
    return cast(GenerationContext, _Ctx(_Provider(_render_jpeg()), storage))


async def test_the_thumbnail_is_made_and_stored_while_the_original_is_put() -> None:
    # The original's PUT waits for the thumbnail's: done one after the other, it would
    # time out; from the same bytes at once, both finish.
    storage = _Storage(hold_original_for_thumbnail=True)
    render_id = uuid.uuid4()

    [variant] = await store_render_variants(_ctx(storage), render_id, ["https://x/0.jpg"])

    assert variant.object_key == variant_key(render_id, 0)
    assert variant.thumbnail_key == thumbnail_key(render_id, 0)
    assert (variant.width, variant.height) == (1024, 768)
    assert set(storage.objects) == {variant_key(render_id, 0), thumbnail_key(render_id, 0)}


async def test_a_failed_put_of_the_original_is_raised_as_it_was() -> None:
    storage = _Storage(fail_original=True)

    with pytest.raises(StorageError):
        await store_render_variants(_ctx(storage), uuid.uuid4(), ["https://x/0.jpg"])


async def test_a_png_output_is_stored_as_a_jpeg_with_transparency_on_white() -> None:
    picture = Image.new("RGBA", (640, 480), (0, 0, 0, 0))  # transparent black
    picture.paste((20, 90, 160, 255), (0, 0, 320, 480))  # the left half opaque blue
    out = io.BytesIO()
    picture.save(out, format="PNG")
    storage = _Storage()
    ctx = cast(GenerationContext, _Ctx(_Provider(out.getvalue()), storage))
    render_id = uuid.uuid4()

    [variant] = await store_render_variants(ctx, render_id, ["https://x/out.png"])

    with Image.open(io.BytesIO(storage.objects[variant_key(render_id, 0)])) as stored:
        assert stored.format == "JPEG"
        assert stored.size == (640, 480)
        left = cast(tuple[int, int, int], stored.getpixel((100, 240)))
        right = cast(tuple[int, int, int], stored.getpixel((540, 240)))
    assert all(abs(a - b) <= 6 for a, b in zip(left, (20, 90, 160), strict=True)), left
    assert min(right) >= 248, right  # white, not the transparent pixels' black
    assert (variant.width, variant.height) == (640, 480)
    assert variant.thumbnail_key == thumbnail_key(render_id, 0)


async def test_an_output_that_is_no_image_is_stored_as_it_came_without_a_thumbnail() -> None:
    storage = _Storage()
    ctx = cast(GenerationContext, _Ctx(_Provider(b"<html>not an image</html>"), storage))
    render_id = uuid.uuid4()

    [variant] = await store_render_variants(ctx, render_id, ["https://x/out"])

    assert storage.objects == {variant_key(render_id, 0): b"<html>not an image</html>"}
    assert variant.thumbnail_key is None
