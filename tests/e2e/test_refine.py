"""Refine: an earlier result of the caller's becomes input1 of a new submission."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from generation.persistence.models import GenerationJob
from kit.db import session_scope
from tests.e2e.harness import Stack, User, job_count, jpeg_bytes, objects_under


async def _finished(user: User, **fields: Any) -> dict[str, Any]:
    response = await user.submit("redesign", images=[jpeg_bytes()], **fields)
    assert response.status_code == 202, response.text
    return await user.wait_for(response.json()["id"], {"succeeded"})


async def _refine(user: User, source: dict[str, Any], **fields: Any) -> httpx.Response:
    return await user.client.post(
        f"{user.stack.api}/generations",
        json={"mode": "redesign", "source": source, **fields},
        headers=user.headers,
    )


async def _row(stack: Stack, job_id: str) -> GenerationJob:
    async with session_scope(stack.ctx.sessions) as session:
        row = await session.scalar(
            select(GenerationJob).where(GenerationJob.id == uuid.UUID(job_id))
        )
    assert row is not None
    return row


async def test_a_result_is_refined_with_a_new_prompt(stack: Stack, user: User) -> None:
    first = await _finished(user, style="japandi")

    response = await _refine(
        user, {"generationId": first["id"], "variantIdx": 0}, prompt="Now make the sofa green"
    )

    assert response.status_code == 202, response.text
    refined = await user.wait_for(response.json()["id"], {"succeeded"})
    assert refined["settings"]["sourceGenerationId"] == first["id"]
    assert first["settings"]["sourceGenerationId"] is None
    assert len(refined["inputs"]) == 1
    row, source_row = await _row(stack, refined["id"]), await _row(stack, first["id"])
    # The variant was copied into the caller's own inputs: a key of the new job alone.
    assert row.input_keys[0].startswith(f"{user.id}/inputs/")
    assert row.input_keys[0] not in source_row.input_keys
    assert (row.source_job_id, row.source_variant_idx) == (uuid.UUID(first["id"]), 0)
    # What the model was sent is kept for support, and never answered.
    assert row.composed_prompt is not None
    assert row.composed_prompt.endswith("Now make the sofa green.")
    assert "Now make the sofa green" not in response.text


async def _compose_refine(stack: Stack, user: User, source_id: str, field: str) -> httpx.Response:
    """A compose refine of ``source_id``'s first variant, one image uploaded as ``field``."""
    return await user.client.post(
        f"{stack.api}/generations",
        data={"mode": "compose", "sourceGenerationId": source_id, "sourceVariantIdx": "0"},
        files={field: ("reference.jpg", jpeg_bytes(40, 40, (1, 2, 3)), "image/jpeg")},
        headers=user.headers,
    )


async def test_compose_refines_with_an_uploaded_reference(stack: Stack, user: User) -> None:
    first = await _finished(user)

    response = await _compose_refine(stack, user, first["id"], "input2")

    assert response.status_code == 202, response.text
    refined = await user.wait_for(response.json()["id"], {"succeeded"})
    assert [item["idx"] for item in refined["inputs"]] == [0, 1]


async def test_a_refine_upload_under_the_sources_name_is_refused(stack: Stack, user: User) -> None:
    """The source is input1: a compose refine that uploads input1 (not the reference,
    input2) is a 400 saying so, not a reference taken by its position."""
    first = await _finished(user)

    response = await _compose_refine(stack, user, first["id"], "input1")

    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == "Send input1 or sourceGenerationId, not both."


async def test_someone_elses_or_a_gone_source_is_not_found(
    stack: Stack, user: User, other_user: User
) -> None:
    mine = await _finished(user)
    theirs = await _finished(other_user)
    deleted = await _finished(user)
    assert (await user.delete(deleted["id"])).status_code == 200

    for source in (
        {"generationId": theirs["id"]},
        {"generationId": deleted["id"]},
        {"generationId": mine["id"], "variantIdx": 7},
        {"generationId": str(uuid.uuid4())},
        {"generationId": "not-a-uuid"},
    ):
        response = await _refine(user, source, prompt="Brighter")
        assert response.status_code == 404, (source, response.text)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert (await user.usage())["used"] == 2  # nothing charged for the refusals


async def test_an_upload_stored_before_a_missing_source_is_found_is_removed(
    stack: Stack, user: User
) -> None:
    # input2 is stored as soon as it is cleaned; the source is copied after it.
    await _finished(user)
    inputs_before = await objects_under(stack, "private", f"{user.id}/inputs/")
    response = await user.client.post(
        f"{stack.api}/generations",
        data={"mode": "compose", "sourceGenerationId": str(uuid.uuid4()), "sourceVariantIdx": "0"},
        files={"input2": ("reference.jpg", jpeg_bytes(40, 40, (1, 2, 3)), "image/jpeg")},
        headers=user.headers,
    )
    assert response.status_code == 404, response.text
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == inputs_before


