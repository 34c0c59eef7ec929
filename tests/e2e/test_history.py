"""GET /api/v1/generations: the caller's history in keyset pages, through the real stack."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from generation.persistence.models import GenerationJob
from kit.db import session_scope
from tests.e2e.harness import Stack, User, jpeg_bytes

# Rows written straight into generation's database: ended without a charge, so the
# ledger audit has nothing to say about them.
_BASE = datetime(2026, 1, 1, tzinfo=UTC)


async def _insert_jobs(
    stack: Stack, owner: uuid.UUID, count: int, *, status: str = "failed", start: int = 0
) -> list[GenerationJob]:
    rows = [
        GenerationJob(
            id=uuid.uuid4(),
            owner_id=owner,
            request_fingerprint="f" * 64,
            mode="imagine",
            status=status,
            charge_state="none",
            refund_state="none",
            # Pairs share a creation time: the id breaks the tie.
            created_at=_BASE + timedelta(seconds=(start + i) // 2),
            updated_at=_BASE,
        )
        for i in range(count)
    ]
    async with session_scope(stack.ctx.sessions) as session:
        session.add_all(rows)
    return rows


def _newest_first(rows: list[GenerationJob]) -> list[str]:
    return [str(r.id) for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]


async def _page(user: User, **params: Any) -> httpx.Response:
    return await user.client.get(
        f"{user.stack.api}/generations", params=params, headers=user.headers
    )


async def _all_pages(user: User, limit: int, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        response = await _page(
            user, limit=limit, **params, **({"cursor": cursor} if cursor else {})
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        ids += [item["id"] for item in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            return ids


async def test_pages_are_newest_first_and_complete(stack: Stack, user: User) -> None:
    rows = await _insert_jobs(stack, user.id, 23)

    assert await _all_pages(user, 5) == _newest_first(rows)
    assert await _all_pages(user, 100) == _newest_first(rows)


async def test_head_answers_as_get_without_the_body(stack: Stack, user: User) -> None:
    await _insert_jobs(stack, user.id, 3)
    get = await _page(user, limit=2)
    head = await user.client.head(
        f"{stack.api}/generations", params={"limit": 2}, headers=user.headers
    )

    assert (get.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


async def test_jobs_added_while_paging_never_make_a_page_skip_or_repeat(
    stack: Stack, user: User
) -> None:
    rows = await _insert_jobs(stack, user.id, 30)
    first = (await _page(user, limit=7)).json()
    seen = [item["id"] for item in first["items"]]
    cursor = first["nextCursor"]
    while cursor is not None:
        # Newer jobs arrive between every page, several at once.
        await asyncio.gather(
            *(_insert_jobs(stack, user.id, 2, start=1000 + i * 10) for i in range(3))
        )
        body = (await _page(user, limit=7, cursor=cursor)).json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["nextCursor"]

    assert seen == _newest_first(rows)


async def test_the_status_filter_and_its_cursor(stack: Stack, user: User) -> None:
    failed = await _insert_jobs(stack, user.id, 6, status="failed")
    canceled = await _insert_jobs(stack, user.id, 5, status="canceled", start=100)

    assert await _all_pages(user, 2, status="failed") == _newest_first(failed)
    assert await _all_pages(user, 2, status="canceled") == _newest_first(canceled)
    cursor = (await _page(user, limit=2, status="failed")).json()["nextCursor"]
    mixed = await _page(user, limit=2, status="canceled", cursor=cursor)
    unfiltered = await _page(user, limit=2, cursor=cursor)
    assert mixed.status_code == unfiltered.status_code == 400


async def test_another_users_jobs_and_cursors_are_not_this_users(
    stack: Stack, user: User, other_user: User
) -> None:
    mine = await _insert_jobs(stack, user.id, 4)
    await _insert_jobs(stack, other_user.id, 4)
    theirs = (await _page(other_user, limit=2)).json()["nextCursor"]

    assert await _all_pages(user, 3) == _newest_first(mine)
    foreign = await _page(user, limit=2, cursor=theirs)
    assert foreign.status_code == 400
    assert foreign.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_bad_parameters_are_400(stack: Stack, user: User) -> None:
    await _insert_jobs(stack, user.id, 3)
    cursor = (await _page(user, limit=1)).json()["nextCursor"]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    flipped = base64.urlsafe_b64encode(raw.replace(b"|", b"|9", 1)).decode().rstrip("=")
    # Moved to another position and re-signed as a plain hash, which anyone can compute.
    version, micros, job_hex, status, _ = raw.decode().split("|")
    payload = f"{version}|{int(micros) + 10**15}|{job_hex}|{status}"
    digest = hashlib.sha256(f"{user.id}|{payload}".encode()).hexdigest()[:32]
    re_signed = base64.urlsafe_b64encode(f"{payload}|{digest}".encode()).decode().rstrip("=")

    for params in (
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        # Numbers pydantic would read, but no page size: "5_0" would be fifty.
        {"limit": "5_0"},
        {"limit": "+5"},
        {"limit": " 5"},
        {"limit": "5.0"},
        {"limit": "\uff15"},  # a full-width digit
        {"limt": "5"},  # a misspelt parameter would page on as if it were absent
        {"status": "done"},
        {"cursor": "not-a-cursor"},
        {"cursor": flipped},
        {"cursor": re_signed},
        {"cursor": cursor[:-2]},
        {"cursor": cursor + "!!!"},  # characters a lax base64 decoder skips
        {"cursor": cursor[:10] + "." + cursor[10:]},
        {"cursor": cursor + "=="},
        {"cursor": "x" * 600},
        # Never issued (the last page's is null): read as no cursor, it was page one
        # again, for ever, for a client that sends null as "".
        {"cursor": ""},
        # Repeated: only the last would count, and an earlier bad value go unchecked.
        {"status": ["succeeded", "failed"]},
        {"status": ["bogus", "succeeded"]},
        {"limit": ["500", "5"]},
        {"cursor": [cursor, cursor]},
    ):
        response = await _page(user, **params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (await _page(user)).status_code == 200


def _unsigned(job: dict[str, Any]) -> dict[str, Any]:
    """The job JSON with its input links cut at their query (the signature)."""
    inputs = [{**item, "url": item["url"].split("?", 1)[0]} for item in job["inputs"]]
    return {**job, "inputs": inputs}


async def test_items_are_the_job_json_with_variants(stack: Stack, user: User) -> None:
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    job = await user.wait_for(response.json()["id"], {"succeeded"})

    listed = (await _page(user, limit=1)).json()["items"][0]
    # The input links are signed when read (X-Amz-Date to the second): two reads a
    # second apart differ in their signature only.
    assert _unsigned(listed) == _unsigned(job)
    assert listed["variants"]
    assert (await user.delete(job["id"])).status_code == 200
    after = (await _page(user, limit=1)).json()["items"][0]
    assert after["id"] == job["id"]
    assert after["variants"] == []


async def test_an_empty_history_and_no_token(stack: Stack, user: User) -> None:
    empty = await _page(user)
    anonymous = await user.client.get(f"{stack.api}/generations")

    assert empty.status_code == 200
    assert empty.json() == {"items": [], "nextCursor": None}
    assert empty.headers["cache-control"] == "no-store"
    assert anonymous.status_code == 401
