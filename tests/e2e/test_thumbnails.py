"""Thumbnails: made with every stored render, served beside it, backfilled for old ones."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any, cast

import httpx
from PIL import Image
from sqlalchemy import select, update

from generation.domain.assets import store_render_variants
from generation.domain.commands import delete_generation
from generation.domain.provider import PredictionRequest
from generation.domain.thumbnail_backfill import backfill_thumbnails
from generation.persistence.models import RenderVariant
from kit.db import session_scope
from kit.storage import ObjectStorage
from testkit.plugin import S3Endpoint
from tests.e2e.harness import Stack, User, jpeg_bytes, objects_under


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


async def _succeeded(user: User) -> dict[str, Any]:
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    return await user.wait_for(response.json()["id"], {"succeeded"})


async def test_every_variant_has_a_small_thumbnail_and_its_size(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    job = await _succeeded(user)
    [variant] = job["variants"]

    full = await http.get(variant["url"])
    small = await http.get(variant["thumbnailUrl"])

    assert full.status_code == small.status_code == 200
    assert _size(full.content) == (variant["width"], variant["height"])
    width, height = _size(small.content)
    assert max(width, height) <= 512
    assert abs(width / height - variant["width"] / variant["height"]) < 0.02
    assert variant["thumbnailUrl"].endswith("/0.thumb.jpg")
    assert small.headers["x-content-type-options"] == "nosniff"


async def test_deleting_a_render_removes_its_thumbnails_too(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    job = await _succeeded(user)
    [variant] = job["variants"]
    render_id = uuid.UUID(variant["url"].rsplit("/", 2)[-2])
    assert (await http.get(variant["thumbnailUrl"])).status_code == 200

    assert (await user.delete(str(job["id"]))).status_code == 200

    assert (await http.get(variant["thumbnailUrl"])).status_code == 404
    assert await objects_under(stack, "public", f"renders/{render_id}/") == []


async def test_the_backfill_makes_missing_thumbnails_once(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    job = await _succeeded(user)
    [variant] = job["variants"]
    render_id = await _without_thumbnail(stack, variant)

    # The edge answers this settled job from memory; it must learn of the change.
    await _until_shown(user, job["id"], lambda shown: shown.get("thumbnailUrl") is None)

    first = await backfill_thumbnails(stack.ctx)
    again = await backfill_thumbnails(stack.ctx)

    key, width, height = await _thumbnail_row(stack, render_id)
    assert key == f"renders/{render_id}/0.thumb.jpg"
    assert (width, height) == (variant["width"], variant["height"])
    assert (await http.get(variant["thumbnailUrl"])).status_code == 200
    assert first.made >= 1
    assert again.made == 0
    # A thumbnail recorded later is a change of the job: the edge shows it.
    shown = await _until_shown(user, job["id"], lambda shown: shown.get("thumbnailUrl"))
    assert shown["thumbnailUrl"] == variant["thumbnailUrl"]


async def _until_shown(
    user: User, job_id: str, done: Callable[[dict[str, Any]], object]
) -> dict[str, Any]:
    """The job's first variant as GET shows it, once ``done`` holds for it."""
    async with asyncio.timeout(10):
        while True:
            response = await user.get(job_id)
            assert response.status_code == 200, response.text
            [shown] = response.json()["variants"]
            if done(shown):
                return dict(shown)
            await asyncio.sleep(0.02)


class DeletedWhileRead:
    """The real storage; the render is deleted (files removed) once the backfill has read
    its source, before the thumbnail is stored."""

    def __init__(self, stack: Stack, user: User, job_id: str) -> None:
        self._stack, self._user, self._job_id = stack, user, job_id
        self._inner = stack.ctx.storage

    async def get_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes | None:
        data: bytes | None = await self._inner.get_bytes(bucket, key, max_bytes)
        await delete_generation(self._stack.ctx, self._user.id, uuid.UUID(self._job_id))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_a_thumbnail_backfilled_while_its_render_is_deleted_does_not_stay(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    job = await _succeeded(user)
    [variant] = job["variants"]
    render_id = await _without_thumbnail(stack, variant)
    storage = cast(ObjectStorage, DeletedWhileRead(stack, user, str(job["id"])))

    report = await backfill_thumbnails(dataclasses.replace(stack.ctx, storage=storage))

    assert report.made == 0
    assert await objects_under(stack, "public", f"renders/{render_id}/") == []
    assert (await http.get(variant["thumbnailUrl"])).status_code == 404
    assert await _thumbnail_row(stack, render_id) == (None, None, None)


async def _without_thumbnail(stack: Stack, variant: dict[str, Any]) -> uuid.UUID:
    """As if the variant was stored before thumbnails existed: its render's id."""
    render_id = uuid.UUID(variant["url"].rsplit("/", 2)[-2])
    await stack.ctx.storage.remove(stack.ctx.public_bucket, [f"renders/{render_id}/0.thumb.jpg"])
    async with session_scope(stack.ctx.sessions) as session:
        await session.execute(
            update(RenderVariant)
            .where(RenderVariant.render_id == render_id)
            .values(thumbnail_key=None, width=None, height=None)
        )
    assert await _thumbnail_row(stack, render_id) == (None, None, None)
    return render_id


async def _thumbnail_row(stack: Stack, render_id: uuid.UUID) -> tuple[object, ...]:
    async with session_scope(stack.ctx.sessions) as session:
        row = (
            await session.execute(
                select(
                    RenderVariant.thumbnail_key, RenderVariant.width, RenderVariant.height
                ).where(RenderVariant.render_id == render_id)
            )
        ).one()
    return tuple(row)


def test_the_backfill_command_runs_and_reports(
    database_factory: Callable[[str], str], s3_server: S3Endpoint
) -> None:
    env = {
        **os.environ,
        **s3_server.env(),
        "GENERATION_DATABASE_URL": database_factory("backfill_cli"),
    }

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # The deployment's migrate step first: the backfill never changes the schema.
    migrated = run("generation", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    result = run("generation.backfill")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"made": 0, "skipped": 0}


async def test_a_png_output_is_stored_as_the_jpeg_its_name_promises(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    """With ``output_format = "png"`` the model answers PNG; the render is served as
    ``<idx>.jpg`` with ``image/jpeg``, so the bytes must be a JPEG too."""
    await stack.control("set_faults", hold=True, drop_webhooks="all")
    created = await stack.ctx.provider.create_prediction(
        PredictionRequest(
            prompt="a calm japandi living room",
            image_urls=(),
            webhook_url=f"{stack.api}/webhooks/replicate",
            webhook_events=("completed",),
            output_format="png",
        )
    )
    await stack.control("advance", created.id, "succeeded")
    prediction = await stack.ctx.provider.get_prediction(created.id)
    [url] = prediction.output_urls
    assert (await stack.ctx.provider.download_output(url, 1 << 24)).startswith(b"\x89PNG")
    render_id = uuid.uuid4()

    [variant] = await store_render_variants(stack.ctx, render_id, prediction.output_urls)

    served = await http.get(f"{stack.edge.base_url}/public/{variant.object_key}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert _size(served.content) == (variant.width, variant.height)
    small = await http.get(f"{stack.edge.base_url}/public/{variant.thumbnail_key}")
    assert max(_size(small.content)) <= 512
