"""A late or duplicate applier never resurrects a deleted render's files, nor leaves
files of a job that ended without output.

The races are driven deterministically: the domain functions run directly on the
real stack (PostgreSQL, the S3 server, the emulator), and the late applier is held
at its download by an event, so each interleaving happens exactly as written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import select

from generation.domain import jobs
from generation.domain.commands import delete_generation
from generation.domain.context import GenerationContext
from generation.domain.events import Outcome, apply_prediction, end_without_output
from generation.domain.provider import Prediction
from generation.domain.records import Job
from generation.domain.sweep import sweep_once
from generation.persistence.models import GenerationJob, Render
from kit.db import session_scope
from kit.storage import ObjectStorage, StorageError
from tests.e2e.harness import Stack, User, after_late_writers, jpeg_bytes, objects_under

_WAIT = 10.0


class GatedProvider:
    """The real provider, except that downloads wait until the test opens the gate."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def download_output(self, url: str, max_bytes: int) -> bytes:
        self.entered.set()
        await self.gate.wait()
        data: bytes = await self._inner.download_output(url, max_bytes)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RemovalStorage:
    """The real storage, with prefix removal made to fail, or held after it ran."""

    def __init__(self, inner: Any, *, fail: bool = False) -> None:
        self._inner = inner
        self._fail = fail
        self.removed = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def remove_prefix(self, bucket: str, prefix: str) -> int:
        if self._fail:
            raise StorageError("injected: storage refused the removal")
        count: int = await self._inner.remove_prefix(bucket, prefix)
        self.removed.set()
        await self.gate.wait()
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ThumbnailFailingStorage:
    """The real storage, except that thumbnails cannot be stored (originals can)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        if key.endswith(".thumb.jpg"):
            raise StorageError("injected: the thumbnail's PUT failed")
        await self._inner.put_bytes(bucket, key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class DetachedWrites:
    """The real storage, whose PUTs run as the real client's do, in threads that a
    cancellation of their caller does not stop; held until the test opens ``gate``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = asyncio.Event()
        self.writes: list[asyncio.Future[None]] = []

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        async def write() -> None:
            await self.gate.wait()
            await self._inner.put_bytes(bucket, key, data, content_type)

        task = asyncio.ensure_future(write())
        self.writes.append(task)
        await asyncio.shield(task)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclasses.dataclass
class Race:
    job_id: str
    prediction: Prediction
    render_prefix: str
    late: GatedProvider
    late_applier: asyncio.Task[tuple[Outcome, Job | None]]

    async def let_the_late_applier_finish(self) -> Outcome:
        self.late.gate.set()
        outcome, _ = await asyncio.wait_for(self.late_applier, _WAIT)
        return outcome


async def start_race(stack: Stack, user: User, late_storage: Any | None = None) -> Race:
    """A job whose provider run succeeded, and a late applier of it held at its download."""
    await stack.control("set_faults", hold=True, drop_webhooks="all")
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    job_id, prediction_id = response.json()["id"], response.json()["predictionId"]
    await stack.control("advance", prediction_id, "succeeded")
    prediction = await stack.ctx.provider.get_prediction(prediction_id)
    assert prediction.output_urls
    late = GatedProvider(stack.ctx.provider)
    late_ctx = dataclasses.replace(
        stack.ctx, provider=late, storage=late_storage or stack.ctx.storage
    )
    task = asyncio.create_task(apply_prediction(late_ctx, prediction, source="webhook"))
    await asyncio.wait_for(late.entered.wait(), _WAIT)
    render_id = jobs.render_id_for(uuid.UUID(job_id))
    return Race(job_id, prediction, f"renders/{render_id}/", late, task)


async def rows(stack: Stack, job_id: str) -> tuple[GenerationJob, Render | None]:
    """The job's row and its render's (the test reads the database as an operator would)."""
    async with session_scope(stack.ctx.sessions) as session:
        job = await session.get(GenerationJob, uuid.UUID(job_id))
        render = await session.scalar(select(Render).where(Render.job_id == uuid.UUID(job_id)))
    assert job is not None
    return job, render


