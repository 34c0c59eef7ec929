"""Bad submissions get a clear 4xx and leave nothing behind: no job, no object, no charge."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.e2e.harness import Stack, User, job_count, jpeg_bytes, objects_under


async def _assert_nothing_left(stack: Stack, user: User) -> None:
    assert await job_count(stack, user.id) == 0
    assert await objects_under(stack, "private", f"{user.id}/") == []
    assert (await user.usage())["used"] == 0


@pytest.mark.parametrize(
    ("mode", "images", "fields"),
    [
        ("redesign", 0, {}),
        ("redesign", 2, {}),
        ("staging", 0, {}),
        ("compose", 1, {}),
        ("imagine", 1, {"prompt": "A bright hall"}),
        ("imagine", 0, {}),
        ("sculpt", 1, {}),
        ("redesign", 1, {"style": "baroque_mars"}),
        ("redesign", 1, {"roomType": "dungeon"}),
        ("imagine", 0, {"prompt": "x" * 1001}),
    ],
)
async def test_invalid_requests_are_400(
    stack: Stack, user: User, mode: str, images: int, fields: dict[str, str]
) -> None:
    pictures = [jpeg_bytes() for _ in range(images)]
    response = await user.submit(mode, images=pictures or None, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert response.headers["x-request-id"]
    await _assert_nothing_left(stack, user)


@pytest.mark.parametrize(
    "prompt",
    [
        "Put my email jane.citizen@example.com on the wall",
        "Call me on 0412 345 678 about the sofa",
        "Card 4111 1111 1111 1111 on the table",
        "Redesign 42 Wallaby Street like a palace",
        "sofa sofa sofa sofa sofa sofa sofa sofa sofa sofa",
    ],
)
async def test_moderation_rejects_without_echoing(stack: Stack, user: User, prompt: str) -> None:
    response = await user.submit("imagine", prompt=prompt)
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert prompt not in response.text
    for word in prompt.split():
        if len(word) > 6:
            assert word not in body["error"]["message"]
    await _assert_nothing_left(stack, user)


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "payload",
    [
        b"just text, not an image",
        b"%PDF-1.7 fake",
        _gif(),
        jpeg_bytes()[:200],
        b"\x89PNG\r\n\x1a\n" + jpeg_bytes(),
    ],
)
async def test_disguised_files_are_415(stack: Stack, user: User, payload: bytes) -> None:
    response = await user.submit("redesign", images=[payload])
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    await _assert_nothing_left(stack, user)


async def test_too_large_file_is_413(stack: Stack, user: User) -> None:
    big = jpeg_bytes() + b"\0" * (10 * 1024 * 1024)
    response = await user.submit("redesign", images=[big])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    await _assert_nothing_left(stack, user)


async def test_exif_and_gps_are_stripped_before_storage(stack: Stack, user: User) -> None:
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "S", 2: (33.0, 52.0, 0.0)}
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    response = await user.submit("redesign", images=[buffer.getvalue()])
    assert response.status_code == 202, response.text
    [key] = await objects_under(stack, "private", f"{user.id}/inputs/")
    assert key.endswith(".jpg")
    stored = await stack.ctx.storage.get_bytes("private", key, 10 * 1024 * 1024)
    assert stored is not None
    assert b"PhoneMaker" not in stored
    assert not Image.open(io.BytesIO(stored)).getexif()
    await user.wait_for(response.json()["id"], {"succeeded"})


async def test_missing_and_bad_tokens_are_401(user: User) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = await user.client.get(f"{user.stack.api}/usage", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
