"""Fair uploads over real HTTP: slow clients cannot starve others, and nothing leaks.

Each edge runs under uvicorn in a thread with the real gRPC stand-in backends.
Slow uploads are raw sockets that declare a long body and send only part of it,
so the edge really is waiting on the network; they end by disconnecting. After
every case the per-user counts and the global slots are back to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import httpx
import pytest

from edge_api import uploads
from edge_api.app import create_app
from edge_api.state import EdgeState
from kit.runtime_config import Uploads
from testkit.recording import record_results
from testkit.servers import ThreadedUvicorn

BOUNDARY = "fair-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
DECLARED = 1024 * 1024  # what a held upload promises and never finishes sending


def _head_of_file() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="mode"\r\n\r\nredesign\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="input1"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


def _whole_form(data: bytes) -> bytes:
    return _head_of_file() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class RawUpload:
    """An upload over a raw socket: a head declaring ``length`` bytes, then what we send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def start(
        cls,
        edge: Edge,
        owner: str,
        first: bytes,
        length: int = DECLARED,
        content_type: str = CONTENT_TYPE,
    ) -> RawUpload:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        head = (
            f"POST /api/v1/generations HTTP/1.1\r\nHost: edge\r\n"
            f"Authorization: Bearer {edge.token(owner)}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
        writer.write(head + first)
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 15.0) -> Answer:
        async with asyncio.timeout(timeout):
            raw = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = raw.decode("latin-1").strip().split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines)
            }
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(int(status_line.split()[1]), headers, json.loads(body))

    async def disconnect(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):  # the edge may have hung up first
            await self.writer.wait_closed()


@dataclass
class Edge:
    server: ThreadedUvicorn
    state: EdgeState
    token: Callable[[str], str]

    @property
    def port(self) -> int:
        return self.server.port

    def counts(self) -> tuple[dict[str, int], int]:
        return self.state.uploads.uploads_by_user(), self.state.uploads.slots_in_use()

    async def until_counts(self, users: dict[str, int], slots: int, timeout: float = 10) -> None:
        """Poll (the server runs in another thread) until the counts are exactly these."""
        try:
            async with asyncio.timeout(timeout):
                while self.counts() != (users, slots):
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"counts {self.counts()} != {(users, slots)}") from None


@pytest.fixture
def serve(make_settings, runtime_config, identity) -> Iterator[Callable[..., Edge]]:
    """Start edges with setting overrides; every one must end with no upload counted."""
    started: list[Edge] = []
    config = runtime_config.model_copy(update={"uploads": Uploads(max_bytes=MAX_UPLOAD_BYTES)})

    def start(**overrides: Any) -> Edge:
        app = create_app(make_settings(**overrides), config)
        server = ThreadedUvicorn(app, name="fair-edge").start()
        edge = Edge(server, app.state.edge, identity.token)
        started.append(edge)
        return edge

    yield start
    for edge in started:
        edge.server.stop()
        assert edge.counts() == ({}, 0), "an upload count leaked"


def _user() -> str:
    return str(uuid.uuid4())


async def _post_whole(edge: Edge, owner: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=edge.server.base_url, trust_env=False) as client:
        return await client.post(
            "/api/v1/generations",
            content=_whole_form(b"j" * 5000),
            headers={"Authorization": f"Bearer {edge.token(owner)}", "Content-Type": CONTENT_TYPE},
            timeout=15,
        )


async def _hold(edge: Edge, owners: list[str]) -> list[RawUpload]:
    """One held upload per entry of ``owners``, each admitted before the next starts."""
    held: list[RawUpload] = []
    for owner in owners:
        expected = edge.counts()[0].get(owner, 0) + 1
        held.append(await RawUpload.start(edge, owner, _head_of_file() + b"x" * 1000))
        deadline = asyncio.get_running_loop().time() + 10
        while edge.counts()[0].get(owner, 0) < expected:
            assert asyncio.get_running_loop().time() < deadline, "upload never admitted"
            await asyncio.sleep(0.01)
    return held


def _assert_429(answer: Answer, retry_after: str, message_part: str) -> None:
    assert answer.status == 429
    assert answer.headers["retry-after"] == retry_after
    assert answer.headers["content-type"] == "application/json"
    assert answer.body["error"]["code"] == "TOO_MANY_REQUESTS"
    assert message_part in answer.body["error"]["message"]


async def test_a_third_upload_of_one_user_is_refused_at_once_while_others_go_through(
    serve: Callable[..., Edge], backends
) -> None:
    # A long slot wait: the third upload is answered only because the per-user
    # limit refuses it before it would ever queue or read its body.
    edge = serve(UPLOAD_SLOT_WAIT_SECONDS=60, UPLOAD_RETRY_AFTER_SECONDS=4)
    user, other = _user(), _user()
    held = await _hold(edge, [user, user])

    third = await RawUpload.start(edge, user, _head_of_file() + b"x" * 1000)
    refused = await third.answer()
    accepted = await _post_whole(edge, other)

    _assert_429(refused, "4", "in progress")
    assert accepted.status_code == 202, accepted.text
    assert [c.request.owner_id for c in backends.generation.recorder.calls] == [other]
    await edge.until_counts({user: 2}, 2)  # the two slow ones still hold theirs
    for upload in [*held, third]:
        await upload.disconnect()
    await edge.until_counts({}, 0)


