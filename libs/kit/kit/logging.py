"""Structured JSON logs: one event a line, with request and job context.

Every service calls :func:`configure_logging` once at start. Context such as the
request id is bound with :func:`bind_context` (contextvars, so it follows the
asyncio task). A redaction step drops fields that must never be logged (prompts,
tokens, signed URLs) even if a caller passes them by mistake, and scrubs the same
from free text: messages, exception text and tracebacks, and the records of the
stdlib loggers (uvicorn, grpc, SQLAlchemy, Alembic), which the root handler renders
through the same processors, so every line is one JSON object with the same fields.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from types import TracebackType
from typing import Any

import structlog
from opentelemetry import trace
from structlog.typing import Processor

# Keys whose values are never written, whoever logs them.
_FORBIDDEN_KEYS = frozenset(
    {"prompt", "token", "authorization", "password", "secret", "signedurl", "email", "body"}
)
# A field named like one of these, in any spelling (access_token, apiToken,
# webhook-signature, composedPrompt), is redacted whole too.
_FORBIDDEN_ENDINGS = ("prompt", "token", "password", "secret", "signature")


@functools.lru_cache(maxsize=4096)
def _forbidden_key(key: str) -> bool:
    """Whether a field named ``key`` is never logged (cached: field names are few)."""
    name = key.lower().replace("_", "").replace("-", "")
    return name in _FORBIDDEN_KEYS or name.endswith(_FORBIDDEN_ENDINGS)


_REDACTED = "[redacted]"


def _scrub_url(match: re.Match[str]) -> str:
    """A URL of any scheme without the password of its userinfo (``user:password@``,
    up to the last ``@``: a password may hold a raw ``/`` or ``@``) or its query."""
    scheme, _, rest = match.group(0).partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if at and colon:
        rest = user + colon + _REDACTED + at + host
    rest, question, _ = rest.partition("?")
    return scheme + "://" + rest + (question + _REDACTED if question else "")


# Patterns of secrets inside free text (an exception message, a traceback, a repr),
# each with what replaces a match. Log text may be huge and shaped by an attacker, so
# no pattern can fail after a long scan: every unbounded run either always completes
# a match (optional closing quotes, values up to the end of the line) or is bounded,
# which keeps redaction linear in the text.
_TEXT_SECRETS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Query strings carry presigned signatures and tokens, userinfo a password (a DSN's
    # postgresql+asyncpg://user:password@host): strip both from a URL of any scheme, in
    # any case (HTTPS://). The scheme is bounded, so each start scans at most 31 chars.
    (re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s\"']*"), _scrub_url),
    # A bare path's query string, dropped as a full URL's is: urllib3 logs a request as
    # 'http://host:port "PUT /bucket/key?X-Amz-Signature=... HTTP/1.1"'. The path starts
    # after a space, quote or bracket (not inside a URL, already scrubbed) and is
    # bounded, so each start scans at most 2 KiB.
    (re.compile(r"(?<![\w/:.%-])(/[^\s?\"'#]{0,2048})\?[^\s\"'#]*"), r"\1?" + _REDACTED),
    # A signature or credential outside a URL or a path (a form, a path glued to other
    # text): S3's X-Amz-Signature and X-Amz-Credential, CloudFront's Signature.
    # URL-encoded too (a presigned URL inside another's query: X-Amz-Signature%3D...).
    (
        re.compile(r"(?ai:(signature|credential)(=|%3d))[^\s&\"'#]*"),
        r"\1\2" + _REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+"), r"\1 " + _REDACTED),
    # JWTs, Replicate tokens, webhook secrets: wherever they show up.
    (re.compile(r"\beyJ[\w-]*(?:\.[\w-]*){0,2}"), _REDACTED),
    (re.compile(r"\b(r8|whsec)_[\w+/=-]+"), r"\1_" + _REDACTED),
    # A Standard Webhooks signature (``webhook-signature: v1,<base64>``), in a header
    # dump or a repr, whatever it is filed under.
    (re.compile(r"\bv1,[A-Za-z0-9+/]{16,}={0,2}"), "v1," + _REDACTED),
    # A field named like a secret, in a repr, a dict, JSON, a form or a proto dump:
    # prompt='...', "token": "...", prompt: "...", password=...
    (
        re.compile(
            r"(?i)(\b\w{0,40}(?:prompt|token|secret|password|authorization)\w{0,40}"
            r"\\{0,8}['\"]?\s{0,5}[:=]\s{0,5})"
            # JSON escaped once or more inside other JSON or a repr: {\"prompt\": \"...\"}
            r"(\\{1,8}\"[^\n]*?(?:\\{1,8}\"|(?=\n)|\Z)|'[^'\n]*'?|\"[^\"\n]*\"?|[^\s,;)}\]]+)"
        ),
        r"\1" + _REDACTED,
    ),
    # Values the database or the driver echo in their own messages: PostgreSQL's
    # "Key (column)=(value)", "Failing row contains (...)" (last) and "invalid input
    # syntax for type integer: \"value\"", asyncpg's "invalid input for query argument
    # $1: 'value' (...)". The value runs to the end of the line when its closing
    # bracket or quote is not found.
    (re.compile(r"(Key \([^)\n]{0,200}\)=\()[^\n]*"), r"\1" + _REDACTED + ")"),
    (re.compile(r"(for type [\w ]{1,64}: )\"[^\"\n]*\"?"), r"\1" + _REDACTED),
    (
        re.compile(r"(query argument \$\d{1,5}: )('[^'\n]*'?|\"[^\"\n]*\"?|\S+)"),
        r"\1" + _REDACTED,
    ),
    # PostgreSQL's DETAIL of a NOT NULL or CHECK violation: the whole row, prompts too.
    (re.compile(r"(Failing row contains \()[^\n]*"), r"\1" + _REDACTED + ")"),
    # pydantic's ValidationError echoes the input: "[type=..., input_value='...',
    # input_type=str]". Up to the last ", input_type=...]" of the next 200 chars (the
    # value's repr is cut to about 50, and may itself hold ", input_type=x]"), else to
    # the end of the line.
    (
        re.compile(r"(input_value=)(?:[^\n]{0,200}(?=, input_type=\w{1,64}\])|[^\n]*)"),
        r"\1" + _REDACTED,
    ),
    # E-mail addresses: personal data, wherever a client put one (a path, a field), also
    # percent-encoded (``%40``: a header or query as sent); not a URL's user
    # (scheme://user@host.tld, its password gone already).
    (
        re.compile(r"(?<![\w.%+-])(?<!//)[\w.%+-]{1,64}(?:@|%40)[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"),
        _REDACTED,
    ),
)


_SECRET_WORDS = ("prompt", "token", "secret", "password", "authorization")


def _may_name_a_secret(text: str) -> bool:
    """The pre-check of the secret-named field pattern (lower() once, not per word)."""
    if "=" not in text and ":" not in text:
        return False
    if not text.isascii():
        return True
    low = text.lower()
    return any(word in low for word in _SECRET_WORDS)


# What each pattern above cannot match without: a substring test (tens of nanoseconds)
# lets most values skip the regular expressions, which were most of a log line's cost
# (every line of every request: ids, event names, timestamps). Checked on the text as
# it is when the pattern's turn comes, so the result is the same as running them all.
_NEEDS: tuple[Callable[[str], bool], ...] = (
    lambda text: "://" in text,
    lambda text: "?" in text and "/" in text,
    # ASCII-only case folding ((?a)), so lower() finds every match, non-ASCII text too.
    lambda text: "signature" in (low := text.lower()) or "credential" in low,
    # The two patterns with Unicode case folding also run on any non-ASCII text: it
    # lets letters such as U+017F or U+212A match 's' and 'k'.
    lambda text: not text.isascii() or "bearer" in (low := text.lower()) or "basic" in low,
    lambda text: "eyJ" in text,
    lambda text: "r8_" in text or "whsec_" in text,
    lambda text: "v1," in text,
    _may_name_a_secret,
    lambda text: "Key (" in text,
    lambda text: "for type " in text,
    lambda text: "query argument $" in text,
    lambda text: "Failing row contains (" in text,
    lambda text: "input_value=" in text,
    lambda text: "@" in text or "%40" in text,
)
_CHECKED_PATTERNS = tuple(zip(_NEEDS, _TEXT_SECRETS, strict=True))


def redact_text(text: str) -> str:
    """``text`` with URL query strings and passwords, signatures, bearer values, tokens,
    secret-named fields and input echoed by the database or pydantic replaced by
    ``[redacted]``."""
    for needs, (pattern, replacement) in _CHECKED_PATTERNS:
        if needs(text):
            text = pattern.sub(replacement, text)
    return text


# How deep redaction follows nested values (a dict in a list in a dict...); anything
# deeper is not written at all.
_MAX_NESTING = 6
_PLAIN = (int, float, bool, type(None))


def _scrubbed(value: Any, depth: int = 0) -> Any:
    """``value`` as it may be written: strings redacted, forbidden keys of nested
    mappings dropped, containers followed, anything else rendered (``repr``, as the
    JSON renderer would) and redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth >= _MAX_NESTING:
        return _REDACTED
    if isinstance(value, Mapping):
        return {
            str(key): _REDACTED if _forbidden_key(str(key)) else _scrubbed(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrubbed(item, depth + 1) for item in value]
    return redact_text(repr(value))


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Runs after ``format_exc_info``, so the ``exception`` text is scrubbed too. Nested
    values are scrubbed as top-level ones are: a dict passed by mistake keeps no prompt."""
    for key in list(event):
        if _forbidden_key(key):
            event[key] = _REDACTED
        elif not isinstance(event[key], _PLAIN):
            event[key] = _scrubbed(event[key])
    return event


def _component(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A stdlib record's logger name (``uvicorn.error``, ``sqlalchemy.engine``) becomes
    its ``component``, the field our own loggers use for the same thing."""
    record = event.get("_record")
    if record is not None and "component" not in event:
        event["component"] = record.name
    return event


class _Service:
    """Names the service on every line, also those of threads (grpc's, a driver's)
    that never saw the context bound at start."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event.setdefault("service", self.service)
        return event


def _trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The ids of the active span (kit/tracing.py), so a line leads to its trace.

    With tracing off there is never a valid span: one context lookup, no fields.
    """
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _processors(service: str) -> list[Processor]:
    """The chain every line goes through, ours and the stdlib's alike."""
    return [
        structlog.contextvars.merge_contextvars,
        _Service(service),
        _trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]


def _renderers() -> list[Processor]:
    """Tracebacks become text before redaction, so they are scrubbed too."""
    return [
        structlog.processors.format_exc_info,
        _redact,
        structlog.processors.JSONRenderer(),
    ]


def _stdlib_handler(service: str) -> logging.Handler:
    """The root handler: stdlib records (uvicorn, asyncio, SQLAlchemy, Alembic, grpc,
    warnings) rendered as the same JSON lines as ours."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_processors(service), _component],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers()],
        )
    )
    return handler


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """An exception that ends the process is one more JSON line, not a bare traceback
    on stderr."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    get_logger("uncaught").critical("process.crashed", exc_info=(kind, error, trace))


def _log_thread_crash(crash: threading.ExceptHookArgs) -> None:
    """The same for an exception that ends a thread (a driver's, grpc's, ours)."""
    if crash.exc_type is SystemExit:
        return
    get_logger("uncaught").critical(
        "thread.crashed",
        thread=crash.thread.name if crash.thread else None,
        exc_info=(crash.exc_type, crash.exc_value, crash.exc_traceback),
    )


def _log_unraisable(unraisable: Any) -> None:
    """And for one Python cannot raise (in a ``__del__``, a finalizer, a closed loop's
    callback): one JSON line, not its ``Exception ignored in`` block on stderr."""
    error = unraisable.exc_value
    get_logger("uncaught").error(
        "process.unraisable",
        message=unraisable.err_msg or "Exception ignored",
        exc_info=(unraisable.exc_type, error, unraisable.exc_traceback) if error else None,
    )


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON logs on stdout for ``service``, stdlib loggers included; idempotent."""
    logging.basicConfig(handlers=[_stdlib_handler(service)], level=level.upper(), force=True)
    # Python's warnings go to the "py.warnings" logger instead of plain text on stderr.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_crash
    sys.unraisablehook = _log_unraisable
    # Third-party loggers are noisy at INFO and may print URLs with signatures.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*_processors(service), *_renderers()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # No file argument: each logger writes to the sys.stdout of its time of creation.
        # One write a line (print() makes two): a stdlib record from another thread
        # cannot land between a line and its newline.
        logger_factory=structlog.WriteLoggerFactory(),
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


# What a caller's request id may look like to be logged at all: short, and nothing a
# log viewer or a header could misread (no spaces, quotes, control characters).
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_ids(incoming: str | None) -> dict[str, str]:
    """The log fields of one request: ``requestId`` is always ours (new, so a caller
    can neither choose nor collide with it); the caller's id is kept beside it as
    ``clientRequestId`` only when well-formed."""
    ids = {"requestId": uuid.uuid4().hex}
    if incoming and _CLIENT_REQUEST_ID.fullmatch(incoming):
        ids["clientRequestId"] = incoming
    return ids


def bind_context(**values: Any) -> None:
    """Bind values (e.g. ``requestId``) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**values)


def clear_context(*keys: str) -> None:
    """Unbind the given keys from the current task's context."""
    structlog.contextvars.unbind_contextvars(*keys)
