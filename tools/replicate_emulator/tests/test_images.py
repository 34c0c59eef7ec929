"""The "model" really downloads image_input (here: presigned URLs of a real S3
server) and produces real pictures derived from them."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from kit.settings import S3Settings
from kit.storage import ObjectStorage
from testkit.emulator import EmulatorServer
from testkit.plugin import S3Endpoint

MODEL_PATH = "/v1/models/google/nano-banana/predictions"
BUCKET = "emulator-inputs"


def room_jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    picture = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((size[0] // 4, size[1] // 2, size[0] // 2, size[1] - 20), fill=(90, 60, 30))
    draw.ellipse((size[0] // 2, 20, size[0] - 40, size[1] // 3), fill=(250, 250, 210))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture
async def storage(s3_server: S3Endpoint) -> ObjectStorage:
    store = ObjectStorage(S3Settings.model_validate(s3_server.env()))
    await store.ensure_bucket(BUCKET)
    return store


async def presigned(storage: ObjectStorage, key: str, data: bytes, ttl: int = 300) -> str:
    await storage.put_bytes(BUCKET, key, data, "image/jpeg")
    return await storage.presigned_get_url(BUCKET, key, ttl)


def run(emulator: EmulatorServer, api: httpx.Client, model_input: dict[str, Any]) -> dict[str, Any]:
    response = api.post(MODEL_PATH, json={"input": model_input})
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    return emulator.control.wait_for_status(pid, ["succeeded", "failed"])


def download(url: str) -> Image.Image:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB").resize(a.size))
    return sum(ImageStat.Stat(diff).mean) / 3


async def test_output_is_derived_from_the_fetched_input(
    emulator: EmulatorServer, api: httpx.Client, storage: ObjectStorage
) -> None:
    room = room_jpeg((640, 480), (200, 200, 200))
    url = await presigned(storage, "room.jpg", room)

    done = run(emulator, api, {"prompt": "scandi", "image_input": [url]})

    assert done["status"] == "succeeded", done["error"]
    output = download(done["output"])
    assert output.format == "JPEG"
    assert output.size == (640, 480)  # match_input_image
    source = Image.open(io.BytesIO(room))
    assert 2 < mean_difference(output, source) < 120  # re-toned, still the same room


async def test_compose_uses_the_second_input(
    emulator: EmulatorServer, api: httpx.Client, storage: ObjectStorage
) -> None:
    room = await presigned(storage, "room2.jpg", room_jpeg((800, 600), (180, 190, 200)))
    style = await presigned(storage, "style.jpg", room_jpeg((300, 300), (20, 120, 40)))

    alone = run(emulator, api, {"prompt": "x", "image_input": [room]})
    composed = run(emulator, api, {"prompt": "x", "image_input": [room, style]})

    assert composed["status"] == "succeeded"
    assert mean_difference(download(alone["output"]), download(composed["output"])) > 2


async def test_aspect_ratio_crops_the_input(
    emulator: EmulatorServer, api: httpx.Client, storage: ObjectStorage
) -> None:
    url = await presigned(storage, "room3.jpg", room_jpeg((600, 600), (220, 210, 200)))
    done = run(emulator, api, {"prompt": "x", "image_input": [url], "aspect_ratio": "16:9"})
    assert download(done["output"]).size == (1024, 576)


async def test_tampered_presigned_url_fails_the_prediction(
    emulator: EmulatorServer, api: httpx.Client, storage: ObjectStorage
) -> None:
    url = await presigned(storage, "room4.jpg", room_jpeg((128, 128), (1, 2, 3)))
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")

    done = run(emulator, api, {"prompt": "x", "image_input": [tampered]})

    assert done["status"] == "failed"
    assert done["error"] == "Failed to download image_input[0]: HTTP 403"
    assert done["output"] is None


async def test_expired_presigned_url_fails_the_prediction(
    emulator: EmulatorServer, api: httpx.Client, storage: ObjectStorage
) -> None:
    url = await presigned(storage, "room5.jpg", room_jpeg((128, 128), (1, 2, 3)), ttl=1)
    await asyncio.sleep(2.1)

    done = run(emulator, api, {"prompt": "x", "image_input": [url]})

    assert done["status"] == "failed"
    assert "HTTP 403" in done["error"]


def test_imagine_without_inputs_paints_a_picture(
    emulator: EmulatorServer, api: httpx.Client
) -> None:
    first = run(emulator, api, {"prompt": "a sunny loft"})
    again = run(emulator, api, {"prompt": "a sunny loft"})
    other = run(emulator, api, {"prompt": "a dark cellar", "aspect_ratio": "9:16"})

    picture = download(first["output"])
    assert picture.format == "JPEG"
    assert picture.size == (1024, 1024)
    assert ImageStat.Stat(picture.convert("L")).stddev[0] > 5  # not a blank canvas
    assert mean_difference(picture, download(again["output"])) == 0  # deterministic
    assert download(other["output"]).size == (576, 1024)


def test_non_image_input_fails(emulator: EmulatorServer, api: httpx.Client) -> None:
    not_an_image = f"{emulator.base_url}/_emulator/health"
    done = run(emulator, api, {"prompt": "x", "image_input": [not_an_image]})
    assert done["status"] == "failed"
    assert done["error"] == "image_input[0] is not a supported image"
