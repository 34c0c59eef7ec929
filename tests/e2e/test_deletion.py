"""Deletion that deletes: after DELETE a render's files and the job's inputs leave storage.

Through the real stack (edge, generation, PostgreSQL, the S3 server): the public
URL answers 404 once the files are gone, a storage outage at delete time is
finished by the sweep, and deleting twice is harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from generation.domain.cleanup import AT_ONCE_SECONDS, LATE_WRITERS, sweep_deleted_files
from generation.domain.commands import delete_generation
from generation.domain.sweep import sweep_once
from generation.persistence.models import GenerationJob, Render
from kit.db import session_scope
from kit.settings import S3Settings
from kit.storage import ObjectStorage
from testkit.plugin import S3Endpoint
from tests.e2e.harness import Stack, User, after_late_writers, jpeg_bytes, objects_under


async def finished_redesign(user: User) -> dict[str, Any]:
    """A succeeded job with one uploaded input."""
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    return await user.wait_for(response.json()["id"], {"succeeded"})


def render_id_of(job: dict[str, Any]) -> str:
    url: str = job["variants"][0]["url"]
    return url.split("/public/renders/", 1)[1].split("/")[0]


async def rows(stack: Stack, job_id: str) -> tuple[GenerationJob, Render | None]:
    """The job's row and its render's (the test reads the database as an operator would)."""
    async with session_scope(stack.ctx.sessions) as session:
        job = await session.get(GenerationJob, uuid.UUID(job_id))
        render = await session.scalar(select(Render).where(Render.job_id == uuid.UUID(job_id)))
    assert job is not None
    return job, render


@contextmanager
def storage_stopped(s3: S3Endpoint) -> Iterator[None]:
    """The S3 server is down inside the block (its data stays on disk)."""
    s3.server.stop()
    try:
        yield
    finally:
        s3.server.start()


async def test_delete_removes_the_render_files_and_the_inputs(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    job = await finished_redesign(user)
    job_id, render_id = job["id"], render_id_of(job)
    url = job["variants"][0]["url"]
    assert (await http.get(url)).status_code == 200
    assert await objects_under(stack, "private", f"{user.id}/inputs/") != []
    # A file of the render the database does not name (as a thumbnail will be).
    await stack.ctx.storage.put_bytes(
        "public", f"renders/{render_id}/0_thumb.jpg", jpeg_bytes(8, 6), "image/jpeg"
    )

    assert len(job["inputs"]) == 1
    stack.clock.advance(timedelta(seconds=1))

    deleted = await user.delete(job_id)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["variants"] == []
    # The inputs are removed too: no links to them, here, in GET or in the history.
    assert deleted.json()["inputs"] == []
    assert (await user.get(job_id)).json()["inputs"] == []
    listed = await http.get(f"{stack.api}/generations", headers=user.headers)
    assert [(j["id"], j["inputs"]) for j in listed.json()["items"]] == [(job_id, [])]
    assert deleted.json()["updatedAt"] > job["updatedAt"]
    gone = await http.get(url)
    assert gone.status_code == 404
    assert gone.headers["x-content-type-options"] == "nosniff"
    assert await objects_under(stack, "public", f"renders/{render_id}/") == []
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == []
    job_row, render = await rows(stack, job_id)
    assert job_row.deleted_at is not None
    assert job_row.inputs_removed_at is not None
    # Removed at once, recorded only when no applier that read the job in flight can
    # still store its copy: the prefix is listed once more then.
    assert job_row.files_removed_at is None
    assert job_row.files_look_again_at is not None
    assert job_row.files_look_again_at > stack.clock.now()
    assert render is not None
    assert render.deleted_at is not None

    again = await user.delete(job_id)

    assert again.status_code == 200, again.text
    assert again.json()["variants"] == []
    assert (await user.get(job_id)).json()["status"] == "succeeded"
    assert (await http.get(url)).status_code == 404
    await after_late_writers(stack)
    job_row, _ = await rows(stack, job_id)
    assert job_row.files_removed_at is not None
    assert await objects_under(stack, "public", f"renders/{render_id}/") == []


async def test_files_a_late_applier_stored_and_never_claimed_go_all_the_same(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    """An applier that read the job in flight stores its copy after the DELETE emptied
    the prefix, and its process dies before it claims the files (as in
    test_deletion_races, minus the claim: the files are written here as it would
    write them). The DELETE's removal must not have been the last look."""
    job = await finished_redesign(user)
    job_id, render_id = job["id"], render_id_of(job)
    url = job["variants"][0]["url"]
    assert (await user.delete(job_id)).status_code == 200
    prefix = f"renders/{render_id}/"
    assert await objects_under(stack, "public", prefix) == []
    for key in ("0.jpg", "0.thumb.jpg"):
        await stack.ctx.storage.put_bytes("public", f"{prefix}{key}", jpeg_bytes(), "image/jpeg")

    await sweep_deleted_files(stack.ctx)  # a late writer may still be at work: no look yet
    assert await objects_under(stack, "public", prefix) != []
    await after_late_writers(stack)

    assert await objects_under(stack, "public", prefix) == []
    assert (await http.get(url)).status_code == 404
    job_row, _ = await rows(stack, job_id)
    assert job_row.files_removed_at is not None