async def test_nine_slow_uploads_of_five_users_leave_the_api_to_a_tenth_user(
    serve: Callable[..., Edge],
) -> None:
    edge = serve(UPLOAD_SLOT_WAIT_SECONDS=0.2, UPLOAD_RETRY_AFTER_SECONDS=2)
    users = [_user() for _ in range(5)]
    owners = [owner for owner in users[:4] for _ in range(2)]
    held = await _hold(edge, owners)  # 8 uploads, every slot
    ninth = await RawUpload.start(edge, users[4], _head_of_file() + b"x" * 1000)
    tenth = _user()

    async with httpx.AsyncClient(base_url=edge.server.base_url, trust_env=False) as client:
        usage = await client.get(
            "/api/v1/usage", headers={"Authorization": f"Bearer {edge.token(tenth)}"}, timeout=15
        )
    busy = await ninth.answer()

    assert usage.status_code == 200, usage.text
    assert usage.json()["remaining"] == 7
    _assert_429(busy, "2", "busy")  # no slot came free within the short wait
    await edge.until_counts({owner: 2 for owner in users[:4]}, 8)
    for upload in [*held, ninth]:
        await upload.disconnect()
    await edge.until_counts({}, 0)
    # The slots really came back: the refused user's upload now goes through.
    assert (await _post_whole(edge, users[4])).status_code == 202


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[IO[bytes]]:
    """Every spool the edge creates during the test."""
    return record_results(monkeypatch, uploads, "_new_spool")


@pytest.mark.parametrize("client_kind", ["trickles", "stalls"])
async def test_a_too_slow_body_gets_408_its_spool_deleted_and_its_slot_back_at_once(
    serve: Callable[..., Edge], backends, spools: list[IO[bytes]], client_kind: str
) -> None:
    edge = serve(UPLOAD_MIN_BYTES_PER_SECOND=64 * 1024, UPLOAD_RATE_WINDOW_SECONDS=1.0)
    user = _user()
    # A fast start past the spool's memory part (the file is on disk), then too little.
    upload = await RawUpload.start(edge, user, _head_of_file() + b"x" * 1_200_000, 1_900_000)
    trickle = asyncio.create_task(_trickle(upload, enabled=client_kind == "trickles"))
    try:
        answer = await upload.answer()
    finally:
        trickle.cancel()
        await asyncio.gather(trickle, return_exceptions=True)

    assert answer.status == 408
    assert answer.body["error"] == {
        "code": "REQUEST_TIMEOUT",
        "message": "The upload was too slow.",
    }
    assert answer.headers["connection"] == "close"
    # Released before the answer was written, not at some later clean-up.
    assert edge.counts() == ({}, 0)
    assert len(spools) == 1
    # _rolled is private to SpooledTemporaryFile, so typeshed leaves it out.
    assert spools[0]._rolled  # type: ignore[attr-defined]  # it had gone to disk
    assert spools[0].closed
    assert backends.generation.recorder.calls == []
    await upload.disconnect()


async def _trickle(upload: RawUpload, *, enabled: bool, piece: bytes = b"y" * 100) -> None:
    """A piece every 50 ms (2 KB/s by default), until the edge hangs up."""
    while enabled:
        try:
            await upload.send(piece)
        except ConnectionError:
            return
        await asyncio.sleep(0.05)  # the client's pace is what is being tested


async def test_a_trickled_json_submission_gets_408_and_its_slot_back(
    serve: Callable[..., Edge], backends
) -> None:
    # JSON bodies hold a slot too: the same minimum rate applies.
    edge = serve(UPLOAD_MIN_BYTES_PER_SECOND=1024, UPLOAD_RATE_WINDOW_SECONDS=0.5)
    first = b'{"mode": "imagine", "prompt": "'
    upload = await RawUpload.start(edge, _user(), first, 4000, "application/json")
    trickle = asyncio.create_task(_trickle(upload, enabled=True, piece=b"a"))
    try:
        answer = await upload.answer()
    finally:
        trickle.cancel()
        await asyncio.gather(trickle, return_exceptions=True)

    assert answer.status == 408
    assert answer.body["error"]["code"] == "REQUEST_TIMEOUT"
    assert edge.counts() == ({}, 0)
    assert backends.generation.recorder.calls == []
    await upload.disconnect()


async def test_an_upload_at_a_healthy_rate_is_not_cut_off(
    serve: Callable[..., Edge], backends
) -> None:
    edge = serve(UPLOAD_MIN_BYTES_PER_SECOND=16 * 1024, UPLOAD_RATE_WINDOW_SECONDS=0.5)
    data = b"k" * 150_000
    form = _whole_form(data)
    upload = await RawUpload.start(edge, _user(), b"", len(form))
    for start in range(0, len(form), 20_000):  # ~200 KB/s over about 0.8 s: past the grace
        await upload.send(form[start : start + 20_000])
        await asyncio.sleep(0.1)

    answer = await upload.answer()

    assert answer.status == 202, answer.body
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.files == [("input1", data)]
    await upload.disconnect()
    await edge.until_counts({}, 0)
