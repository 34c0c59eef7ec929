"""Validation of create-prediction bodies against google/nano-banana's schema.

Replicate answers a bad body with 422 and a list of ``invalid_fields``; the
emulator does the same, and is strict where the real service is undocumented
(unknown fields are refused) so adapter mistakes surface in tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from replicate_emulator.images import data_uri_bytes
from replicate_emulator.prediction import EVENTS, MODEL

ASPECT_RATIOS = (
    "match_input_image",
    "1:1",
    "2:3",
    "3:2",
    "3:4",
    "4:3",
    "4:5",
    "5:4",
    "9:16",
    "16:9",
    "21:9",
)
OUTPUT_FORMATS = ("jpg", "png")
MAX_IMAGE_INPUTS = 10
MODEL_BODY_FIELDS = frozenset({"input", "webhook", "webhook_events_filter"})
VERSION_BODY_FIELDS = MODEL_BODY_FIELDS | {"version"}
_INPUT_FIELDS = frozenset({"prompt", "image_input", "aspect_ratio", "output_format"})
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class InvalidField:
    """One entry of a 422 answer's ``invalid_fields``."""

    type: str
    field: str
    description: str

    def to_json(self) -> dict[str, str]:
        """The wire shape."""
        return {"type": self.type, "field": self.field, "description": self.description}


@dataclass
class CreateRequest:
    """A validated create body."""

    input: dict[str, Any]
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    problems: list[InvalidField] = field(default_factory=list)


def is_http_url(value: object) -> bool:
    """True for an absolute http(s) URL with a host."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in {"http", "https"} and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket, or a port out of range
        return False


def known_version(version: object) -> bool:
    """True when ``version`` names google/nano-banana (owner/name[:id] or a 64-hex id)."""
    if not isinstance(version, str):
        return False
    return version == MODEL or version.startswith(MODEL + ":") or bool(_VERSION_ID.match(version))


def validate_create(body: object, allowed: frozenset[str]) -> CreateRequest:
    """Check a create body; the result's ``problems`` is empty when it is valid."""
    request = CreateRequest(input={})
    if not isinstance(body, dict):
        request.problems.append(InvalidField("invalid_type", "(root)", "Expected an object"))
        return request
    for name in sorted(set(body) - allowed):
        request.problems.append(
            InvalidField(
                "additional_property_not_allowed",
                name,
                f"Property {name} is not allowed",
            )
        )
    request.input = _validate_input(body.get("input"), request.problems)
    webhook = body.get("webhook")
    if webhook is not None and not is_http_url(webhook):
        request.problems.append(
            InvalidField("format", "webhook", "Does not match format 'uri' (http or https)")
        )
    request.webhook = webhook if isinstance(webhook, str) else None
    request.webhook_events_filter = _validate_events(
        body.get("webhook_events_filter"), request.problems
    )
    return request


def _validate_events(events: object, problems: list[InvalidField]) -> list[str] | None:
    if events is None:
        return None
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        problems.append(
            InvalidField("invalid_type", "webhook_events_filter", "Expected an array of strings")
        )
        return None
    for index, event in enumerate(events):
        if event not in EVENTS:
            problems.append(
                InvalidField(
                    "enum",
                    f"webhook_events_filter.{index}",
                    f"webhook_events_filter.{index} must be one of: {', '.join(EVENTS)}",
                )
            )
    return list(events)


def _validate_input(value: object, problems: list[InvalidField]) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "required" if value is None else "invalid_type"
        problems.append(InvalidField(kind, "input", "input is required and must be an object"))
        return {}
    for name in sorted(set(value) - _INPUT_FIELDS):
        problems.append(
            InvalidField(
                "additional_property_not_allowed",
                f"input.{name}",
                f"Property {name} is not allowed",
            )
        )
    prompt = value.get("prompt")
    if prompt is None:
        problems.append(InvalidField("required", "input.prompt", "prompt is required"))
    elif not isinstance(prompt, str):
        problems.append(_type_error("input.prompt", "string", prompt))
    _check_image_input(value.get("image_input", []), problems)
    _check_enum(value, "aspect_ratio", ASPECT_RATIOS, problems)
    _check_enum(value, "output_format", OUTPUT_FORMATS, problems)
    # Echoed as sent, like Replicate does; the engine applies the defaults.
    return dict(value)


def _check_image_input(images: object, problems: list[InvalidField]) -> None:
    if not isinstance(images, list):
        problems.append(_type_error("input.image_input", "array", images))
        return
    if len(images) > MAX_IMAGE_INPUTS:
        problems.append(
            InvalidField(
                "array_max_items",
                "input.image_input",
                f"Array must have at most {MAX_IMAGE_INPUTS} items",
            )
        )
    for index, item in enumerate(images):
        # A file input is a URI: a URL to fetch, or the file itself as a data: URI.
        if not (is_http_url(item) or (isinstance(item, str) and data_uri_bytes(item) is not None)):
            problems.append(
                InvalidField("format", f"input.image_input.{index}", "Does not match format 'uri'")
            )


def _check_enum(
    value: dict[str, Any], name: str, choices: tuple[str, ...], problems: list[InvalidField]
) -> None:
    if name in value and value[name] not in choices:
        problems.append(
            InvalidField(
                "enum", f"input.{name}", f"input.{name} must be one of: {', '.join(choices)}"
            )
        )


def _type_error(field_name: str, expected: str, given: object) -> InvalidField:
    return InvalidField(
        "invalid_type",
        field_name,
        f"Invalid type. Expected: {expected}, given: {type(given).__name__}",
    )


_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|ms|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_LONGEST_DURATION_SECONDS = (2**63 - 1) / 1e9


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``30s``, ``5m``, ``1h2m3s``, ``250ms``), or None."""
    text = text.strip()
    if not _DURATION.match(text):
        return None
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    # Past Go's longest duration (about 292 years) the parse fails, as Replicate's does.
    return seconds if seconds <= _LONGEST_DURATION_SECONDS else None
