"""Random submissions and history queries made of our own names: never a 5xx, and a
refused submission leaves no job row and no private object for its (fresh) user.

Schemathesis (test_schemathesis.py) draws from the OpenAPI document; these draw any
JSON value, part or query text under the names the edge reads, the document's or not
(``sourceGenerationId`` in JSON, a file under ``prompt``, NaN, 2^70, lists for text).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import Stack, job_count, jpeg_bytes, make_token, objects_under

JPEG = jpeg_bytes()
FIELDS = [
    "mode",
    "prompt",
    "roomType",
    "style",
    "idempotencyKey",
    "source",
    "sourceGenerationId",
    "sourceVariantIdx",
]
_WORDS = ["imagine", "redesign", "compose", "staging", "japandi", "bedroom", "0", "1", "", " "]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from([*_WORDS, str(uuid.uuid4())]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["generationId", "variantIdx", "x"]), inner, max_size=3),
    ),
    max_leaves=6,
)
_BODIES = st.dictionaries(st.sampled_from(FIELDS), _VALUES, max_size=6)
_PARTS = st.tuples(
    st.sampled_from([*FIELDS[:-3], "sourceGenerationId", "sourceVariantIdx", "input1", "input2"]),
    st.one_of(st.none(), st.text(max_size=10)),
    st.one_of(
        st.sampled_from([b"imagine", b"redesign", b"compose", b"a sunny room", b"0", b"", JPEG]),
        st.sampled_from([JPEG[:100]]),
        st.binary(max_size=30),
    ),
    st.sampled_from([None, "image/jpeg", "text/plain; charset=utf-16", "application/octet-stream"]),
)
_QUERY_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["1", "100", "succeeded", "0", "101"]),
)
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
BOUNDARY = "fuzzBoundary"


def _multipart(parts: list[tuple[str, str | None, bytes, str | None]]) -> bytes:
    raw = b""
    for name, filename, data, content_type in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        raw += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type:
            raw += f"Content-Type: {content_type}\r\n".encode()
        raw += b"\r\n" + data + b"\r\n"
    return raw + f"--{BOUNDARY}--\r\n".encode()


async def _drive(stack: Stack, examples: Callable[[httpx.Client, list[Any]], None]) -> None:
    """Run a hypothesis test (sync, in a thread: it drives the stack in this loop)."""
    failures: list[Any] = []

    def run() -> None:
        with httpx.Client(timeout=30) as client:
            examples(client, failures)

    await asyncio.to_thread(run)
    assert failures == [], failures[:10]


def _check(
    stack: Stack,
    loop: asyncio.AbstractEventLoop,
    owner: uuid.UUID,
    response: httpx.Response,
    sent: object,
    failures: list[Any],
) -> None:
    if response.status_code >= 500:
        failures.append((sent, response.status_code, response.text[:200]))
    elif response.status_code >= 400:
        jobs = asyncio.run_coroutine_threadsafe(job_count(stack, owner), loop).result()
        stored = asyncio.run_coroutine_threadsafe(
            objects_under(stack, "private", f"{owner}/"), loop
        ).result()
        if jobs or stored:
            failures.append(("left behind", sent, response.status_code, jobs, stored))


async def test_json_submissions(stack: Stack) -> None:
    loop = asyncio.get_running_loop()

    def examples(client: httpx.Client, failures: list[Any]) -> None:
        @FUZZ
        @given(body=_BODIES, key=st.one_of(st.none(), st.text(max_size=5)))
        def one(body: dict[str, Any], key: str | None) -> None:
            owner = uuid.uuid4()
            headers = {
                "Authorization": f"Bearer {make_token(owner)}",
                "Content-Type": "application/json",
            }
            if key is not None and key.isascii() and key.isprintable():
                headers["Idempotency-Key"] = key
            raw = json.dumps(body, allow_nan=True).encode()
            response = client.post(f"{stack.api}/generations", content=raw, headers=headers)
            _check(stack, loop, owner, response, raw, failures)

        one()

    await _drive(stack, examples)


async def test_multipart_submissions(stack: Stack) -> None:
    loop = asyncio.get_running_loop()

    def examples(client: httpx.Client, failures: list[Any]) -> None:
        @FUZZ
        @given(parts=st.lists(_PARTS, max_size=5, unique_by=lambda part: part[0]))
        def one(parts: list[tuple[str, str | None, bytes, str | None]]) -> None:
            owner = uuid.uuid4()
            headers = {
                "Authorization": f"Bearer {make_token(owner)}",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            }
            raw = _multipart(parts)
            response = client.post(f"{stack.api}/generations", content=raw, headers=headers)
            _check(stack, loop, owner, response, raw[:300], failures)

        one()

    await _drive(stack, examples)


async def test_history_queries(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {make_token(uuid.uuid4())}"}

    def examples(client: httpx.Client, failures: list[Any]) -> None:
        @FUZZ
        @given(
            params=st.lists(
                st.tuples(st.sampled_from(["limit", "cursor", "status"]), _QUERY_TEXT),
                max_size=3,
                unique_by=lambda pair: pair[0],
            )
        )
        def one(params: list[tuple[str, str]]) -> None:
            query = httpx.QueryParams(tuple(params))
            response = client.get(f"{stack.api}/generations", params=query, headers=headers)
            if response.status_code >= 500:
                failures.append((params, response.status_code, response.text[:200]))

        one()

    await _drive(stack, examples)
