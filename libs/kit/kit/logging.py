"""Structured JSON logs: one event a line, with request and job context.

Every service calls :func:`configure_logging` once at start. Context such as the
request id is bound with :func:`bind_context` (contextvars, so it follows the
asyncio task). A redaction step drops fields that must never be logged (prompts,
tokens, signed URLs) even if a caller passes them by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are never written, whoever logs them.
_FORBIDDEN_KEYS = frozenset(
    {"prompt", "token", "authorization", "password", "secret", "signed_url", "email", "body"}
)
# Query strings carry presigned signatures and tokens: strip them from any URL.
_URL_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _FORBIDDEN_KEYS:
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = _URL_QUERY.sub(r"\1?[redacted]", event[key])
    return event


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON logs on stdout for ``service``; idempotent."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper(), force=True)
    # Third-party loggers are noisy at INFO and may print URLs with signatures.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # No file argument: each logger writes to the sys.stdout of its time of creation.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger; ``name`` becomes the ``component`` field.

    The proxy binds lazily, so module-level loggers created before
    :func:`configure_logging` still render JSON through its processors.
    """
    logger: structlog.stdlib.BoundLogger = (
        structlog.get_logger(component=name) if name else structlog.get_logger()
    )
    return logger


def bind_context(**values: Any) -> None:
    """Bind values (e.g. ``requestId``) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**values)


def clear_context(*keys: str) -> None:
    """Unbind the given keys from the current task's context."""
    structlog.contextvars.unbind_contextvars(*keys)
