"""The gateway's request ids: always one of ours; a caller's only beside it, if sane."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog
from starlette.responses import PlainTextResponse

from webhook_gateway.middleware import RequestIdMiddleware


def _app(seen: list[dict[str, Any]]) -> RequestIdMiddleware:
    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        seen.append(structlog.contextvars.get_contextvars())
        await PlainTextResponse("ok")(scope, receive, send)

    return RequestIdMiddleware(endpoint)


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("msg_2fX.a-b", "msg_2fX.a-b"),
        ("has space", None),
        ("x" * 65, None),
        ('"}{"level":"fake"', None),
        (None, None),
    ],
)
async def test_our_id_is_bound_and_echoed_and_a_sane_callers_id_is_kept_beside_it(
    incoming: str | None, kept: str | None
) -> None:
    seen: list[dict[str, Any]] = []
    headers = {"x-request-id": incoming} if incoming is not None else {}
    transport = httpx.ASGITransport(app=_app(seen))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.post("/api/v1/webhooks/replicate", headers=headers)

    [bound] = seen
    ours = response.headers["x-request-id"]
    assert len(ours) == 32
    assert ours != incoming
    assert bound["requestId"] == ours
    assert bound.get("clientRequestId") == kept
    # Unbound afterwards: the next request in this task starts clean.
    assert "requestId" not in structlog.contextvars.get_contextvars()


async def test_an_unexpected_error_is_the_generic_500_with_our_id_and_not_raised_on() -> None:
    # Raised on, the server would log a traceback and drop the connection Envoy pooled
    # (the next delivery on it then failed with 503); answered outside this middleware,
    # the 500 would carry no request id.
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=RequestIdMiddleware(broken))  # raises what the app raises
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.post("/api/v1/webhooks/replicate")

    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "INTERNAL_ERROR", "message": "Something went wrong. Please try again."}
    }
    assert len(response.headers["x-request-id"]) == 32
    assert "a bug" not in response.text
