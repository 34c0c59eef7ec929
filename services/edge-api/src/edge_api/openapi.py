"""The OpenAPI document: error responses, hand-read request bodies, shared enums, final touches.

Request bodies of POST and PATCH are read by our own streaming code (not by
FastAPI), so their schemas are declared here. FastAPI's default 422 responses
are removed: request validation errors are answered as 400 VALIDATION_ERROR.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from edge_api.openapi_enums import share_enums
from edge_api.schemas import IDEMPOTENCY_KEY_PATTERN, ErrorBody, JobStatusName
from kit.errors import ALL_ERRORS
from kit.modes import MODE_KEYS
from kit.runtime_config import RuntimeConfig

# Every code an error body may carry: the domain errors and the edge's routing answers.
ERROR_CODES = tuple(sorted({error.code for error in ALL_ERRORS} | {"METHOD_NOT_ALLOWED"}))
# The names a generated client gets for each operation (a test fails on a route without one).
OPERATION_IDS = {
    ("/api/v1/generations", "post"): "submitGeneration",
    ("/api/v1/generations", "get"): "listGenerations",
    ("/api/v1/generations/{job_id}", "get"): "getGeneration",
    ("/api/v1/generations/{job_id}", "patch"): "cancelGeneration",
    ("/api/v1/generations/{job_id}", "delete"): "deleteGeneration",
    ("/api/v1/generations/{job_id}/events", "get"): "watchGeneration",
    ("/api/v1/usage", "get"): "getUsage",
    ("/api/v1/catalog", "get"): "getCatalog",
    ("/healthz", "get"): "getLiveness",
    ("/readyz", "get"): "getReadiness",
    ("/public/renders/{render_id}/{file_name}", "get"): "getRenderFile",
}

_STATUS_DESCRIPTIONS = {
    400: "VALIDATION_ERROR: bad fields, wrong image count for the mode, bad or disguised "
    "file, moderation rejection, malformed multipart.",
    401: "UNAUTHORIZED: missing, malformed or expired bearer token.",
    402: "LIMIT_EXCEEDED: no generations left this month (`periodEnd` says when it resets).",
    404: "NOT_FOUND: unknown id, or a job of another user (for a refine: a source that is "
    "not yours, not succeeded, deleted or without that variant).",
    405: "METHOD_NOT_ALLOWED.",
    408: "REQUEST_TIMEOUT: the upload arrived slower than the minimum rate (averaged over a "
    "sliding window after a grace period) or not within the total read timeout; the "
    "connection is closed.",
    409: "TOO_MANY_INFLIGHT (a job is already running), JOB_NOT_CANCELLABLE (the job "
    "already finished) or JOB_NOT_FINISHED (the job is still running).",
    413: "VALIDATION_ERROR: a file or the whole request is too large.",
    415: "VALIDATION_ERROR: the request's content type, or a file's image type, is not supported.",
    422: "IDEMPOTENCY_KEY_REUSED: the key was already used for a different request.",
    429: "TOO_MANY_REQUESTS: too many uploads of this user in progress, or no upload slot "
    "free in time (also Envoy's rate limit on uploads). `Retry-After` says when to retry.",
    500: "INTERNAL_ERROR.",
    502: "UPSTREAM_ERROR: the image provider failed after retries.",
    503: "UPSTREAM_ERROR: a backend service is unavailable; retry later.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given error statuses."""
    return {
        status: {"model": ErrorBody, "description": _STATUS_DESCRIPTIONS[status]}
        for status in statuses
    }


