"""POST /generations: streaming multipart, JSON, limits and idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from edge_api.errors import validation_message
from kit.runtime_config import RuntimeConfig

MAX_UPLOAD_BYTES = 64 * 1024  # the suite's runtime config (see conftest)
BOUNDARY = "edge-test-boundary-7f3a"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + bytes(reversed(range(256))) * 30


def _part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if filename:
        head += "Content-Type: application/octet-stream\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def multipart(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def _headers(identity, **extra: str) -> dict[str, str]:
    return {
        **identity.headers(),
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        **extra,
    }


async def test_multipart_submission_forwards_exact_bytes_and_fields(
    client: httpx.AsyncClient, backends, identity
) -> None:
    response = await client.post(
        "/api/v1/generations",
        headers={**identity.headers(), "Idempotency-Key": "key-1"},
        data={
            "mode": "compose",
            "prompt": "Warm oak, more light",
            "roomType": "bedroom",
            "style": "japandi",
        },
        files={"input1": ("room.jpg", JPEG, "image/jpeg"), "input2": ("ref.png", PNG, "image/png")},
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["Location"] == f"/api/v1/generations/{body['id']}"
    assert "Idempotent-Replayed" not in response.headers
    assert body["status"] == "starting"
    assert body["settings"] == {
        "mode": "compose",
        "roomType": "bedroom",
        "style": "japandi",
        "sourceGenerationId": None,
    }
    assert body["predictionId"].startswith("pred-")
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    sent = call.request
    assert sent.owner_id == identity.owner
    assert (sent.mode, sent.prompt, sent.room_type, sent.style) == (
        "compose",
        "Warm oak, more light",
        "bedroom",
        "japandi",
    )
    assert sent.idempotency_key == "key-1"
    declared = [(i.field, i.size_bytes) for i in sent.inputs]
    assert declared == [("input1", len(JPEG)), ("input2", len(PNG))]
    assert call.files == [("input1", JPEG), ("input2", PNG)]
    assert sent.request_base_url == "http://edge.test"


async def test_json_submission_sends_no_images(
    client: httpx.AsyncClient, backends, identity
) -> None:
    response = await client.post(
        "/api/v1/generations",
        headers=identity.headers(),
        json={"mode": "imagine", "prompt": "A sunny reading nook", "idempotencyKey": "json-1"},
    )

    assert response.status_code == 202, response.text
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.request.mode == "imagine"
    assert call.request.prompt == "A sunny reading nook"
    assert call.request.idempotency_key == "json-1"
    assert list(call.request.inputs) == []
    assert call.files == []


async def test_a_line_break_counts_once_toward_the_prompt_limit(
    client: httpx.AsyncClient, backends, identity, runtime_config: RuntimeConfig
) -> None:
    """A browser's textarea counts a line break once; its form sends it as CRLF."""
    half = runtime_config.prompts.max_length // 2
    prompt = "a" * (half - 1) + "\r\n" + "b" * (half - 1)  # max + 0 code points with CRLF
    assert len(prompt) == runtime_config.prompts.max_length
    at_the_limit = prompt + "c"
    body = multipart(_part("mode", b"imagine"), _part("prompt", at_the_limit.encode()))

    response = await client.post("/api/v1/generations", headers=_headers(identity), content=body)

    assert response.status_code == 202, response.text
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.request.prompt == at_the_limit


async def test_forwarded_base_url_reaches_the_generation_service(
    client: httpx.AsyncClient, backends, identity
) -> None:
    headers = {
        **identity.headers(),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com:8443",
    }

    response = await client.post("/api/v1/generations", headers=headers, json={"mode": "imagine"})

    assert response.status_code == 202
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.request.request_base_url == "https://app.example.com:8443"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
async def test_other_content_types_are_415(
    client: httpx.AsyncClient, backends, identity, content_type: str | None
) -> None:
    headers = identity.headers()
    if content_type:
        headers["Content-Type"] = content_type

    response = await client.post("/api/v1/generations", headers=headers, content=b"mode=imagine")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


