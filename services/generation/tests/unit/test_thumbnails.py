"""Thumbnails of renders: decoded at reduced scale, at most 512 px on the long side."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from generation.domain.thumbnails import (
    MAX_OUTPUT_PIXELS,
    THUMBNAIL_EDGE,
    NotAnImage,
    as_jpeg,
    draft_box,
    make_thumbnail,
)


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image ``convert`` is asked to decode (records into the list)."""
    sizes: list[tuple[int, int]] = []
    convert = Image.Image.convert

    def recording(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        sizes.append(self.size)
        return convert(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "convert", recording)
    return sizes


@pytest.mark.parametrize(
    ("size", "decoded"),
    [((1024, 768), (512, 384)), ((768, 1024), (384, 512)), ((2048, 2048), (512, 512))],
)
def test_a_landscape_or_portrait_render_is_decoded_at_reduced_scale(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    sizes = decoded_sizes(monkeypatch)

    thumbnail = make_thumbnail(jpeg(*size))

    assert sizes == [decoded]
    assert (thumbnail.width, thumbnail.height) == size
    with Image.open(io.BytesIO(thumbnail.jpeg)) as small:
        assert small.format == "JPEG"
        assert small.size == decoded


def test_a_size_that_scaling_cannot_halve_exactly_keeps_the_full_decode() -> None:
    # 1000x750 at half scale would be 500 px: smaller than a thumbnail may be.
    assert draft_box(1000, 750) == (512, 384)
    thumbnail = make_thumbnail(jpeg(1000, 750))
    with Image.open(io.BytesIO(thumbnail.jpeg)) as small:
        assert small.size == (THUMBNAIL_EDGE, 384)


def test_a_small_render_is_not_enlarged() -> None:
    assert draft_box(300, 200) == (300, 200)
    thumbnail = make_thumbnail(jpeg(300, 200))
    with Image.open(io.BytesIO(thumbnail.jpeg)) as small:
        assert small.size == (300, 200)


def test_bytes_that_are_no_image_are_refused() -> None:
    with pytest.raises(NotAnImage):
        make_thumbnail(b"\xff\xd8not really a jpeg")


def test_an_output_past_the_pixel_cap_is_neither_decoded_nor_converted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small PNG whose header names 20 MP (a whole decode would take 80 MB as RGBA)."""
    out = io.BytesIO()
    Image.new("1", (5000, 4000)).save(out, format="PNG")
    assert MAX_OUTPUT_PIXELS < 5000 * 4000
    sizes = decoded_sizes(monkeypatch)

    for step in (make_thumbnail, as_jpeg):
        with pytest.raises(NotAnImage, match="too many pixels"):
            step(out.getvalue())

    assert sizes == []
