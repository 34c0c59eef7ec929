"""What end-to-end tests drive the in-process system with (testkit.stack builds it).

PostgreSQL and the S3 server are real child processes (session fixtures);
the usage and generation gRPC servers run in the test's event loop on real
ports; the edge, the webhook gateway and the Replicate emulator are served by
uvicorn in threads. Requests go over real HTTP and real gRPC.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from PIL import Image

from edge_api.settings import DEV_JWT_SECRET
from generation.domain.cleanup import LATE_WRITERS, sweep_deleted_files

# Re-exported: the e2e and badinput tests import Stack from here.
from testkit.plugin import S3Endpoint
from testkit.stack import Stack as Stack


def make_token(user_id: uuid.UUID, *, secret: str = DEV_JWT_SECRET, **overrides: Any) -> str:
    """A Supabase-style user token."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "aud": "authenticated",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "role": "authenticated",
    }
    claims.update(overrides)
    return jwt.encode(claims, secret, algorithm="HS256")


def jpeg_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (180, 120, 90)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class User:
    """One signed-in user talking to the edge over HTTP."""

    def __init__(self, stack: Stack, client: httpx.AsyncClient) -> None:
        self.id = uuid.uuid4()
        self.stack = stack
        self.client = client
        self.headers = {"Authorization": f"Bearer {make_token(self.id)}"}

    async def submit(
        self,
        mode: str,
        *,
        images: list[bytes] | None = None,
        key: str | None = None,
        **fields: str,
    ) -> httpx.Response:
        headers = dict(self.headers)
        if key:
            headers["Idempotency-Key"] = key
        if images is None:
            return await self.client.post(
                f"{self.stack.api}/generations", json={"mode": mode, **fields}, headers=headers
            )
        files = {
            f"input{i + 1}": (f"photo{i + 1}.jpg", data, "image/jpeg")
            for i, data in enumerate(images)
        }
        return await self.client.post(
            f"{self.stack.api}/generations",
            data={"mode": mode, **fields},
            files=files,
            headers=headers,
        )

    async def get(self, job_id: str) -> httpx.Response:
        return await self.client.get(f"{self.stack.api}/generations/{job_id}", headers=self.headers)

    async def cancel(self, job_id: str) -> httpx.Response:
        return await self.client.patch(
            f"{self.stack.api}/generations/{job_id}",
            json={"action": "cancel"},
            headers=self.headers,
        )

    async def delete(self, job_id: str) -> httpx.Response:
        return await self.client.delete(
            f"{self.stack.api}/generations/{job_id}", headers=self.headers
        )

    async def usage(self) -> dict[str, Any]:
        response = await self.client.get(f"{self.stack.api}/usage", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_for(
        self, job_id: str, statuses: set[str], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll GET until the job reaches one of ``statuses``."""
        return await wait_until(
            lambda: self.get(job_id),
            lambda body: body["status"] in statuses,
            timeout,
        )


async def wait_until(
    fetch: Callable[[], Awaitable[httpx.Response]],
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await fetch()
        assert response.status_code == 200, response.text
        body = response.json()
        if done(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last state {body}")


async def objects_under(stack: Stack, bucket: str, prefix: str) -> list[str]:
    """Object keys under ``prefix`` (through the real S3 API)."""
    client = stack.ctx.storage._client  # the test inspects storage as an operator would

    def _list() -> list[str]:
        return [
            item.object_name or "" for item in client.list_objects(bucket, prefix, recursive=True)
        ]

    return await asyncio.to_thread(_list)


async def after_late_writers(stack: Stack) -> None:
    """Move past the time in which an applier that read a job in flight may still store
    its copy (cleanup.LATE_WRITERS), and run the sweep's removal step: a render prefix
    emptied within that time is listed once more, and only then recorded as removed."""
    stack.clock.advance(LATE_WRITERS + timedelta(seconds=1))
    await sweep_deleted_files(stack.ctx)


async def job_count(stack: Stack, owner_id: uuid.UUID) -> int:
    from sqlalchemy import func, select

    from generation.persistence.models import GenerationJob
    from kit.db import session_scope

    async with session_scope(stack.ctx.sessions) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(GenerationJob)
            .where(GenerationJob.owner_id == owner_id)
        )
    return int(count or 0)


async def insert_failed_jobs(
    stack: Stack, owner_id: uuid.UUID, count: int, step: timedelta = timedelta(minutes=1)
) -> None:
    """``count`` jobs that ended failed without a charge (the ledger stays balanced),
    created ``step`` apart from 2026-01-01: a history to page through."""
    from generation.persistence.models import GenerationJob
    from kit.db import session_scope

    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        GenerationJob(
            id=uuid.uuid4(),
            owner_id=owner_id,
            request_fingerprint="f" * 64,
            mode="imagine",
            status="failed",
            charge_state="none",
            refund_state="none",
            created_at=start + step * i,
            updated_at=start,
        )
        for i in range(count)
    ]
    async with session_scope(stack.ctx.sessions) as session:
        session.add_all(rows)


def signed_base_url(s3: S3Endpoint) -> str:
    """The S3 server under the name callers use (the services use 127.0.0.1)."""
    return f"http://localhost:{s3.endpoint.rpartition(':')[2]}"
