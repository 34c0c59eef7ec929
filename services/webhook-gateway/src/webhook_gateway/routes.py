"""The HTTP endpoints: the webhook itself, liveness and readiness.

The webhook is checked in order (size, signature, JSON object), and only then
handed to generation; the provider gets 2xx only once generation answered OK,
so a terminal event that could not be applied is retried by Replicate.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from kit.logging import get_logger
from webhook_gateway import metrics
from webhook_gateway.forwarder import EventRejected, ForwardFailed, GenerationForwarder
from webhook_gateway.responses import error_response
from webhook_gateway.signatures import ID_HEADER, SignatureRejected, WebhookVerifier

_MAX_DELIVERY_ID_LENGTH = 128
_MAX_JOB_ID_LENGTH = 36
_FAILED = "webhook.forward_failed"
_REJECTIONS = {
    413: ("VALIDATION_ERROR", "The webhook body is too large."),
    401: ("UNAUTHORIZED", "The webhook signature is missing, not valid or expired."),
    400: ("VALIDATION_ERROR", "The webhook body must be a JSON object."),
}


def _named_job(request: Request) -> str:
    """The ``job`` query parameter generation put in the webhook URL; "" when missing or
    too long to be a job id (it only helps with a run no job has: never refused)."""
    value = request.query_params.get("job", "")
    return value if len(value) <= _MAX_JOB_ID_LENGTH else ""


class BodyTooLarge(Exception):
    """The body passed the cap (declared or while streaming)."""


class WebhookEndpoint:
    """``POST <webhook_path>``: verify, then forward to generation."""

    def __init__(
        self,
        *,
        verifier: WebhookVerifier | None,
        forwarder: GenerationForwarder,
        max_body_bytes: int,
    ) -> None:
        self._verifier = verifier
        self._forwarder = forwarder
        self._max_body_bytes = max_body_bytes
        # Built here, not at import, so the logger follows the logging setup of this app.
        self._log = get_logger("webhook_gateway.webhook")

    async def handle(self, request: Request) -> Response:
        """The whole webhook flow; answers are fixed texts, never provider content."""
        delivery_id = _delivery_id(request)
        metrics.RECEIVED.inc()
        if self._verifier is not None and not _declared_too_large(request, self._max_body_bytes):
            # A delivery without its signature headers, or outside the timestamp window,
            # cannot be authentic: refused before anything else is done with it. Its body
            # (capped) is still read off the connection first: a connection closed with
            # unread bytes is reset, and Envoy, still writing the body it buffered, then
            # loses the 401 and answers 503.
            try:
                self._verifier.check_headers(request.headers)
            except SignatureRejected as rejected:
                response = self._rejected(401, rejected.reason, delivery_id)
                try:
                    await read_capped_body(request, self._max_body_bytes)
                except BodyTooLarge:
                    response.headers["connection"] = "close"  # the rest is never read
                except ClientDisconnect:
                    pass
                return response
        try:
            body = await read_capped_body(request, self._max_body_bytes)
        except BodyTooLarge:
            response = self._rejected(413, "too_large", delivery_id)
            # The rest of the body is never read: end the connection instead of draining it.
            response.headers["connection"] = "close"
            return response
        except ClientDisconnect:
            self._log.info("webhook.abandoned", deliveryId=delivery_id)
            metrics.rejected("incomplete")
            return error_response(400, "VALIDATION_ERROR", "The request body was incomplete.")
        self._log.info("webhook.received", deliveryId=delivery_id, bytes=len(body))
        if self._verifier is not None:
            try:
                self._verifier.verify(body, request.headers)
            except SignatureRejected as rejected:
                return self._rejected(401, rejected.reason, delivery_id)
        prediction_id = _prediction_of(body)
        if prediction_id is None:
            return self._rejected(400, "not_json", delivery_id)
        return await self._forward(body, delivery_id, prediction_id, _named_job(request))

    async def _forward(
        self, body: bytes, delivery_id: str, prediction_id: str, job_id: str
    ) -> Response:
        ids = {"deliveryId": delivery_id, "predictionId": prediction_id}
        try:
            result = await self._forwarder.apply_event(body, delivery_id, job_id)
        except EventRejected:
            self._log.warning(_FAILED, **ids, grpcCode="INVALID_ARGUMENT")
            metrics.forward_failed("INVALID_ARGUMENT")
            return error_response(400, "VALIDATION_ERROR", "The webhook event could not be read.")
        except ForwardFailed as failed:
            self._log.warning(_FAILED, **ids, grpcCode=failed.grpc_code)
            metrics.forward_failed(failed.grpc_code)
            return _retry_later()
        except Exception:
            # Any other failure still means "not applied": the provider must retry.
            self._log.exception(_FAILED, **ids, grpcCode="UNKNOWN")
            metrics.forward_failed("UNKNOWN")
            return _retry_later()
        self._log.info(
            "webhook.forwarded",
            **ids,
            outcome=result.outcome,
            jobId=result.job_id,
            status=result.status,
        )
        metrics.forwarded(result.outcome)
        return JSONResponse({"received": True, "outcome": result.outcome})

    def _rejected(self, status: int, reason: str, delivery_id: str) -> Response:
        self._log.warning("webhook.rejected", reason=reason, deliveryId=delivery_id)
        metrics.rejected(reason)
        code, message = _REJECTIONS[status]
        return error_response(status, code, message)


def _declared_too_large(request: Request, max_bytes: int) -> bool:
    declared = request.headers.get("content-length")
    return (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > max_bytes
    )


async def read_capped_body(request: Request, max_bytes: int) -> bytes:
    """The body, refusing more than ``max_bytes`` without reading the rest."""
    if _declared_too_large(request, max_bytes):
        raise BodyTooLarge
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _delivery_id(request: Request) -> str:
    # Header text reaches logs and generation: keep it short and printable.
    raw = request.headers.get(ID_HEADER, "")[:_MAX_DELIVERY_ID_LENGTH]
    return raw if raw.isascii() and raw.isprintable() else ""


# A prediction id is short ("gm3qorzdhgbfurvjtvhg6dckhu"); anything longer is logged cut.
_MAX_ID_CHARS = 64


def _prediction_of(body: bytes) -> str | None:
    """The event's prediction id for the logs ("" when it has none that is a string),
    or None when the body is not a JSON object (refused)."""
    try:
        value: Any = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    prediction_id = value.get("id")
    return prediction_id[:_MAX_ID_CHARS] if isinstance(prediction_id, str) else ""


def _retry_later() -> Response:
    return error_response(
        503, "UPSTREAM_ERROR", "The event could not be processed now; please retry."
    )


async def healthz(_: Request) -> Response:
    """Liveness: the process answers HTTP."""
    return JSONResponse({"status": "ok"})


class ReadinessEndpoint:
    """Readiness: generation answers its gRPC health check in time."""

    def __init__(self, forwarder: GenerationForwarder, deadline_seconds: float) -> None:
        self._forwarder = forwarder
        self._deadline = deadline_seconds

    async def handle(self, _: Request) -> Response:
        """200 when generation is SERVING, else 503: the edge's ``/readyz`` shape, a
        status and each backend's health (a diagnostic, not an API error)."""
        if await self._forwarder.is_serving(self._deadline):
            return JSONResponse({"status": "ready", "checks": {"generation": "SERVING"}})
        return JSONResponse(
            {"status": "unavailable", "checks": {"generation": "NOT_SERVING"}}, status_code=503
        )
