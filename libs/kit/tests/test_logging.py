"""Logs are JSON lines and never carry prompts, tokens or URL signatures."""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator

import pydantic
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.logging import (
    bind_context,
    clear_context,
    configure_logging,
    get_logger,
    redact_text,
)


def test_json_lines_with_context_and_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test-service")
    bind_context(requestId="r-1")
    get_logger("t").info(
        "job.submitted",
        ownerId="o",
        prompt="my secret prompt",
        token="eyJhbGciOi",
        url="http://s3.local/private/a.jpg?X-Amz-Signature=abcdef",
    )
    clear_context("requestId")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["event"] == "job.submitted"
    assert event["service"] == "test-service"
    assert event["requestId"] == "r-1"
    assert event["prompt"] == "[redacted]"
    assert event["token"] == "[redacted]"
    assert event["url"] == "http://s3.local/private/a.jpg?[redacted]"
    assert "secret prompt" not in line
    assert "abcdef" not in line


def test_fields_named_like_a_secret_in_any_spelling_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the exact names were: an ``access_token`` or a ``webhook-signature`` field
    would have been written as it came."""
    configure_logging("test-service")
    fields = {
        "access_token": "opaque-1",
        "apiToken": "opaque-2",
        "webhook-signature": "opaque-3",
        "composedPrompt": "opaque-4",
        "signed_url": "opaque-5",
        "nested": {"X-Amz-Signature": "opaque-6"},
    }
    get_logger("t").info("call", tokenCount=3, **fields)

    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "opaque" not in json.dumps(event)
    assert event["access_token"] == event["composedPrompt"] == "[redacted]"
    assert event["tokenCount"] == 3


def test_nested_values_are_redacted_as_top_level_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """A dict or list passed by mistake keeps no prompt, token or signature."""

    class Holder:
        def __repr__(self) -> str:
            return "Holder(authorization='Bearer eyJhbGciOi.x.y')"

    configure_logging("test-service")
    get_logger("t").info(
        "call",
        details={"prompt": "my secret prompt", "url": "http://s3/a.jpg?X-Amz-Signature=abc"},
        items=["Bearer eyJhbGciOi.x.y", ("whsec_c2VjcmV0",), {"inner": {"Token": "t0k"}}],
        holder=Holder(),
        count=3,
        ratio=0.5,
        flag=True,
        nothing=None,
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["details"] == {"prompt": "[redacted]", "url": "http://s3/a.jpg?[redacted]"}
    assert event["items"] == [
        "Bearer [redacted]",
        ["whsec_[redacted]"],
        {"inner": {"Token": "[redacted]"}},
    ]
    assert "eyJ" not in event["holder"]
    assert "Holder(" in event["holder"]
    assert (event["count"], event["ratio"], event["flag"], event["nothing"]) == (3, 0.5, True, None)
    for secret in ("secret prompt", "abc", "eyJ", "c2VjcmV0", "t0k"):
        assert secret not in line


def test_redaction_of_nesting_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    deep: list[object] = ["Bearer eyJhbGciOi.x.y"]
    for _ in range(50):
        deep = [deep]
    configure_logging("test-service")
    get_logger("t").info("deep", value=deep)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "eyJ" not in line
    assert "[redacted]" in json.loads(line)["value"][0][0][0][0][0]


def test_loggers_made_before_configuration_still_write_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    early = get_logger("made.early")
    configure_logging("late-service")
    early.info("grpc.stopped")
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event == {
        "component": "made.early",
        "event": "grpc.stopped",
        "level": "info",
        "service": "late-service",
        "ts": event["ts"],
    }


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ"
SIGNED = "https://s3.local/private/in.jpg?X-Amz-Signature=feedface"
LEAKY = (
    f"upstream said no: Authorization: Bearer {JWT} fetching {SIGNED} for "
    "request(prompt='a Quokka reading room', api_token=r8_abc123) "
    "DETAIL: Key (idempotency_key)=(jane@example.com) already exists; "
    'invalid input syntax for type uuid: "Quokka2"; '
    "invalid input for query argument $1: 'Quokka3' (expected int)\n"
    "DETAIL:  Failing row contains (7d1c, starting, a room for Mia Quokka4 at 12 Oak St)."
)
NEVER = ("Quokka", JWT, "feedface", "r8_abc123", "jane@example.com", "Oak St")


def _explode() -> None:
    raise RuntimeError(LEAKY)


def test_exception_text_and_tracebacks_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test-service")
    try:
        _explode()
    except RuntimeError:
        get_logger("t").exception("call.failed", detail=LEAKY)
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert "Traceback" in event["exception"]
    assert "_explode" in event["exception"]  # the traceback itself stays useful
    for text in (event["exception"], event["detail"]):
        assert "[redacted]" in text
        for secret in NEVER:
            assert secret not in text


def test_stdlib_records_and_their_tracebacks_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers = root.handlers[:]
    configure_logging("test-service")
    try:
        try:
            _explode()
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI app: %s", LEAKY)
        out = capsys.readouterr().out
    finally:
        root.handlers[:] = handlers

    assert "Exception in ASGI app" in out
    assert "Traceback" in out
    for secret in NEVER:
        assert secret not in out


def _lines(out: str) -> list[dict[str, object]]:
    """Every line of ``out``, each of which must be one JSON object."""
    return [json.loads(line) for line in out.splitlines()]


def test_stdlib_records_are_json_with_our_fields_and_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test-service")
    bind_context(requestId="r-2", clientRequestId="c-2")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request: %s", f"Bearer {JWT}")
    clear_context("requestId", "clientRequestId")
    # A thread that never saw the bound context (grpc's, a driver's) still names the service.
    worker = threading.Thread(target=logging.getLogger("sqlalchemy.pool").error, args=("gone",))
    worker.start()
    worker.join()

    uvicorn_line, thread_line = _lines(capsys.readouterr().out)
    assert uvicorn_line == {
        "event": "Invalid HTTP request: Bearer [redacted]",
        "level": "warning",
        "ts": uvicorn_line["ts"],
        "service": "test-service",
        "component": "uvicorn.error",
        "requestId": "r-2",
        "clientRequestId": "c-2",
    }
    assert thread_line["service"] == "test-service"
    assert thread_line["component"] == "sqlalchemy.pool"
    assert thread_line["level"] == "error"


def test_an_uncaught_exception_is_one_redacted_json_line_in_any_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test-service")
    try:
        _explode()
    except RuntimeError as error:
        sys.excepthook(type(error), error, error.__traceback__)

    worker = threading.Thread(target=_explode, name="crasher")
    worker.start()
    worker.join()

    line, thread_line = _lines(capsys.readouterr().out)
    assert thread_line["event"] == "thread.crashed"
    assert thread_line["thread"] == "crasher"
    assert thread_line["service"] == "test-service"
    assert "_explode" in str(thread_line["exception"])
    for secret in NEVER:
        assert secret not in json.dumps(thread_line)
    assert line["event"] == "process.crashed"
    assert line["level"] == "critical"
    assert "_explode" in str(line["exception"])
    for secret in NEVER:
        assert secret not in json.dumps(line)


class _FailsWhenCollected:
    def __del__(self) -> None:
        raise RuntimeError("Event loop is closed")  # as an asyncio transport's may


def test_an_unraisable_exception_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Raised where Python cannot raise it (a ``__del__``, a finalizer): Python's own hook
    printed an "Exception ignored in" block of several plain-text lines on stderr."""
    configure_logging("test-service")
    _FailsWhenCollected()  # collected at once, its __del__ raising
    gc.collect()

    captured = capsys.readouterr()
    [line] = _lines(captured.out)
    assert captured.err == ""
    assert line["event"] == "process.unraisable"
    assert line["level"] == "error"
    assert "Event loop is closed" in str(line["exception"])