async def win(stack: Stack, race: Race) -> None:
    """The prompt applier (a webhook) finishes first: the job succeeds, its render is live."""
    outcome, _ = await apply_prediction(stack.ctx, race.prediction, source="webhook")
    assert outcome is Outcome.APPLIED


async def test_a_late_applier_after_delete_leaves_no_files(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    race = await start_race(stack, user)
    await win(stack, race)
    job = await user.wait_for(race.job_id, {"succeeded"})
    url = job["variants"][0]["url"]
    assert (await user.delete(race.job_id)).status_code == 200
    assert await objects_under(stack, "public", race.render_prefix) == []

    assert await race.let_the_late_applier_finish() is Outcome.STALE

    assert await objects_under(stack, "public", race.render_prefix) == []
    assert (await http.get(url)).status_code == 404
    await after_late_writers(stack)
    job_row, render = await rows(stack, race.job_id)
    assert render is not None
    assert render.deleted_at is not None
    assert job_row.files_removed_at is not None
    assert job_row.files_round == 1
    assert (await user.get(race.job_id)).json()["variants"] == []


async def test_a_late_applier_cancelled_while_it_writes_after_delete_leaves_no_files(
    stack: Stack, user: User
) -> None:
    """A webhook's RPC cut off (its deadline, the gateway gone) while its PUTs run: the
    writes land all the same, so the applier finishes its copy (here: finds the render
    deleted and removes what it wrote) before it lets the cancellation on."""
    storage = DetachedWrites(stack.ctx.storage)
    race = await start_race(stack, user, late_storage=storage)
    await win(stack, race)
    await user.wait_for(race.job_id, {"succeeded"})
    assert (await user.delete(race.job_id)).status_code == 200
    assert await objects_under(stack, "public", race.render_prefix) == []

    race.late.gate.set()
    async with asyncio.timeout(_WAIT):
        while len(storage.writes) < 2:  # the original and its thumbnail
            await asyncio.sleep(0.01)
    race.late_applier.cancel()
    storage.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(race.late_applier, _WAIT)
    await asyncio.gather(*storage.writes)

    assert await objects_under(stack, "public", race.render_prefix) == []
    await after_late_writers(stack)
    job_row, _ = await rows(stack, race.job_id)
    assert job_row.files_removed_at is not None


async def test_a_late_applier_that_stored_only_some_files_after_delete_leaves_none(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    """Its original is stored, its thumbnail's PUT fails: the copy raises (the job is
    no longer in flight, so no retry comes), and what it stored must go all the same."""
    race = await start_race(stack, user, late_storage=ThumbnailFailingStorage(stack.ctx.storage))
    await win(stack, race)
    job = await user.wait_for(race.job_id, {"succeeded"})
    url = job["variants"][0]["url"]
    assert (await user.delete(race.job_id)).status_code == 200
    assert await objects_under(stack, "public", race.render_prefix) == []

    with pytest.raises(StorageError):
        await race.let_the_late_applier_finish()

    assert await objects_under(stack, "public", race.render_prefix) == []
    assert (await http.get(url)).status_code == 404
    await after_late_writers(stack)
    job_row, _ = await rows(stack, race.job_id)
    assert job_row.files_removed_at is not None
    assert job_row.files_round == 1


async def test_a_duplicate_applier_keeps_the_files_of_a_live_render(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    race = await start_race(stack, user)
    await win(stack, race)

    assert await race.let_the_late_applier_finish() is Outcome.STALE

    job = await user.wait_for(race.job_id, {"succeeded"})
    assert (await http.get(job["variants"][0]["url"])).status_code == 200
    assert await objects_under(stack, "public", race.render_prefix) == [
        f"{race.render_prefix}0.jpg",
        f"{race.render_prefix}0.thumb.jpg",
    ]
    job_row, render = await rows(stack, race.job_id)
    assert render is not None
    assert render.deleted_at is None
    assert job_row.files_due_at is None
    assert job_row.files_round == 0


async def test_a_late_applier_of_a_job_that_ended_failed_leaves_no_files(
    stack: Stack, user: User
) -> None:
    race = await start_race(stack, user)
    async with session_scope(stack.ctx.sessions) as session:
        job_row = await session.get(GenerationJob, uuid.UUID(race.job_id))
    assert job_row is not None
    # The sweep gave up on the job (its overall timeout) while the output was copied.
    assert await end_without_output(stack.ctx, job_row, jobs.TIMED_OUT, jobs.FAILED)

    assert await race.let_the_late_applier_finish() is Outcome.STALE

    assert await objects_under(stack, "public", race.render_prefix) == []
    body = (await user.get(race.job_id)).json()
    assert body["status"] == "failed"
    assert body["variants"] == []
    # No render row for a job that did not succeed; the removal is recorded on the job.
    await after_late_writers(stack)
    job_row, render = await rows(stack, race.job_id)
    assert render is None
    assert job_row.files_removed_at is not None
    assert job_row.files_round == 1


async def test_stray_files_the_applier_could_not_remove_are_removed_by_the_sweep(
    stack: Stack, user: User
) -> None:
    race = await start_race(stack, user, late_storage=RemovalStorage(stack.ctx.storage, fail=True))
    await win(stack, race)
    assert (await user.delete(race.job_id)).status_code == 200

    assert await race.let_the_late_applier_finish() is Outcome.STALE

    assert await objects_under(stack, "public", race.render_prefix) != []
    job_row, _ = await rows(stack, race.job_id)
    assert job_row.files_removed_at is None
    await sweep_once(stack.ctx)
    assert await objects_under(stack, "public", race.render_prefix) == []


async def test_a_removal_that_listed_before_a_late_write_does_not_mark_it_done(
    stack: Stack, user: User
) -> None:
    """DELETE lists and removes, then the late applier writes and fails to remove its
    copy: the DELETE must not record the render as cleaned, so the sweep still looks."""
    race = await start_race(stack, user, late_storage=RemovalStorage(stack.ctx.storage, fail=True))
    await win(stack, race)
    held = RemovalStorage(stack.ctx.storage)
    held.gate.clear()
    # RemovalStorage delegates the rest through __getattr__, which mypy cannot see.
    delete_ctx: GenerationContext = dataclasses.replace(
        stack.ctx, storage=cast(ObjectStorage, held)
    )
    deleting = asyncio.create_task(delete_generation(delete_ctx, user.id, uuid.UUID(race.job_id)))
    await asyncio.wait_for(held.removed.wait(), _WAIT)

    assert await race.let_the_late_applier_finish() is Outcome.STALE
    held.gate.set()
    await asyncio.wait_for(deleting, _WAIT)

    job_row, _ = await rows(stack, race.job_id)
    assert job_row.files_removed_at is None
    assert job_row.files_round == 1
    assert await objects_under(stack, "public", race.render_prefix) != []
    await sweep_once(stack.ctx)
    assert await objects_under(stack, "public", race.render_prefix) == []
    await after_late_writers(stack)
    job_row, _ = await rows(stack, race.job_id)
    assert job_row.files_removed_at is not None


async def test_outputs_an_attempt_stored_but_never_committed_go_when_the_job_fails(
    stack: Stack, user: User
) -> None:
    await stack.control("set_faults", hold=True)
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    prefix = f"renders/{jobs.render_id_for(uuid.UUID(job_id))}/"
    # An applier stored the output, then its transaction failed: the job stayed in flight.
    await stack.ctx.storage.put_bytes("public", f"{prefix}0.jpg", jpeg_bytes(), "image/jpeg")
    job_row, _ = await rows(stack, job_id)

    assert await end_without_output(stack.ctx, job_row, jobs.TIMED_OUT, jobs.FAILED)
    await sweep_once(stack.ctx)

    assert await objects_under(stack, "public", prefix) == []
    await after_late_writers(stack)
    job_row, render = await rows(stack, job_id)
    assert render is None
    assert job_row.files_removed_at is not None
