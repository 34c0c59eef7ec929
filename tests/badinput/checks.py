"""Assertions every bad-input case shares: a normalized 4xx, and nothing left behind."""

from __future__ import annotations

from typing import Any

import httpx

from testkit.stack import Stack
from tests.e2e.harness import User, job_count, objects_under


def assert_error(
    response: httpx.Response, statuses: int | set[int], code: str | None = None
) -> dict[str, Any]:
    """A 4xx in ``statuses`` with ``{"error": {"code", "message"}}`` and a request id."""
    allowed = {statuses} if isinstance(statuses, int) else statuses
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    assert 400 <= response.status_code < 500
    assert response.headers.get("x-request-id"), dict(response.headers)
    assert response.headers.get("content-type", "").startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("code"), str), body
    assert error["code"], body
    assert isinstance(error.get("message"), str), body
    assert error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return error


async def assert_nothing_left(stack: Stack, user: User) -> None:
    """No job row, no stored input, no generation used (so nothing charged)."""
    assert await job_count(stack, user.id) == 0
    assert await objects_under(stack, "private", f"{user.id}/") == []
    assert (await user.usage())["used"] == 0