async def test_a_source_deleted_while_it_is_copied_is_not_found(
    stack: Stack, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DELETE commits between the refine's read of its source and the copy, before
    the render's files are removed: the copy succeeds, but a deleted render is not
    refined. The copy is taken back and nothing is charged."""
    source = await _finished(user)
    inputs_before = await objects_under(stack, "private", f"{user.id}/inputs/")
    storage = stack.ctx.storage
    real_copy = storage.copy

    async def copy_after_a_delete(*args: Any, **kwargs: Any) -> bool:
        job_id, now = uuid.UUID(source["id"]), stack.ctx.clock.now()
        async with stack.ctx.transactions() as tx:  # the DELETE's commit, files not yet gone
            assert await tx.removals.mark_deleted(job_id, now)
            assert await tx.renders.soft_delete(job_id, now)
        return bool(await real_copy(*args, **kwargs))

    monkeypatch.setattr(storage, "copy", copy_after_a_delete)
    response = await _refine(user, {"generationId": source["id"]}, prompt="Brighter")
    monkeypatch.undo()

    assert response.status_code == 404, response.text
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == inputs_before
    assert (await user.usage())["used"] == 1


async def test_refine_keeps_the_usual_rules(stack: Stack, user: User) -> None:
    first = await _finished(user)
    source = {"generationId": first["id"]}

    imagine = await user.client.post(
        f"{stack.api}/generations",
        json={"mode": "imagine", "prompt": "A loft", "source": source},
        headers=user.headers,
    )
    both = await user.client.post(
        f"{stack.api}/generations",
        json={"mode": "redesign", "source": source, "sourceGenerationId": first["id"]},
        headers=user.headers,
    )
    once = await _refine(user, source, prompt="Warmer light", idempotencyKey="refine-key-1")
    again = await _refine(user, source, prompt="Warmer light", idempotencyKey="refine-key-1")
    other = await _refine(
        user,
        {"generationId": first["id"], "variantIdx": 0},
        prompt="Cooler",
        idempotencyKey="refine-key-1",
    )

    assert imagine.status_code == 400  # imagine takes no image, a refined one included
    assert both.status_code == 400
    assert once.status_code == again.status_code == 202
    assert again.json()["id"] == once.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    await user.wait_for(once.json()["id"], {"succeeded"})
    assert (await user.usage())["used"] == 2


async def test_a_variant_index_in_json_must_be_a_number(stack: Stack, user: User) -> None:
    """JSON carries types: ``true`` is no index (read as 1 it was a misleading 404), nor
    are ``"0"`` or ``0.0`` (read as 0 they made a charged job); nothing is created."""
    first = await _finished(user)
    for index in (True, False, "0", " 0", 0.0, None):
        response = await _refine(
            user, {"generationId": first["id"], "variantIdx": index}, prompt="Warmer"
        )
        assert response.status_code == 400, (index, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    flat = await user.client.post(
        f"{stack.api}/generations",
        json={"mode": "redesign", "sourceGenerationId": first["id"], "sourceVariantIdx": "0"},
        headers=user.headers,
    )
    assert flat.status_code == 400, flat.text
    assert (await user.usage())["used"] == 1


async def test_a_malformed_source_is_judged_after_the_fields_and_the_slot(
    stack: Stack, user: User
) -> None:
    """A source id that cannot name a job is not found where a missing one is (step 4),
    so a bad field (step 2) or a job in flight (step 3) is still answered first."""
    for source in ({"generationId": "x"}, {"generationId": str(uuid.uuid4())}):
        bad_style = await _refine(user, source, prompt="Brighter", style="bogus")
        assert bad_style.status_code == 400, (source, bad_style.text)

    await stack.control("set_faults", hold=True)
    running = await user.submit("imagine", prompt="A reading corner by the window")
    assert running.status_code == 202, running.text
    for source in ({"generationId": "x"}, {"generationId": str(uuid.uuid4())}):
        busy = await _refine(user, source, prompt="Brighter")
        assert busy.status_code == 409, (source, busy.text)
        assert busy.json()["error"]["code"] == "TOO_MANY_INFLIGHT"


@pytest.mark.parametrize("idx", ["0.0", "+0", " 0", "0 ", "0_0", "\uff10"])
async def test_a_multipart_variant_index_in_another_spelling_is_refused(
    stack: Stack, user: User, idx: str
) -> None:
    """JSON refuses ``"0"`` and ``0.0`` as an index; a multipart field is text, which
    pydantic's lax mode read as 0 (``" 1"`` as 1, ``"1_0"`` as 10): a charged job."""
    source = await _finished(user)
    inputs_before = await objects_under(stack, "private", f"{user.id}/inputs/")

    response = await user.client.post(
        f"{stack.api}/generations",
        files={
            "mode": (None, "redesign"),
            "sourceGenerationId": (None, source["id"]),
            "sourceVariantIdx": (None, idx),
        },
        headers=user.headers,
    )
    if response.status_code == 202:  # let the stray job end, so the books still balance
        await user.wait_for(response.json()["id"], {"succeeded", "failed"})

    assert response.status_code == 400, (idx, response.text)
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await job_count(stack, user.id) == 1
    assert (await user.usage())["used"] == 1
    assert await objects_under(stack, "private", f"{user.id}/inputs/") == inputs_before
