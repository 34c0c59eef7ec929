"""One submission is one trace across edge -> generation -> usage; the webhook links to
it; no span anywhere carries a prompt, a token or a signed URL."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import httpx
from opentelemetry import baggage, propagate
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from generation.domain.sweep import sweep_once
from kit import tracing
from tests.e2e.harness import User, jpeg_bytes, make_token

PROMPT = "a reading nook with a zebra-striped armchair"
SUBMIT = "/interior.generation.v1.GenerationService/SubmitGeneration"


def _finished(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing._active is not None
    assert tracing._active.provider.force_flush()
    return list(spans.get_finished_spans())


def _one(found: list[ReadableSpan]) -> ReadableSpan:
    assert len(found) == 1, [span.name for span in found]
    return found[0]


def _under(span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, ReadableSpan]) -> bool:
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        parent = by_id[parent.span_id].parent if parent.span_id in by_id else None
    return False


async def _submitted(user: User, spans: InMemorySpanExporter) -> tuple[str, list[ReadableSpan]]:
    response = await user.submit(
        "redesign", images=[jpeg_bytes()], style="japandi", roomType="living_room", prompt=PROMPT
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await user.wait_for(job_id, {"succeeded"})
    return job_id, _finished(spans)


async def test_a_submission_is_one_trace_from_edge_to_usage(
    traced_user: User, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    _, finished = await _submitted(traced_user, spans)
    edge = _one(
        [s for s in finished if s.kind is SpanKind.SERVER and s.name == "POST /api/v1/generations"]
    )
    assert edge.context is not None
    in_trace = [s for s in finished if s.context and s.context.trace_id == edge.context.trace_id]
    by_id = {s.context.span_id: s for s in in_trace if s.context}
    client = _one([s for s in in_trace if s.kind is SpanKind.CLIENT and s.name == SUBMIT])
    server = _one([s for s in in_trace if s.kind is SpanKind.SERVER and s.name == SUBMIT])
    assert _under(client, edge, by_id)
    assert server.parent is not None
    assert client.context is not None
    assert server.parent.span_id == client.context.span_id
    usage_servers = [s for s in in_trace if s.kind is SpanKind.SERVER and "UsageService/" in s.name]
    assert usage_servers, "the submission's usage calls are not in its trace"
    for usage_server in usage_servers:
        assert usage_server.parent is not None
        usage_client = by_id[usage_server.parent.span_id]
        assert usage_client.kind is SpanKind.CLIENT
        assert usage_client.name == usage_server.name
        assert _under(usage_client, server, by_id)
    database = [s for s in in_trace if (s.attributes or {}).get("db.system") == "postgresql"]
    assert any(_under(s, server, by_id) for s in database)
    assert any(_under(s, usage_servers[0], by_id) for s in database)
    # The input went to S3 (minio over urllib3) inside the submission.
    assert any(s.name == "PUT" and _under(s, server, by_id) for s in in_trace)


async def test_the_webhook_links_to_the_submission_trace(
    traced_user: User, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    _, finished = await _submitted(traced_user, spans)
    edge = _one([s for s in finished if s.name == "POST /api/v1/generations"])
    assert edge.context is not None
    applied = [s for s in finished if s.name == "generation.apply_webhook"]
    assert applied
    for span in applied:
        assert span.context is not None
        assert span.context.trace_id != edge.context.trace_id
        assert [link.context.trace_id for link in span.links] == [edge.context.trace_id]


async def test_no_span_holds_a_prompt_a_token_or_a_signed_url(
    traced_user: User, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    job_id, _ = await _submitted(traced_user, spans)
    user_token = traced_user.headers["Authorization"].removeprefix("Bearer ")
    job = (await traced_user.get(job_id)).json()
    signed = job["inputs"][0]["url"]
    assert "X-Amz-Signature=" in signed
    async with httpx.AsyncClient(timeout=10) as plain:
        # The signed links as a browser would follow them, and the SSE stream with its
        # token in the query, all traced (httpx in this process, the edge's server span).
        assert (await plain.get(signed)).status_code == 200
        assert (await plain.get(job["variants"][0]["url"])).status_code == 200
        events = f"{traced_user.stack.api}/generations/{job_id}/events"
        answer = await plain.get(events, params={"access_token": make_token(traced_user.id)})
        assert answer.status_code == 200
    finished = _finished(spans)
    assert any("access_token" not in str(s.attributes) and "events" in s.name for s in finished)
    dumped = json.dumps([_everything(span) for span in finished], default=str)
    signature = signed.split("X-Amz-Signature=", 1)[1].split("&", 1)[0]
    for secret in (
        PROMPT,
        "zebra",
        user_token,
        "eyJ",
        "Bearer",
        signature,
        "X-Amz-Signature",
        "X-Amz-Credential",
        traced_user.stack.emulator.token,
    ):
        assert secret not in dumped, secret


def test_a_span_status_is_scrubbed_too(spans: InMemorySpanExporter) -> None:
    """An error status's description is exception text, which can echo anything."""
    spans.clear()
    signed = "https://s3.local/private/in.jpg?X-Amz-Signature=feedface"
    with tracing.tracer("tests").start_as_current_span("failing") as span:
        span.set_status(
            Status(
                StatusCode.ERROR,
                f"fetching {signed} failed; DETAIL:  Failing row contains (7d1c, {PROMPT})",
            )
        )
    exported = _one([s for s in _finished(spans) if s.name == "failing"])
    assert exported.status.status_code is StatusCode.ERROR
    description = exported.status.description or ""
    assert "[redacted]" in description
    for secret in ("feedface", "X-Amz-Signature", "zebra"):
        assert secret not in description, description


