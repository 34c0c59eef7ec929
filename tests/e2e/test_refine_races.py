"""Refine and the thumbnail backfill racing a real DELETE, and parallel refines: no
stored input outlives the jobs that name it, no render file outlives its deletion, one
slot and one debit per key."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import select, update

from generation.domain.thumbnail_backfill import backfill_thumbnails
from generation.persistence.models import GenerationJob, RenderVariant
from kit.db import session_scope
from tests.e2e.harness import (
    Stack,
    User,
    after_late_writers,
    jpeg_bytes,
    objects_under,
)


async def _finished(user: User) -> dict[str, Any]:
    response = await user.submit("redesign", images=[jpeg_bytes()])
    assert response.status_code == 202, response.text
    return await user.wait_for(response.json()["id"], {"succeeded"})


async def _refine(user: User, source_id: str, key: str | None = None) -> httpx.Response:
    headers = {**user.headers, **({"Idempotency-Key": key} if key else {})}
    return await user.client.post(
        f"{user.stack.api}/generations",
        json={"mode": "redesign", "source": {"generationId": source_id}, "prompt": "Green sofa"},
        headers=headers,
    )


async def _live_input_keys(stack: Stack, owner: uuid.UUID) -> set[str]:
    async with session_scope(stack.ctx.sessions) as session:
        rows = (
            await session.execute(
                select(GenerationJob.input_keys, GenerationJob.deleted_at).where(
                    GenerationJob.owner_id == owner
                )
            )
        ).all()
    return {key for keys, deleted in rows if deleted is None for key in keys}


async def _inputs_match_rows(stack: Stack, user: User) -> None:
    stored = set(await objects_under(stack, "private", f"{user.id}/inputs/"))
    assert stored == await _live_input_keys(stack, user.id)


async def test_refine_racing_a_real_delete_of_its_source(stack: Stack, user: User) -> None:
    await stack.set_plan(user.id, "price_pro_monthly")
    for step in range(10):
        source = await _finished(user)

        # The DELETE lands at ten points of the refine, 0 to 27 ms after it was sent.
        async def delete(job_id: str = source["id"], pause: float = 0.003 * step) -> httpx.Response:
            await asyncio.sleep(pause)
            return await user.delete(job_id)

        refined, deleted = await asyncio.gather(_refine(user, source["id"]), delete())
        assert deleted.status_code == 200
        assert refined.status_code in (202, 404), refined.text
        if refined.status_code == 202:
            await user.wait_for(refined.json()["id"], {"succeeded"})
            assert (await user.delete(refined.json()["id"])).status_code == 200
        await _inputs_match_rows(stack, user)


async def test_parallel_refines_one_slot_one_debit_no_strays(stack: Stack, user: User) -> None:
    await stack.set_plan(user.id, "price_pro_monthly")
    source = await _finished(user)
    plain = await asyncio.gather(*(_refine(user, source["id"]) for _ in range(6)))
    assert sorted(r.status_code for r in plain) == [202] + [409] * 5
    await user.wait_for(next(r for r in plain if r.status_code == 202).json()["id"], {"succeeded"})
    keyed = await asyncio.gather(*(_refine(user, source["id"], "refine-key") for _ in range(6)))
    assert {r.status_code for r in keyed} == {202}
    assert len({r.json()["id"] for r in keyed}) == 1
    job = await user.wait_for(keyed[0].json()["id"], {"succeeded"})
    assert (await user.usage())["used"] == 3
    await _inputs_match_rows(stack, user)
    # The refined job's signed input link dies with its deletion.
    url = job["inputs"][0]["url"]
    assert (await user.client.get(url)).status_code == 200
    deleted = await user.delete(job["id"])
    assert deleted.json()["inputs"] == []
    assert (await user.client.get(url)).status_code == 404


async def test_backfill_racing_a_real_delete_leaves_no_files(stack: Stack, user: User) -> None:
    await stack.set_plan(user.id, "price_pro_monthly")
    renders = []
    for i in range(6):
        job = await _finished(user)
        render_id = uuid.UUID(job["variants"][0]["url"].rsplit("/", 2)[-2])
        await stack.ctx.storage.remove(
            stack.ctx.public_bucket, [f"renders/{render_id}/0.thumb.jpg"]
        )
        async with session_scope(stack.ctx.sessions) as session:
            await session.execute(
                update(RenderVariant)
                .where(RenderVariant.render_id == render_id)
                .values(thumbnail_key=None, width=None, height=None)
            )

        async def delete(job_id: str = job["id"], pause: float = 0.003 * i) -> None:
            await asyncio.sleep(pause)
            assert (await user.delete(job_id)).status_code == 200

        await asyncio.gather(backfill_thumbnails(stack.ctx), delete())
        renders.append(render_id)
    await after_late_writers(stack)
    for render_id in renders:
        assert await objects_under(stack, "public", f"renders/{render_id}/") == []
