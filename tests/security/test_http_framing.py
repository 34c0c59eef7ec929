"""Requests Envoy or the services cannot take as they are, sent raw through the deployed
Envoy: each is a clear 4xx with the JSON error body, never a 5xx read as an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections import Counter

from testkit.envoy import Envoy


def _exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` (from a thread, so an early answer is read while it is still
    being written) and read until the connection closes."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send() -> None:
        with contextlib.suppress(OSError):
            connection.sendall(request)

    sender = threading.Thread(target=send)
    sender.start()
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    sender.join()
    connection.close()
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def _error_code(answer: bytes) -> str:
    body = json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")
    return str(body.get("error", {}).get("code"))


async def test_a_transfer_coding_envoy_cannot_frame_is_400_not_an_outage(envoy: Envoy) -> None:
    """Envoy's codec answers 501 for these; read as 'a backend is down' it was a 503."""
    for coding in (b"gzip, chunked", b"identity", b"foo"):
        request = (
            b"GET /api/v1/catalog HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Transfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n"
        )
        answer = await asyncio.to_thread(_exchange, envoy.port, request)
        assert (_status(answer), _error_code(answer)) == (400, "VALIDATION_ERROR"), answer[:300]


async def test_an_unsigned_webhook_with_a_large_body_is_always_401(envoy: Envoy) -> None:
    """The gateway refuses it from its headers; closing the connection with the body
    unread reset it under Envoy, still writing the body it buffered: a 503 at random."""
    body = b"a" * 800_000
    request = (
        b"POST /api/v1/webhooks/replicate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    seen: Counter[int] = Counter()
    for _ in range(30):
        seen[_status(await asyncio.to_thread(_exchange, envoy.port, request))] += 1
    assert dict(seen) == {401: 30}


async def test_an_escaped_slash_in_a_path_is_a_json_400(envoy: Envoy) -> None:
    """Unescaped by a redirect, it was a bare 307 without CORS or Cache-Control; ids never
    hold a slash, so it is refused (a JSON 400 a browser can read)."""
    for path in (b"/api/v1/generations%2Fabc", b"/api/v1/generations%5cabc"):
        request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = await asyncio.to_thread(_exchange, envoy.port, request)
        assert (_status(answer), _error_code(answer)) == (400, "VALIDATION_ERROR"), answer[:300]
        assert b"cache-control: no-store" in answer.lower()