def _everything(span: ReadableSpan) -> dict[str, object]:
    return {
        "name": span.name,
        "attributes": dict(span.attributes or {}),
        "events": [(event.name, dict(event.attributes or {})) for event in span.events],
        "links": [dict(link.attributes or {}) for link in span.links],
        "status": span.status.description,
    }


def test_without_an_endpoint_nothing_is_installed() -> None:
    """Unset endpoint: no provider, no wrappers (checked in a fresh interpreter, since
    this process's tracing is on for the suite above)."""
    code = (
        "import grpc, httpx, urllib3\n"
        "from opentelemetry import trace\n"
        "from kit import tracing\n"
        "before = (grpc.aio.server, httpx.HTTPTransport.handle_request,"
        " urllib3.connectionpool.HTTPConnectionPool.urlopen)\n"
        "assert tracing.setup_tracing('x', environ={'OTEL_SERVICE_NAME': 'x'}) is None\n"
        "assert not tracing.enabled() and tracing.grpc_client_interceptors() == []\n"
        "assert tracing.current_traceparent() is None\n"
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider'\n"
        "after = (grpc.aio.server, httpx.HTTPTransport.handle_request,"
        " urllib3.connectionpool.HTTPConnectionPool.urlopen)\n"
        "assert before == after\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


async def test_the_sweep_links_to_the_submission_trace(
    traced_user: User, spans: InMemorySpanExporter
) -> None:
    stack = traced_user.stack
    await stack.control("set_faults", drop_webhooks="all")
    try:
        spans.clear()
        response = await traced_user.submit("imagine", prompt="A mudroom with hooks")
        assert response.status_code == 202, response.text
        await stack.control("wait_for_status", response.json()["predictionId"], ["succeeded"])
        stack.clock.advance(timedelta(seconds=30))
        assert (await sweep_once(stack.ctx))["recovered"] == 1
    finally:
        await stack.control("reset")
    finished = _finished(spans)
    edge = _one([s for s in finished if s.name == "POST /api/v1/generations"])
    assert edge.context is not None
    recovered = _one([s for s in finished if s.name == "generation.sweep.recover"])
    assert [link.context.trace_id for link in recovered.links] == [edge.context.trace_id]
    assert (recovered.attributes or {}).get("jobId") == response.json()["id"]


def test_baggage_never_rides_our_calls_out(spans: InMemorySpanExporter) -> None:
    # The SDK's default propagators (OTEL_PROPAGATORS) add baggage: whatever a caller or
    # a library put there would reach Replicate with every call.
    token = context_api.attach(baggage.set_baggage("userEmail", "alice@example.com"))
    carrier: dict[str, str] = {}
    try:
        with tracing.tracer("tests").start_as_current_span("outgoing"):
            propagate.inject(carrier)
    finally:
        context_api.detach(token)
    assert "traceparent" in carrier
    assert "baggage" not in carrier
