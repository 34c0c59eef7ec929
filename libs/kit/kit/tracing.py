"""OpenTelemetry tracing: on with an OTLP endpoint, absent without one.

Every service calls :func:`setup_tracing` once at start. Without
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) it does
nothing at all: no SDK tracer provider, no instrumentation wrappers, so tracing costs
nothing when nobody collects it. With one, spans of the gRPC clients and servers
(grpc.aio), httpx (the Replicate adapter, output downloads), urllib3 (the minio S3
client), the ASGI apps (:func:`instrument_asgi`) and SQLAlchemy engines
(:func:`instrument_engine`) are exported over OTLP/HTTP, configured by the standard
``OTEL_*`` variables (sampler, batch sizes, headers, ``OTEL_SERVICE_NAME``).

Trace context crosses gRPC as W3C ``traceparent`` metadata. A job keeps its
submission's ``traceparent`` (:func:`current_traceparent`); the webhook and the sweep
start their spans with a link to it (:func:`linked_span`).

Every exported span goes through :class:`RedactingExporter` first: attribute and
event values are scrubbed like log lines (URL query strings, bearer values, tokens,
secret-named keys), so no prompt, token or signed URL leaves the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from kit.logging import redact_text
from kit.tracing_grpc import client_interceptors

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The OTel SDK's own settings the deploy files may give every service (read by the SDK,
# not by our settings classes).
TRACING_VARIABLES = frozenset(
    {
        *ENDPOINT_VARIABLES,
        "OTEL_SDK_DISABLED",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    }
)
_REDACTED = "[redacted]"
# Attribute keys whose value is (or ends in) a query string: dropped or cut off, since
# a presigned URL's signature or an SSE access token rides there.
_QUERY_KEYS = frozenset({"url.query", "http.query"})
_TARGET_KEYS = frozenset({"http.target", "url.full", "http.url", "http.route", "url.path"})
# Parts of attribute keys that name a secret (headers captured by mistake included).
_SECRET_KEY_PARTS = ("prompt", "token", "authorization", "password", "secret", "cookie")
_TRACE_CONTEXT = TraceContextTextMapPropagator()


@dataclass
class Tracing:
    """The active tracing of this process (returned by :func:`setup_tracing`)."""

    provider: TracerProvider
    instrumentors: list[BaseInstrumentor] = field(default_factory=list)

    def shutdown(self) -> None:
        """Flush what is pending, remove every wrapper, forget the provider."""
        global _active
        for instrumentor in self.instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()
        _active = None


_active: Tracing | None = None


def enabled() -> bool:
    """Whether this process traces (false until :func:`setup_tracing` turned it on)."""
    return _active is not None


def setup_tracing(
    service: str,
    *,
    environ: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> Tracing | None:
    """Turn tracing on when an OTLP endpoint is configured; None (and nothing done)
    otherwise.

    ``exporter`` replaces the OTLP exporter (tests give an in-memory one); then the
    provider is not made the process-wide default, which can be set only once per
    process, and the instrumentations are handed it explicitly instead.
    """
    global _active
    env = os.environ if environ is None else environ
    if _active is not None:
        return _active
    if exporter is None and not _configured(env):
        return None
    # W3C trace context only: baggage (a caller's, or a library's) never rides our calls
    # out, to Replicate or anywhere else (OTEL_PROPAGATORS' default adds it).
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    provider = TracerProvider(resource=_resource(service, env))
    provider.add_span_processor(BatchSpanProcessor(RedactingExporter(exporter or _otlp())))
    if exporter is None:
        trace.set_tracer_provider(provider)
    _active = Tracing(provider, _instrument(provider))
    return _active


def _configured(env: Mapping[str, str]) -> bool:
    return traces_url(env) is not None


def traces_url(env: Mapping[str, str]) -> str | None:
    """Where the services' spans go, as the OTel SDK reads it (None: tracing is off):
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    plus ``/v1/traces``. `make run` points Envoy's tracer at the same URL."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else None


def _resource(service: str, env: Mapping[str, str]) -> Resource:
    """``service.name`` is the service's own unless ``OTEL_SERVICE_NAME`` says otherwise."""
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    return Resource.create(attributes)


