"""Reading Replicate prediction objects (API answers and webhook bodies).

Strict where the domain depends on a field (``id``, ``status``), lenient
elsewhere: a missing, null or oddly shaped optional field becomes "absent"
rather than failing the whole event, because rejecting a terminal webhook over
a timestamp would leave the job to time out instead of finishing.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from generation.domain.provider import InvalidProviderPayload, Prediction, ProviderStatus

# Replicate ids are 26 lowercase alphanumerics; accept any plausible length so a
# format change upstream does not strand jobs, while keeping ids URL-safe.
_PREDICTION_ID = re.compile(r"[a-z0-9]{1,64}")
# RFC 3339 with 0..9 fractional digits, strictly: fromisoformat alone also takes other
# ISO 8601 forms (week dates, no seconds, the basic format without separators).
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?"
)
_STATUSES = {status.value: status for status in ProviderStatus}


def is_prediction_id(value: str) -> bool:
    """True when ``value`` looks like a Replicate prediction id (safe in a URL path)."""
    return _PREDICTION_ID.fullmatch(value) is not None


def is_http_url(value: str) -> bool:
    """True for absolute http(s) URLs with a host."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime from an RFC 3339 string; ``None`` if absent or unreadable."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        return None
    date, time, fraction, offset = match.groups()
    # Truncate (not round) to microseconds: rounding .9999999 would roll the second.
    micros = (fraction or "").ljust(6, "0")[:6]
    zone = "+00:00" if offset in (None, "Z", "z") else f"{offset[:3]}:{offset[-2:]}"
    try:
        # Near year 1 or 9999 an offset moves the moment out of datetime's range.
        return datetime.fromisoformat(f"{date}T{time}.{micros}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def output_urls(value: object) -> tuple[str, ...]:
    """The output as URLs: a string, a list of strings, or nothing.

    Entries that are not non-empty http(s) URL strings are dropped.
    """
    candidates: list[object] = value if isinstance(value, list) else [value]
    return tuple(item for item in candidates if isinstance(item, str) and is_http_url(item))


def _has_error(value: object) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list | dict):
        return bool(value)
    return True


def _load_object(payload: bytes) -> dict[str, Any]:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and oversized integers;
        # RecursionError absurdly deep nesting.
        raise InvalidProviderPayload("the payload is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidProviderPayload("the payload is not a JSON object")
    return document


def prediction_from_object(document: dict[str, Any]) -> Prediction:
    """Normalize one decoded prediction object; raises :class:`InvalidProviderPayload`."""
    prediction_id = document.get("id")
    if not isinstance(prediction_id, str) or not is_prediction_id(prediction_id):
        raise InvalidProviderPayload("the prediction has no valid id")
    status_text = document.get("status")
    status = _STATUSES.get(status_text) if isinstance(status_text, str) else None
    if status is None:
        raise InvalidProviderPayload("the prediction has no known status")
    return Prediction(
        id=prediction_id,
        status=status,
        output_urls=output_urls(document.get("output")),
        has_error=_has_error(document.get("error")),
        created_at=parse_timestamp(document.get("created_at")),
        started_at=parse_timestamp(document.get("started_at")),
        completed_at=parse_timestamp(document.get("completed_at")),
        data_removed=document.get("data_removed") is True,
        webhook_url=_webhook_url(document.get("webhook")),
    )


def _webhook_url(value: Any) -> str | None:
    """The ``webhook`` field: None when absent (or null), "" when it is no URL."""
    if value is None:
        return None
    return value if isinstance(value, str) and is_http_url(value) else ""


def parse_prediction(payload: bytes) -> Prediction:
    """Read a prediction from raw JSON bytes (an API answer or a webhook body)."""
    return prediction_from_object(_load_object(payload))
