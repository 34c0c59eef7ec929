"""Bad JSON, bad ids, odd prompts and oversized headers: a clear 4xx, never a 5xx."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.badinput.checks import assert_error, assert_nothing_left
from tests.e2e.harness import Stack, User

JSON = {"Content-Type": "application/json"}

BAD_JSON: dict[str, bytes] = {
    "not_json": b"mode=imagine",
    "truncated": b'{"mode": "imagine", "prompt": "a sunny ro',
    "trailing_garbage": b'{"mode": "imagine", "prompt": "a sunny room"} x',
    "single_quotes": b"{'mode': 'imagine'}",
    "bad_utf8": b'{"mode": "imagine", "prompt": "\xff\xfe a room"}',
    "nan": b'{"mode": "imagine", "prompt": NaN}',
    "empty": b"",
    "null": b"null",
    "array": b'[{"mode": "imagine", "prompt": "a sunny room"}]',
    "string": b'"imagine"',
    "number": b"12",
    "mode_number": b'{"mode": 5, "prompt": "a sunny room"}',
    "mode_null": b'{"mode": null, "prompt": "a sunny room"}',
    "mode_list": b'{"mode": ["imagine"], "prompt": "a sunny room"}',
    "prompt_object": b'{"mode": "imagine", "prompt": {"text": "a sunny room"}}',
    "prompt_number": b'{"mode": "imagine", "prompt": 1e999}',
    "huge_integer": b'{"mode": "imagine", "prompt": ' + b"9" * 5000 + b"}",
    "unknown_key": b'{"mode": "imagine", "prompt": "a sunny room", "ownerId": "x"}',
    "snake_case_key": b'{"mode": "imagine", "prompt": "a sunny room", "room_type": "bedroom"}',
    "duplicate_keys_bad_last": b'{"mode": "imagine", "mode": "sculpt", "prompt": "a sunny room"}',
    "deeply_nested": b'{"mode": "imagine", "prompt": ' + b"[" * 30000 + b"]" * 30000 + b"}",
    "nested_arrays_only": b"[" * 60000,
    "too_large": b'{"mode": "imagine", "prompt": "' + b"a" * (70 * 1024) + b'"}',
    "lone_surrogate": b'{"mode": "imagine", "prompt": "a sunny room \\ud800 with light"}',
    "nul_escape_in_style": b'{"mode": "imagine", "prompt": "a sunny room", "style": "\\u0000"}',
    "images_in_json": b'{"mode": "redesign", "input1": "/9j/4AAQSkZJRg=="}',
    "idempotency_key_object": b'{"mode": "imagine", "prompt": "a room", "idempotencyKey": {}}',
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
async def test_bad_json_submissions_are_4xx(stack: Stack, user: User, case: str) -> None:
    response = await user.client.post(
        f"{stack.api}/generations", content=BAD_JSON[case], headers={**user.headers, **JSON}
    )
    assert_error(response, {400, 413}, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'"cancel"',
        b'{"action": "delete"}',
        b'{"action": null}',
        b'{"action": "cancel", "force": true}',
        b'{"action": ["cancel"]}',
        b"{" * 40000,
    ],
)
async def test_bad_cancel_bodies_are_400(stack: Stack, user: User, body: bytes) -> None:
    response = await user.client.patch(
        f"{stack.api}/generations/{uuid.uuid4()}", content=body, headers={**user.headers, **JSON}
    )
    assert_error(response, 400, "VALIDATION_ERROR")


BAD_IDS = [
    "not-a-uuid",
    "12345",
    "0" * 5000,
    str(uuid.uuid4()) + "0",
    str(uuid.uuid4()).replace("-", ""),
    "{" + str(uuid.uuid4()) + "}",
    "..",
    "..%2F..%2Fusage",
    "%2e%2e%2f%2e%2e%2fusage",
    "..%5C..%5Cusage",
    "%252e%252e%252fusage",
    "%00",
    str(uuid.uuid4()) + "%00",
    str(uuid.uuid4()) + "%0A",
    str(uuid.uuid4()) + "%20",
    "%F0%9F%98%80",
    "' OR '1'='1",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_bad_ids_are_404(stack: Stack, user: User, method: str) -> None:
    kwargs: dict[str, Any] = {"headers": user.headers}
    if method == "PATCH":
        kwargs = {"content": b'{"action": "cancel"}', "headers": {**user.headers, **JSON}}
    for job_id in BAD_IDS:
        response = await user.client.request(method, f"{stack.api}/generations/{job_id}", **kwargs)
        # 405 only where a traversal resolved to another route (e.g. PATCH /usage).
        error = assert_error(response, {404, 405})
        if response.status_code == 404:
            assert set(error) == {"code", "message"}, job_id
            assert error["code"] == "NOT_FOUND", job_id


LEGIT_PROMPTS = [
    "A bright café-style kitchen with terrazzo benchtops ☕️🌿",
    "北欧风格的客厅，木地板和白色墙面",  # noqa: RUF001 - a real Chinese comma
    "غرفة معيشة بألوان هادئة مع نباتات",
    "Family room for 👨‍👩‍👧‍👦 with a big sofa",
    "Living room in Ñuñoa with crème linen curtains",
    "A calm bedroom\u200b with soft\u00a0light",
]


@pytest.mark.parametrize("prompt", LEGIT_PROMPTS)
async def test_unicode_prompts_work(stack: Stack, user: User, prompt: str) -> None:
    response = await user.submit("imagine", prompt=prompt)
    assert response.status_code == 202, response.text
    await user.wait_for(response.json()["id"], {"succeeded"})


CONTROL_PROMPTS = [
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    "\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f",
    "\u202e\u202d\u202e\u202d\u202e\u202d\u202e\u202d\u202e\u202d",
    "\u200b\u200c\u200d\u2060\ufeff\u200b\u200c\u200d\u2060\ufeff",
    "\x1b\x7f\x9b\x1b\x7f\x9b\x1b\x7f\x9b\x1b\x7f\x9b",
    "          \t\t\t\n\n\n          ",
    "\U000e0041\U000e0042\U000e0043\U000e0044\U000e0045\U000e0046",
]


@pytest.mark.parametrize("transport", ["json", "multipart"])
async def test_control_only_prompts_are_refused_for_imagine(
    stack: Stack, user: User, transport: str
) -> None:
    for prompt in CONTROL_PROMPTS:
        if transport == "json":
            response = await user.submit("imagine", prompt=prompt)
        else:
            response = await user.client.post(
                f"{stack.api}/generations",
                files={"mode": (None, "imagine"), "prompt": (None, prompt)},
                headers=user.headers,
            )
        assert_error(response, 400, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


async def test_nul_and_rtl_inside_a_real_prompt_are_stripped(stack: Stack, user: User) -> None:
    """Control and format characters are dropped; the words around them still count."""
    response = await user.submit(
        "imagine", prompt="A sunny\x00 living\u202e room with oak\u200d floors"
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await user.wait_for(job_id, {"succeeded"})
    [prediction] = [
        p for p in await stack.control("predictions") if p["id"] == response.json()["predictionId"]
    ]
    sent = json.dumps(prediction)
    for bad in ("\\u0000", "\\u202e", "\\u200d"):
        assert bad not in sent


@pytest.mark.parametrize(
    "header",
    [
        {"Idempotency-Key": "k" * 201},
        {"Idempotency-Key": "k" * 4096},
        {"Idempotency-Key": ""},
        {"Idempotency-Key": "caf\u00e9".encode()},
        {"Idempotency-Key": "tab\there"},
    ],
)
async def test_bad_idempotency_keys_are_400(
    stack: Stack, user: User, header: dict[str, str | bytes]
) -> None:
    response = await user.client.post(
        f"{stack.api}/generations",
        json={"mode": "imagine", "prompt": "A sunny living room"},
        # httpx encodes str and bytes values alike at runtime; its stubs accept one kind.
        headers={**user.headers, **header},  # type: ignore[arg-type]
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


async def test_idempotency_key_header_and_field_disagreeing_is_400(
    stack: Stack, user: User
) -> None:
    response = await user.client.post(
        f"{stack.api}/generations",
        json={"mode": "imagine", "prompt": "A sunny living room", "idempotencyKey": "a"},
        headers={**user.headers, "Idempotency-Key": "b"},
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Filler": "x" * 64 * 1024},
        {"Authorization": "Bearer " + "a" * 64 * 1024},
        {"X-Request-ID": "r" * 64 * 1024},
        {"Idempotency-Key": "k" * 64 * 1024},
        {f"X-Filler-{i}": "y" * 1024 for i in range(80)},
    ],
    ids=["one_64k_value", "64k_token", "64k_request_id", "64k_idempotency_key", "80_headers_of_1k"],
)
async def test_huge_headers_directly_at_the_edge(
    stack: Stack, user: User, headers: dict[str, str]
) -> None:
    """Past 32 KiB of headers the edge answers 431 itself (Envoy does too, in front)."""
    response = await user.client.post(
        f"{stack.api}/generations",
        json={"mode": "imagine", "prompt": "A sunny living room"},
        headers={**user.headers, **headers},
    )
    assert_error(response, 431, "VALIDATION_ERROR")
    await assert_nothing_left(stack, user)