_TEXT_PROPERTIES: dict[str, Any] = {
    "mode": {
        "type": "string",
        "enum": list(MODE_KEYS),
        "description": "`redesign` and `staging` need input1; `compose` needs input1 (the "
        "room) and input2 (the reference); `imagine` needs no image and a prompt.",
    },
    # maxLength is the runtime config's (set when the document is built).
    "prompt": {"type": "string", "description": "Required for imagine."},
    "roomType": {"type": "string", "description": "A room type key of the runtime config."},
    "style": {"type": "string", "description": "A style key of the runtime config."},
    "idempotencyKey": {
        "type": "string",
        "pattern": IDEMPOTENCY_KEY_PATTERN,
        "description": "Same as the Idempotency-Key header (the header wins; both given "
        "and different is a 400).",
    },
}
# Refine an earlier result: multipart's flat fields, JSON's `source` object.
_SOURCE_FIELDS: dict[str, Any] = {
    "sourceGenerationId": {
        "type": "string",
        "description": "Refine: one of your own succeeded jobs; its variant becomes input1 "
        "(upload input2 only for compose). Not yours, not succeeded or deleted: 404.",
    },
    "sourceVariantIdx": {
        "type": "integer",
        "minimum": 0,
        "maximum": 999,
        "description": "With sourceGenerationId: which variant (0 when left out).",
    },
}
_SOURCE_OBJECT: dict[str, Any] = {
    "source": {
        "type": "object",
        "description": "Refine: one of your own succeeded jobs whose variant becomes input1.",
        "properties": {
            "generationId": {"type": "string"},
            "variantIdx": {"type": "integer", "minimum": 0, "maximum": 999, "default": 0},
        },
        "required": ["generationId"],
        "additionalProperties": False,
    }
}
_FILE = {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP image."}

SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        **_TEXT_PROPERTIES,
                        **_SOURCE_FIELDS,
                        "input1": _FILE,
                        "input2": _FILE,
                    },
                    "required": ["mode"],
                    "additionalProperties": False,
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {**_TEXT_PROPERTIES, **_SOURCE_OBJECT},
                    "required": ["mode"],
                    "additionalProperties": False,
                    "description": "For modes that need no uploaded image: imagine, or a "
                    "refine (`source`) of redesign or staging.",
                }
            },
        },
    }
}

CANCEL_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"action": {"type": "string", "enum": ["cancel"]}},
                    "required": ["action"],
                    "additionalProperties": False,
                }
            }
        },
    }
}


def _strip_default_422(document: dict[str, Any]) -> None:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            response = operation.get("responses", {}).get("422")
            if response and "HTTPValidationError" in str(response):
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


_REQUEST_ID_HEADER = {
    "description": "Our request id for this answer (always new; quote it in reports).",
    "schema": {"type": "string"},
}
_SUBMIT_HEADERS = {
    "Location": {"description": "Path of the job.", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when an earlier submission with the same key was returned.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}

_RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer"},
}


def _add_headers(document: dict[str, Any]) -> None:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Request-ID"] = _REQUEST_ID_HEADER
    responses = document["paths"]["/api/v1/generations"]["post"]["responses"]
    responses["202"]["headers"].update(_SUBMIT_HEADERS)
    responses["429"]["headers"]["Retry-After"] = _RETRY_AFTER_HEADER


def _add_choices(document: dict[str, Any], runtime_config: RuntimeConfig) -> None:
    """The config's choices and limits, exactly as the server enforces them."""
    styles, rooms = sorted(runtime_config.styles), sorted(runtime_config.room_types)
    submit = document["paths"]["/api/v1/generations"]["post"]["requestBody"]["content"]
    for content in submit.values():
        properties = content["schema"]["properties"]
        properties["roomType"] = {**properties["roomType"], "enum": rooms}
        properties["style"] = {**properties["style"], "enum": styles}
        properties["prompt"] = {
            **properties["prompt"],
            "maxLength": runtime_config.prompts.max_length,
        }
        for name in ("input1", "input2"):
            if name in properties:
                properties[name] = {
                    **properties[name],
                    "maxLength": runtime_config.uploads.max_bytes,
                }
    schemas = document["components"]["schemas"]
    settings = schemas["JobSettingsOut"]["properties"]
    for name, keys in (("roomType", rooms), ("style", styles)):
        settings[name] = {"anyOf": [{"type": "string", "enum": keys}, {"type": "null"}]}
    schemas["ErrorDetail"]["properties"]["code"]["enum"] = list(ERROR_CODES)


def _share_enums(document: dict[str, Any], runtime_config: RuntimeConfig) -> None:
    """One named type per kind of choice, so a generated client has one class for each."""
    share_enums(
        document,
        {
            "Mode": list(MODE_KEYS),
            "RoomType": sorted(runtime_config.room_types),
            "Style": sorted(runtime_config.styles),
            "JobStatus": list(get_args(JobStatusName)),
        },
    )


def _add_operation_ids(document: dict[str, Any]) -> None:
    for path, path_item in document.get("paths", {}).items():
        for method, operation in path_item.items():
            name = OPERATION_IDS.get((path, method))
            if name is not None:
                operation["operationId"] = name


def install_openapi(app: FastAPI, runtime_config: RuntimeConfig) -> None:
    """Replace ``app.openapi`` with the finished (and cached) document."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            # Deep copy: the document must not share dicts with the constants above.
            document = copy.deepcopy(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
            _strip_default_422(document)
            _add_choices(document, runtime_config)
            _share_enums(document, runtime_config)
            _add_headers(document)
            _add_operation_ids(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
