"""The sweep's removals of deleted renders: one that storage refuses for good never
keeps the others from going, and a storage that refuses everything is not waited on
item by item."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from generation.domain import commands, jobs, sweep
from generation.domain.cleanup import render_prefix
from kit.storage import StorageError
from services.generation.tests.core.stack import Core


class Storage:
    """The real storage, refusing removals under some prefixes (or all of them)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.refused: set[str] = set()  # render prefixes and input keys
        self.down = False
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def remove_prefix(self, bucket: str, prefix: str) -> int:
        self.attempts += 1
        if self.down or prefix in self.refused:
            raise StorageError("1 objects could not be removed")
        return int(await self._real.remove_prefix(bucket, prefix))

    async def remove(self, bucket: str, keys: list[str]) -> None:
        if self.refused & set(keys):
            raise StorageError("1 objects could not be removed")
        await self._real.remove(bucket, keys)


async def _with_input(core: Core) -> tuple[uuid.UUID, uuid.UUID, str]:
    """A succeeded job whose input (a private object of its own) is ``key``."""
    owner, job_id = await _succeeded(core)
    ctx = core.app.context
    key = f"{owner}/inputs/{uuid.uuid4()}.jpg"
    await ctx.storage.put_bytes(ctx.private_bucket, key, b"x", "image/jpeg")
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            text("UPDATE generation_jobs SET input_keys = CAST(:keys AS jsonb) WHERE id = :id"),
            {"keys": json.dumps([key]), "id": job_id},
        )
    return owner, job_id, key


@pytest.mark.parametrize("refused", ["inputs", "renders"])
async def test_three_removals_refused_for_good_keep_no_other_input(
    core: Core, refused: str
) -> None:
    """Three jobs whose inputs (or render files) storage refuses to remove for good:
    another deleted job's input still goes within two passes (neither queue stalls on
    them, and render refusals do not end the pass before the inputs)."""
    storage = Storage(core.app.context.storage)
    ctx = dataclasses.replace(core.app.context, storage=storage)  # type: ignore[arg-type]
    stuck = [await _with_input(core) for _ in range(3)]
    owner_d, job_d, key_d = await _with_input(core)
    for owner, job, key in stuck:
        storage.refused.add(key if refused == "inputs" else render_prefix(jobs.render_id_for(job)))
        await commands.delete_generation(ctx, owner, job)
    storage.refused.add(key_d)  # a blip during D's DELETE
    await commands.delete_generation(ctx, owner_d, job_d)
    storage.refused.discard(key_d)

    await sweep.sweep_files_once(ctx)
    await sweep.sweep_files_once(ctx)

    assert await storage.list_keys(ctx.private_bucket, key_d) == []


async def _succeeded(core: Core) -> tuple[uuid.UUID, uuid.UUID]:
    owner = uuid.uuid4()
    job = (await core.submit(owner)).job
    await core.apply_webhook(job.prediction_id, "succeeded")
    return owner, uuid.UUID(job.id)


@pytest.mark.parametrize("refused", [1, 3], ids=["one refused", "as many as end a pass"])
async def test_renders_storage_will_not_remove_keep_no_other_public(
    core: Core, refused: int
) -> None:
    storage = Storage(core.app.context.storage)
    ctx = dataclasses.replace(core.app.context, storage=storage)  # type: ignore[arg-type]
    stuck = [await _succeeded(core) for _ in range(refused)]
    owner_b, job_b = await _succeeded(core)
    prefix_b = render_prefix(jobs.render_id_for(job_b))
    assert await storage.list_keys(ctx.public_bucket, prefix_b)

    # Objects under retention, a policy: storage refuses these removals for good.
    for owner, job in stuck:
        storage.refused.add(render_prefix(jobs.render_id_for(job)))
        await commands.delete_generation(ctx, owner, job)
    # B: deleted during a storage blip, so the DELETE's own attempt was refused too.
    storage.refused.add(prefix_b)
    await commands.delete_generation(ctx, owner_b, job_b)
    storage.refused.discard(prefix_b)

    # Each pass takes the oldest due first; a refused one goes to the back. (Three
    # refusals in a row end a pass: without that, B would wait behind them for good.)
    await sweep.sweep_files_once(ctx)
    await sweep.sweep_files_once(ctx)

    assert await storage.list_keys(ctx.public_bucket, prefix_b) == []
    for _, job in stuck:  # still refused, still due
        assert await storage.list_keys(ctx.public_bucket, render_prefix(jobs.render_id_for(job)))


async def test_a_storage_that_refuses_everything_ends_the_pass_after_three(core: Core) -> None:
    storage = Storage(core.app.context.storage)
    ctx = dataclasses.replace(core.app.context, storage=storage)  # type: ignore[arg-type]
    deleted = [await _succeeded(core) for _ in range(5)]
    storage.down = True
    for owner, job in deleted:
        await commands.delete_generation(ctx, owner, job)

    storage.attempts = 0
    assert await sweep.sweep_files_once(ctx) == 0
    assert storage.attempts == 3  # not one timeout per pending job

    storage.down = False
    await sweep.sweep_files_once(ctx)
    for _, job in deleted:
        prefix = render_prefix(jobs.render_id_for(job))
        assert await storage.list_keys(ctx.public_bucket, prefix) == []