def _otlp() -> SpanExporter:
    # Imported here: a process without an endpoint never loads the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrument(provider: TracerProvider) -> list[BaseInstrumentor]:
    """Process-wide wrappers: gRPC (aio) servers, httpx, urllib3. gRPC clients get
    theirs from :func:`grpc_client_interceptors` (kit.grpc_client)."""
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    instrumentors: list[BaseInstrumentor] = [
        GrpcAioInstrumentorServer(),  # type: ignore[no-untyped-call]
        HTTPXClientInstrumentor(),
        URLLib3Instrumentor(),
    ]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    return instrumentors


def instrument_asgi(app: Any) -> None:
    """Server spans for every request of a FastAPI or Starlette app (when tracing)."""
    if _active is None:
        return
    from fastapi import FastAPI
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # The per-message receive/send spans of a streamed body add nothing but volume.
    quiet: list[Any] = ["receive", "send"]
    if isinstance(app, FastAPI):
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=_active.provider, exclude_spans=quiet
        )
    else:
        app.add_middleware(
            OpenTelemetryMiddleware, tracer_provider=_active.provider, exclude_spans=quiet
        )


def instrument_engine(sync_engine: Any) -> None:
    """Spans for every statement of a SQLAlchemy engine (when tracing).

    kit.db builds engines with a name imported before any instrumentor could wrap it,
    so the engine is attached explicitly.
    """
    if _active is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeter

    tracer = _active.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    connections = NoOpMeter("kit.db").create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer, sync_engine, connections)  # type: ignore[no-untyped-call]


def grpc_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Client spans and ``traceparent`` metadata for a new channel; none when off."""
    if _active is None:
        return []
    return client_interceptors(_active.provider.get_tracer("kit.tracing_grpc"))


def tracer(name: str) -> trace.Tracer:
    """A tracer of the active provider (a no-op one when tracing is off)."""
    if _active is None:
        return trace.NoOpTracer()
    return _active.provider.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to be stored with a job."""
    if _active is None:
        return None
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def linked_span(name: str, traceparent: str | None, **attributes: str) -> Iterator[None]:
    """A new span (child of the current one, if any) linked to the trace of
    ``traceparent``: how a webhook or a sweep pass joins the job's submission."""
    if _active is None:
        yield
        return
    links = []
    if traceparent:
        linked = trace.get_current_span(_TRACE_CONTEXT.extract({"traceparent": traceparent}))
        if linked.get_span_context().is_valid:
            links.append(trace.Link(linked.get_span_context()))
    with tracer("kit.tracing").start_as_current_span(name, links=links, attributes=attributes):
        yield


class RedactingExporter(SpanExporter):
    """Hands spans on with every attribute and event value scrubbed (see module doc)."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export scrubbed copies of ``spans``."""
        return self._inner.export([_scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the wrapped exporter."""
        return self._inner.force_flush(timeout_millis)


def _scrubbed(span: ReadableSpan) -> ReadableSpan:
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=[
            Event(event.name, scrub_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=[trace.Link(link.context, scrub_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        # The description is exception text (the SDK's "Type: message", the database
        # instrumentation's str(error)): a signed URL or a row's values can be in it.
        status=Status(span.status.status_code, redact_text(span.status.description))
        if span.status.description
        else span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def scrub_attributes(attributes: Attributes) -> dict[str, Any]:
    """``attributes`` with secrets replaced by ``[redacted]``."""
    return {key: _scrub(key, value) for key, value in (attributes or {}).items()}


def _scrub(key: str, value: Any) -> Any:
    lowered = key.lower()
    if any(part in lowered for part in _SECRET_KEY_PARTS):
        return _REDACTED
    if isinstance(value, str):
        if lowered in _QUERY_KEYS:
            return _REDACTED if value else value
        if lowered in _TARGET_KEYS:
            path, question, query = value.partition("?")
            value = path + question + _REDACTED if query else path
        return redact_text(value)
    if isinstance(value, tuple | list):
        return tuple(redact_text(item) if isinstance(item, str) else item for item in value)
    return value