MALFORMED = {
    "no boundary": (
        {"Content-Type": "multipart/form-data"},
        multipart(_part("mode", b"redesign")),
    ),
    "other boundary": (
        {"Content-Type": "multipart/form-data; boundary=something-else"},
        multipart(_part("mode", b"redesign")),
    ),
    "truncated": ({}, multipart(_part("mode", b"redesign"), close=False)),
    "cut inside a file": ({}, multipart(_part("input1", JPEG, "a.jpg"))[:200]),
    "no content-disposition": (
        {},
        f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nredesign\r\n--{BOUNDARY}--\r\n".encode(),
    ),
    "garbage": ({}, b"this is not multipart at all"),
    "empty": ({}, b""),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_multipart_is_400(
    client: httpx.AsyncClient, backends, identity, case: str
) -> None:
    extra, body = MALFORMED[case]

    response = await client.post(
        "/api/v1/generations", headers=_headers(identity, **extra), content=body
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


BAD_FORMS = {
    "unknown file field": multipart(_part("mode", b"redesign"), _part("input3", JPEG, "c.jpg")),
    "unknown text field": multipart(_part("mode", b"redesign"), _part("ownerId", b"x")),
    "duplicate field": multipart(_part("mode", b"redesign"), _part("mode", b"staging")),
    "duplicate file": multipart(
        _part("mode", b"redesign"), _part("input1", JPEG, "a.jpg"), _part("input1", PNG, "b.png")
    ),
    "empty file": multipart(_part("mode", b"redesign"), _part("input1", b"", "a.jpg")),
    "input2 without input1": multipart(_part("mode", b"compose"), _part("input2", PNG, "b.png")),
    "prompt too long": multipart(_part("mode", b"imagine"), _part("prompt", b"a" * 9000)),
    "prompt not UTF-8": multipart(_part("mode", b"imagine"), _part("prompt", b"\xff\xfe")),
    "no mode": multipart(_part("input1", JPEG, "a.jpg")),
    "unknown mode": multipart(_part("mode", b"paint"), _part("input1", JPEG, "a.jpg")),
    "too many parts": multipart(*[_part(f"f{i}", b"x") for i in range(40)]),
}


@pytest.mark.parametrize("case", list(BAD_FORMS))
async def test_bad_forms_are_400_and_forward_nothing(
    client: httpx.AsyncClient, backends, identity, case: str
) -> None:
    response = await client.post(
        "/api/v1/generations", headers=_headers(identity), content=BAD_FORMS[case]
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "imagine", "unknown": 1},
        {"mode": 3},
        {"prompt": "no mode"},
        {"mode": "imagine", "prompt": "x" * 9000},
        ["mode", "imagine"],
    ],
)
async def test_bad_json_bodies_are_400(
    client: httpx.AsyncClient, backends, identity, body: object
) -> None:
    response = await client.post("/api/v1/generations", headers=identity.headers(), json=body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


@pytest.mark.parametrize("key", ["k" * 60_000, "\u0000\u001b[31m", "mode\u202e", "ok-key"])
async def test_an_unknown_fields_name_is_never_echoed_unless_it_could_be_ours(
    client: httpx.AsyncClient, backends, identity, key: str
) -> None:
    body = {"mode": "imagine", "prompt": "a room", key: 1}
    response = await client.post("/api/v1/generations", headers=identity.headers(), json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert key not in error["message"]
    assert len(error["message"]) < 200
    assert backends.generation.recorder.calls == []


def test_a_named_field_is_still_named() -> None:
    errors = [{"loc": ("body", "source", "variantIdx"), "msg": "Input should be an integer"}]
    assert validation_message(errors) == "source.variantIdx: Input should be an integer"


async def test_a_file_over_the_limit_is_413_and_nothing_is_forwarded(
    client: httpx.AsyncClient, backends, identity
) -> None:
    body = multipart(
        _part("mode", b"redesign"), _part("input1", b"x" * (MAX_UPLOAD_BYTES + 1), "a")
    )

    response = await client.post("/api/v1/generations", headers=_headers(identity), content=body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


async def test_a_file_at_the_limit_is_accepted(
    client: httpx.AsyncClient, backends, identity
) -> None:
    data = b"y" * MAX_UPLOAD_BYTES
    body = multipart(_part("mode", b"redesign"), _part("input1", data, "a.jpg"))

    response = await client.post("/api/v1/generations", headers=_headers(identity), content=body)

    assert response.status_code == 202
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.files == [("input1", data)]


class EndlessUpload:
    """A multipart body whose file would be 100 MB; counts what was consumed."""

    CHUNK = 16 * 1024

    def __init__(self) -> None:
        self.consumed = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = (
            _part("mode", b"redesign")
            + (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="input1"; '
                'filename="big.jpg"\r\n\r\n'
            ).encode()
        )
        self.consumed += len(head)
        yield head
        for _ in range(100 * 1024 * 1024 // self.CHUNK):
            self.consumed += self.CHUNK
            yield b"z" * self.CHUNK


async def test_the_stream_is_cut_as_soon_as_a_file_is_too_large(
    client: httpx.AsyncClient, backends, identity
) -> None:
    upload = EndlessUpload()

    response = await client.post(
        "/api/v1/generations", headers=_headers(identity), content=upload.__aiter__()
    )

    assert response.status_code == 413
    # Reading stopped within a chunk of the limit, not after 100 MB.
    assert upload.consumed <= MAX_UPLOAD_BYTES + 2 * EndlessUpload.CHUNK
    assert backends.generation.recorder.calls == []


async def test_declared_content_length_over_the_cap_is_refused_unread(
    edge_clients, backends, identity
) -> None:
    client = await edge_clients.open(edge_clients.make_settings(MAX_REQUEST_BYTES=100_000))
    upload = EndlessUpload()

    response = await client.post(
        "/api/v1/generations",
        headers=_headers(identity, **{"Content-Length": str(100 * 1024 * 1024)}),
        content=upload.__aiter__(),
    )

    assert response.status_code == 413
    assert upload.consumed == 0


async def test_the_whole_body_is_capped_while_streaming(edge_clients, backends, identity) -> None:
    client = await edge_clients.open(edge_clients.make_settings(MAX_REQUEST_BYTES=100_000))
    half = b"h" * 60_000  # each file is under the per-file limit, both together are not
    body = multipart(
        _part("mode", b"compose"), _part("input1", half, "a"), _part("input2", half, "b")
    )

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await client.post(
        "/api/v1/generations", headers=_headers(identity), content=stream()
    )

    assert response.status_code == 413
    assert backends.generation.recorder.calls == []


async def test_idempotency_header_wins_and_replays_are_marked(
    client: httpx.AsyncClient, backends, identity
) -> None:
    headers = {**identity.headers(), "Idempotency-Key": "same-key"}
    first = await client.post("/api/v1/generations", headers=headers, json={"mode": "imagine"})
    second = await client.post(
        "/api/v1/generations",
        headers=headers,
        json={"mode": "imagine", "idempotencyKey": "same-key"},
    )

    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    keys = [call.request.idempotency_key for call in backends.generation.recorder.calls]
    assert keys == ["same-key", "same-key"]


@pytest.mark.parametrize("key", ["   ", " k", "k "])
async def test_a_key_of_spaces_or_with_spaces_around_it_is_400(
    client: httpx.AsyncClient, backends, identity, key: str
) -> None:
    """Generation trims keys: "   " would be no key (each retry a new job and debit) and
    " k " the key "k"; refused at once instead, in JSON and in multipart."""
    as_json = await client.post(
        "/api/v1/generations",
        headers=identity.headers(),
        json={"mode": "imagine", "prompt": "A sunny reading nook", "idempotencyKey": key},
    )
    body = multipart(
        _part("mode", b"redesign"),
        _part("idempotencyKey", key.encode()),
        _part("input1", JPEG, "a.jpg"),
    )
    as_form = await client.post("/api/v1/generations", headers=_headers(identity), content=body)

    for response in (as_json, as_form):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


async def test_two_idempotency_key_headers_are_refused(
    client: httpx.AsyncClient, backends, identity
) -> None:
    headers = [*identity.headers().items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]

    response = await client.post("/api/v1/generations", headers=headers, json={"mode": "imagine"})

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Send one Idempotency-Key header."
    assert backends.generation.recorder.calls == []


async def test_a_bad_idempotency_key_header_is_named_in_the_error(
    client: httpx.AsyncClient, backends, identity
) -> None:
    headers = {**identity.headers(), "Idempotency-Key": "k" * 201}

    response = await client.post("/api/v1/generations", headers=headers, json={"mode": "imagine"})

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("The Idempotency-Key header: ")


async def test_idempotency_field_in_multipart_is_forwarded(
    client: httpx.AsyncClient, backends, identity
) -> None:
    body = multipart(
        _part("mode", b"redesign"),
        _part("idempotencyKey", b"form-key"),
        _part("input1", JPEG, "a.jpg"),
    )

    response = await client.post("/api/v1/generations", headers=_headers(identity), content=body)

    assert response.status_code == 202
    (call,) = backends.generation.recorder.named("SubmitGeneration")
    assert call.request.idempotency_key == "form-key"


@pytest.mark.parametrize(
    ("header", "field"), [("header-key", "field-key"), ("k" * 201, None), ("\x7fbad", None)]
)
async def test_conflicting_or_bad_idempotency_keys_are_400(
    client: httpx.AsyncClient, backends, identity, header: str, field: str | None
) -> None:
    body: dict[str, str] = {"mode": "imagine"}
    if field:
        body["idempotencyKey"] = field

    response = await client.post(
        "/api/v1/generations",
        headers={**identity.headers(), "Idempotency-Key": header},
        json=body,
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.calls == []


async def test_a_too_slow_upload_is_cut_off(edge_clients, backends, identity) -> None:
    client = await edge_clients.open(edge_clients.make_settings(UPLOAD_READ_TIMEOUT_SECONDS=0.3))

    async def trickle() -> AsyncIterator[bytes]:
        yield _part("mode", b"redesign")
        await asyncio.sleep(5)
        yield multipart()

    response = await client.post(
        "/api/v1/generations", headers=_headers(identity), content=trickle()
    )

    assert response.status_code == 408
    assert response.json()["error"] == {
        "code": "REQUEST_TIMEOUT",
        "message": "The upload took too long.",
    }
    assert response.headers["Connection"] == "close"
    assert backends.generation.recorder.calls == []


async def test_concurrent_submissions_are_bounded(edge_clients, backends, identity) -> None:
    client = await edge_clients.open(edge_clients.make_settings(MAX_CONCURRENT_SUBMISSIONS=1))
    release = asyncio.Event()

    async def held_upload() -> AsyncIterator[bytes]:
        yield _part("mode", b"redesign") + _part("input1", JPEG, "a.jpg")
        await release.wait()
        yield multipart()

    first = asyncio.create_task(
        client.post("/api/v1/generations", headers=_headers(identity), content=held_upload())
    )
    await asyncio.sleep(0.1)
    second = asyncio.create_task(
        client.post("/api/v1/generations", headers=identity.headers(), json={"mode": "imagine"})
    )
    await asyncio.sleep(0.3)
    assert not second.done()  # waiting for the only slot
    assert backends.generation.recorder.calls == []

    release.set()
    responses = await asyncio.gather(first, second)

    assert [r.status_code for r in responses] == [202, 202]
    modes = [call.request.mode for call in backends.generation.recorder.calls]
    assert modes == ["redesign", "imagine"]