async def test_storage_down_at_delete_then_the_sweep_removes_the_files(
    stack: Stack, user: User, http: httpx.AsyncClient, s3_server: S3Endpoint
) -> None:
    job = await finished_redesign(user)
    job_id, render_id = job["id"], render_id_of(job)

    with storage_stopped(s3_server):
        deleted = await user.delete(job_id)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["variants"] == []
    # Storage is back, nothing was removed yet, and the database says what is due.
    assert await objects_under(stack, "public", f"renders/{render_id}/") != []
    assert await objects_under(stack, "private", f"{user.id}/inputs/") != []
    job_row, render = await rows(stack, job_id)
    assert job_row.inputs_removed_at is None
    assert job_row.files_due_at is not None
    assert job_row.files_removed_at is None
    assert render is not None
    assert render.deleted_at is not None

    counts = await sweep_once(stack.ctx)

    # The inputs (the render's prefix is recorded at the end of the late writers' time).
    assert counts["filesRemoved"] >= 1
    assert await objects_under(stack, "public", f"renders/{render_id}/") == []
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == []
    assert (await http.get(job["variants"][0]["url"])).status_code == 404
    await after_late_writers(stack)
    job_row, _ = await rows(stack, job_id)
    assert job_row.inputs_removed_at is not None
    assert job_row.files_removed_at is not None


async def test_deleting_a_failed_job_removes_its_inputs(stack: Stack, user: User) -> None:
    await stack.control("set_faults", fail_next=1)
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await user.wait_for(job_id, {"failed"})
    assert await objects_under(stack, "private", f"{user.id}/inputs/") != []

    deleted = await user.delete(job_id)

    assert deleted.status_code == 200, deleted.text
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == []
    job_row, _ = await rows(stack, job_id)
    assert job_row.inputs_removed_at is not None


async def test_an_input_another_job_still_names_is_kept(stack: Stack, user: User) -> None:
    first = await finished_redesign(user)
    second = await finished_redesign(user)
    first_row, _ = await rows(stack, first["id"])
    # Refine will let jobs share an input: make the second name the first's too.
    async with session_scope(stack.ctx.sessions) as session:
        row = await session.get(GenerationJob, uuid.UUID(second["id"]))
        assert row is not None
        row.input_keys = [*row.input_keys, *first_row.input_keys]
    [shared] = first_row.input_keys

    assert (await user.delete(first["id"])).status_code == 200

    remaining = await objects_under(stack, "private", f"{user.id}/inputs/")
    assert shared in remaining
    assert len(remaining) == 2  # the shared one and the second job's own
    assert (await user.delete(second["id"])).status_code == 200
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == []


async def test_many_instances_sweeping_the_same_deletion_agree(
    stack: Stack, user: User, s3_server: S3Endpoint
) -> None:
    job = await finished_redesign(user)
    job_id, render_id = job["id"], render_id_of(job)
    with storage_stopped(s3_server):
        assert (await user.delete(job_id)).status_code == 200

    # Past the time a late applier could still write, three instances' sweeps at once:
    # each removal is repeat-safe, each mark conditional.
    stack.clock.advance(LATE_WRITERS + timedelta(seconds=1))
    results = await asyncio.gather(*(sweep_deleted_files(stack.ctx) for _ in range(3)))

    assert sum(results) >= 1
    assert await objects_under(stack, "public", f"renders/{render_id}/") == []
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == []
    await after_late_writers(stack)
    job_row, _ = await rows(stack, job_id)
    assert job_row.files_removed_at is not None
    assert job_row.inputs_removed_at is not None


@asynccontextmanager
async def hanging_storage() -> AsyncIterator[ObjectStorage]:
    """A storage whose server accepts connections and never answers (a blackholed S3)."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = S3Settings.model_validate(
        {"S3_ENDPOINT": f"127.0.0.1:{port}", "S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "secret-key"}
    )
    try:
        yield ObjectStorage(settings)
    finally:
        # Dropping the connections ends the SDK's wait at once (no 15 s read timeout left).
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hanging_storage_does_not_hold_the_delete_past_its_bound(
    stack: Stack, user: User
) -> None:
    job = await finished_redesign(user)
    job_id, render_id = job["id"], render_id_of(job)

    async with hanging_storage() as storage:
        ctx = dataclasses.replace(stack.ctx, storage=storage)
        # The storage client's own read timeout is 15 s; the DELETE gives up long before.
        view = await asyncio.wait_for(
            delete_generation(ctx, user.id, uuid.UUID(job_id)), AT_ONCE_SECONDS + 5
        )

    assert view.variants == ()
    assert await objects_under(stack, "public", f"renders/{render_id}/") != []
    await sweep_deleted_files(stack.ctx)
    assert await objects_under(stack, "public", f"renders/{render_id}/") == []


async def test_the_delete_answer_carries_the_version_the_deletion_made(
    stack: Stack, user: User
) -> None:
    """An edge keeps the answer's version as a floor no older view may cross: the version
    read before the delete equals that of the view with variants, so it would let that
    view back in."""
    response = await user.submit("imagine", prompt="A study with a green desk lamp")
    job_id = uuid.UUID((await user.wait_for(response.json()["id"], {"succeeded"}))["id"])
    async with session_scope(stack.ctx.sessions) as session:
        before = await session.get(GenerationJob, job_id)
        assert before is not None
        version_before = before.version

    answer = await delete_generation(stack.ctx, user.id, job_id)

    async with session_scope(stack.ctx.sessions) as session:
        after = await session.get(GenerationJob, job_id)
        assert after is not None
        version_after = after.version
    assert version_after > version_before
    assert answer.version == version_after
    assert answer.variants == ()