def test_lines_from_concurrent_threads_never_mix(capsys: pytest.CaptureFixture[str]) -> None:
    """Our lines and stdlib records written at once from several threads stay whole
    lines (a tiny switch interval makes the threads interleave inside a write)."""
    configure_logging("test-service")

    def ours() -> None:
        log = get_logger("ours")
        for i in range(1000):
            log.info("ours", i=i)

    def theirs() -> None:
        for i in range(1000):
            logging.getLogger("theirs").warning("theirs %s", i)

    threads = [threading.Thread(target=target) for target in (ours, theirs, ours, theirs)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 4000
    assert {line["component"] for line in lines} == {"ours", "theirs"}


def test_redaction_stays_linear_on_hostile_text() -> None:
    """Exception text can be huge and attacker-shaped: scrubbing must not backtrack
    its way into seconds of CPU (bounded in CPU time, not wall time)."""
    hostile = [
        "a" * 200_000,
        "token" * 40_000,
        "prompt=" * 30_000,
        "prompt='" * 30_000,
        "prompt='" + "x" * 200_000,
        "eyJ" + "a." * 100_000,
        "eyJ-" * 50_000,
        "https://" + "a" * 200_000,
        "http://" * 30_000,
        "Key (" * 40_000,
        "Key (a)=(" * 30_000,
        "for type " * 30_000,
        'for type a: "' * 20_000,
        "query argument $1: '" * 20_000,
        "Failing row contains (" * 20_000,
        "bearer " * 30_000,
        "a" * 200_000 + "://",
        "a." * 100_000 + "://",
        "a://b:" * 30_000,
        "x://" + "u:" * 100_000,
        "signature=" * 20_000,
        "X-Amz-Credential=" + "c" * 200_000,
        "input_value=" * 20_000,
        "input_value=" + "x" * 200_000,
        "signature%3D" * 20_000,
        "v1," + "A" * 200_000,
        "v1," * 60_000,
        'prompt=\\"' * 20_000,
        'prompt=\\"' + "x" * 200_000,
        "prompt" + "\\" * 200_000,
        "-/" * 100_000,
        " /" * 100_000 + "?",
        "/" + "a" * 200_000 + "?",
        "/?" * 100_000,
        ("input_value=" + "x" * 190 + "\n") * 1_000,
    ]
    started = time.process_time()
    for text in hostile:
        redact_text(text)
    assert time.process_time() - started < 2.0


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    unraisablehook = sys.unraisablehook  # pytest's own, around each test
    yield
    structlog.contextvars.clear_contextvars()
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__
    sys.unraisablehook = unraisablehook
    configure_logging("tests")  # as the test kit configured it for the whole run


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "[redacted]"),
        ("r8_abcDEF123", "r8_[redacted]"),
        ("whsec_abc-def", "whsec_[redacted]"),
        ("ledger.debited", "ledger.debited"),
        ("7d1c0f5e-3a2b-4c1d-9e8f-0a1b2c3d4e5f", "7d1c0f5e-3a2b-4c1d-9e8f-0a1b2c3d4e5f"),
    ],
)
def test_bare_tokens_are_redacted_and_plain_values_left_alone(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def _pydantic_error() -> str:
    class Job(pydantic.BaseModel):
        width: int

    try:
        Job.model_validate({"width": "Quokka, input_type=str] Quokka"})
    except pydantic.ValidationError as error:
        return str(error)
    raise AssertionError("the input was accepted")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The password of a URL's userinfo, whatever the scheme (a DSN's has a "+").
        ("postgresql+asyncpg://u:pw@db/x", "postgresql+asyncpg://u:[redacted]@db/x"),
        ("dsn=postgresql://app:s3cr/t@db:5432/x;", "dsn=postgresql://app:[redacted]@db:5432/x;"),
        ("redis://:pw@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
        ("https://u:p@ss?w@h/k?a=1", "https://u:[redacted]@h/k?[redacted]"),
        # The scheme in any case.
        ("HTTPS://host/k?X-Amz-Signature=abc", "HTTPS://host/k?[redacted]"),
        ("Http://host/k?token=abc", "Http://host/k?[redacted]"),
        # A bare path's query string, as urllib3 logs a presigned PUT: dropped whole.
        (
            "GET /k?X-Amz-Credential=AKIA%2F1&X-Amz-Date=1&X-Amz-Signature=abc 403",
            "GET /k?[redacted] 403",
        ),
        (
            'http://127.0.0.1:9000 "PUT /public/r/0.jpg?X-Amz-Algorithm=A&X-Amz-Credential=c'
            '&X-Amz-Signature=s HTTP/1.1" 200 0',
            'http://127.0.0.1:9000 "PUT /public/r/0.jpg?[redacted] HTTP/1.1" 200 0',
        ),
        ("'/private/a.jpg?Signature=abc'", "'/private/a.jpg?[redacted]'"),
        # Signatures and credentials outside a path or a URL.
        (
            "form: X-Amz-Credential=AKIA&X-Amz-Signature=abc",
            "form: X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]",
        ),
        ("x-amz-signature=abc#f", "x-amz-signature=[redacted]#f"),
        # URL-encoded, as a presigned URL inside another URL's query or a form.
        (
            "next=%2Fk%3FX-Amz-Credential%3DAKIA%252F1%26X-Amz-Signature%3Dabc",
            "next=%2Fk%3FX-Amz-Credential%3D[redacted]",
        ),
        ("X-AMZ-SIGNATURE%3dabc def", "X-AMZ-SIGNATURE%3d[redacted] def"),
        # A Standard Webhooks signature in a header dump, whatever its key.
        (
            "{'webhook-signature': 'v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4='}",
            "{'webhook-signature': 'v1,[redacted]'}",
        ),
        (
            "webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
            " v1,abcdefghijklmnopqrst",
            "webhook-signature: v1,[redacted] v1,[redacted]",
        ),
        # JSON escaped inside JSON or a repr: the whole value goes, spaces and all.
        (
            '{"body": "{\\"prompt\\": \\"a red room, please\\", \\"mode\\": \\"x\\"}"}',
            '{"body": "{\\"prompt\\": [redacted], \\"mode\\": \\"x\\"}"}',
        ),
        ('b\'{\\\\"prompt\\\\":\\\\"my room\\\\"}\'', "b'{\\\\\"prompt\\\\\":[redacted]}'"),
        ('prompt=\\"an unclosed value\nnext', "prompt=[redacted]\nnext"),
        # pydantic echoing the input, even one that mimics the closing of the field.
        (
            "[type=int_parsing, input_value='a, input_type=str] b', input_type=str]",
            "[type=int_parsing, input_value=[redacted], input_type=str]",
        ),
        ("input_value={'name': 'Mia'}\nnext line", "input_value=[redacted]\nnext line"),
        # E-mail addresses, in a path a client wrote or in any text.
        ("GET /api/v1/profiles/jane.doe+review@example.com", "GET /api/v1/profiles/[redacted]"),
        ("owner jane_d@mail.example.co.uk, again", "owner [redacted], again"),
        # Percent-encoded, as a header or a query holds it (an unsigned webhook's id).
        ("deliveryId=kim%40example.org", "deliveryId=[redacted]"),
    ],
)
def test_credentials_signatures_and_echoed_input_are_redacted(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_a_pydantic_validation_error_keeps_no_input() -> None:
    text = _pydantic_error()
    assert "input_value='Quokka" in text
    redacted = redact_text(text)
    assert "Quokka" not in redacted
    assert "input_value=[redacted], input_type=str]" in redacted
    assert "width" in redacted  # which field failed, and how, stays


@pytest.mark.parametrize(
    "text",
    [
        "7d1c0f5e-3a2b-4c1d-9e8f-0a1b2c3d4e5f",
        "0af7651916cd43dd8448eb211c80319c",
        "job.provider_accepted",
        "2024-05-01T12:34:56.789012+00:00",
        "https://api.replicate.com/v1/predictions/abc",
        "HTTPS://Example.com:8443/a/b.jpg#top",
        "postgresql+asyncpg://app@db:5432/generation",
        "ssh://git@github.com/org/repo.git",
        "https://medium.com/@someone/post",
        "/private/a.jpg",
        "status=succeeded attempt=2",
        "signatures verified: 2",
        "what? a/b? yes",
    ],
)
def test_ordinary_text_is_left_unchanged(text: str) -> None:
    assert redact_text(text) == text


def _every_pattern(text: str) -> str:
    """Redaction as it was before the substring pre-checks: every pattern, in order."""
    from kit import logging as kit_logging

    for pattern, replacement in kit_logging._TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    return text


_FRAGMENTS = [
    "a b",
    "token=x",
    "https://h/p?q=1",
    "Key (a)=(b)",
    "$1",
    "a:b",
    "'x'",
    "Bearer abc",
    "BASIC dXNlcg==",
    "ba\u017fic abc",
    "to\u212aen=1",
    "PROMPT: 'room'",
    "eyJa.b.c",
    "r8_x",
    "whsec_y",
    'for type integer: "v"',
    "query argument $1: 'v' (x)",
    "Failing row contains (a, b)",
    "http://x?sig=1",
    "authorization=",
    "\u017fecret: s",
    "\u00e9t\u00e9",
    "7d1c0f5e-3a2b",
    "://",
    "pg+asyncpg://u:pw@db/x",
    "HTTPS://H/k?s=1",
    "u:p@",
    "@",
    "/k?X-Amz-Signature=s&",
    '"PUT /b/k?q=1 HTTP/1.1"',
    "?",
    "/",
    "CREDENTIAL=",
    "\u017fignature=",
    "=",
    "input_value='v', input_type=str]",
    "input_value=",
    "a@b.c",
    "//u@h.io",
    "X-Amz-Signature%3D",
    "v1,abcdefghijklmnopqrstuv",
    'prompt\\": \\"',
    "\\",
]


@pytest.mark.parametrize("text", [*_FRAGMENTS, " ".join(_FRAGMENTS), ",".join(_FRAGMENTS)])
def test_the_pre_checks_change_nothing_a_pattern_would_redact(text: str) -> None:
    assert redact_text(text) == _every_pattern(text)


@given(st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=12), max_size=6))
@settings(max_examples=300, deadline=None)
def test_the_pre_checks_change_nothing_on_any_text(parts: list[str]) -> None:
    text = "".join(parts)
    assert redact_text(text) == _every_pattern(text)


@pytest.mark.parametrize(
    "name", ["prompt", "token", "authorization", "password", "secret", "signedUrl", "email", "body"]
)
def test_every_forbidden_field_name_is_redacted_whatever_its_value(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """By name alone, whatever the value's shape (a webhook's body may echo a prompt in
    free text that no pattern recognizes)."""
    configure_logging("test-service")
    get_logger("t").info("call", **{name: "opaque free text", "nested": {name: "opaque too"}})
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event[name] == "[redacted]"
    assert event["nested"][name] == "[redacted]"
