"""Reading prediction objects: statuses, timestamps, outputs and broken payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from generation.domain.provider import InvalidProviderPayload, ProviderStatus
from generation.providers.replicate_parsing import output_urls, parse_prediction, parse_timestamp

ID = "ufawqhfynnddngldkgtslldrkq"


def encode(**fields: Any) -> bytes:
    return json.dumps({"id": ID, "status": "starting", **fields}).encode()


@pytest.mark.parametrize("status", [s.value for s in ProviderStatus])
def test_every_status_is_read(status: str) -> None:
    assert parse_prediction(encode(status=status)).status == ProviderStatus(status)


def test_aborted_is_terminal() -> None:
    assert parse_prediction(encode(status="aborted")).status.is_terminal


@pytest.mark.parametrize("status", ["queued", "SUCCEEDED", "", None, 3, ["succeeded"]])
def test_unknown_status_is_invalid(status: object) -> None:
    with pytest.raises(InvalidProviderPayload):
        parse_prediction(encode(status=status))


@pytest.mark.parametrize(
    ("webhook", "expected"),
    [
        (
            "https://hooks.example/api/v1/webhooks/replicate?job=1",
            "https://hooks.example/api/v1/webhooks/replicate?job=1",
        ),
        (None, None),
        ("", ""),
        ("not a url", ""),
        (["https://hooks.example/"], ""),
    ],
)
def test_the_webhook_url_is_read_when_it_is_one(webhook: object, expected: str | None) -> None:
    assert parse_prediction(encode(webhook=webhook)).webhook_url == expected
    assert parse_prediction(encode()).webhook_url is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-08-30T02:47:41.245Z", datetime(2025, 8, 30, 2, 47, 41, 245000, tzinfo=UTC)),
        ("2025-08-30T02:47:41.99397566Z", datetime(2025, 8, 30, 2, 47, 41, 993975, tzinfo=UTC)),
        ("2025-08-30T02:47:41.123456789Z", datetime(2025, 8, 30, 2, 47, 41, 123456, tzinfo=UTC)),
        ("2025-08-30T02:47:41.999999999Z", datetime(2025, 8, 30, 2, 47, 41, 999999, tzinfo=UTC)),
        ("2025-08-30T02:47:41.5Z", datetime(2025, 8, 30, 2, 47, 41, 500000, tzinfo=UTC)),
        ("2025-08-30T02:47:41.123456Z", datetime(2025, 8, 30, 2, 47, 41, 123456, tzinfo=UTC)),
        ("2025-08-30T02:47:41+00:00", datetime(2025, 8, 30, 2, 47, 41, tzinfo=UTC)),
        ("2025-08-30T02:47:41.245+00:00", datetime(2025, 8, 30, 2, 47, 41, 245000, tzinfo=UTC)),
        ("2025-08-30T12:47:41+10:00", datetime(2025, 8, 30, 2, 47, 41, tzinfo=UTC)),
        ("2025-08-29T21:47:41.1-0500", datetime(2025, 8, 30, 2, 47, 41, 100000, tzinfo=UTC)),
        ("2025-08-30t02:47:41z", datetime(2025, 8, 30, 2, 47, 41, tzinfo=UTC)),
        ("2025-08-30 02:47:41", datetime(2025, 8, 30, 2, 47, 41, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "yesterday",
        "2025-13-01T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01T00:00:00.1234567890Z",
        "2025-01-01",
        1735689600,
        ["2025-01-01T00:00:00Z"],
        # Valid forms whose offset moves them outside datetime's years 1-9999.
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_unreadable_timestamps_become_absent(value: object) -> None:
    assert parse_timestamp(value) is None


def test_timestamps_of_a_full_prediction() -> None:
    prediction = parse_prediction(
        encode(
            status="succeeded",
            created_at="2025-08-30T02:47:41.245Z",
            started_at="2025-08-30T02:47:41.99397566Z",
            completed_at="2025-08-30T02:47:51.3Z",
        )
    )
    assert prediction.created_at == datetime(2025, 8, 30, 2, 47, 41, 245000, tzinfo=UTC)
    assert prediction.started_at == datetime(2025, 8, 30, 2, 47, 41, 993975, tzinfo=UTC)
    assert prediction.completed_at == datetime(2025, 8, 30, 2, 47, 51, 300000, tzinfo=UTC)


def test_missing_optional_fields_are_absent() -> None:
    prediction = parse_prediction(encode())
    assert prediction.output_urls == ()
    assert prediction.has_error is False
    assert prediction.created_at is None
    assert prediction.started_at is None
    assert prediction.completed_at is None
    assert prediction.data_removed is False


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("https://replicate.delivery/a/tmp1.jpg", ("https://replicate.delivery/a/tmp1.jpg",)),
        (
            ["https://replicate.delivery/a/1.jpg", "http://cdn.test/2.png"],
            ("https://replicate.delivery/a/1.jpg", "http://cdn.test/2.png"),
        ),
        (
            ["https://r.test/1.jpg", "", None, 7, {"url": "x"}, "ftp://r.test/2", "data:,x"],
            ("https://r.test/1.jpg",),
        ),
        (None, ()),
        ("", ()),
        ("not a url", ()),
        ("file:///etc/passwd", ()),
        ("https://", ()),
        ("http://[broken", ()),
        ({"image": "https://r.test/1.jpg"}, ()),
        (42, ()),
        ([], ()),
    ],
)
def test_output_normalization(output: object, expected: tuple[str, ...]) -> None:
    assert output_urls(output) == expected
    assert parse_prediction(encode(status="succeeded", output=output)).output_urls == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, False),
        ("", False),
        ("   ", False),
        ("E1001: prediction failed", True),
        ({"message": "boom"}, True),
        ({}, False),
        (False, False),
    ],
)
def test_has_error(error: object, expected: bool) -> None:
    assert parse_prediction(encode(status="failed", error=error)).has_error is expected


def test_data_removed_needs_a_true_flag() -> None:
    assert parse_prediction(encode(status="succeeded", data_removed=True)).data_removed is True
    assert parse_prediction(encode(status="succeeded", data_removed="yes")).data_removed is False


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"a string"',
        b"null",
        b"42",
        b"{}",
        b'{"status": "starting"}',
        b'{"id": "' + ID.encode() + b'"}',
        b'{"id": null, "status": "starting"}',
        b'{"id": 12345, "status": "starting"}',
        b'{"id": "../admin", "status": "starting"}',
        b'{"id": "ABC", "status": "starting"}',
        b'{"id": "' + ID.encode() + b'", "status": "starting"',
        b"1" * 5000,
    ],
)
def test_invalid_payloads(payload: bytes) -> None:
    with pytest.raises(InvalidProviderPayload):
        parse_prediction(payload)


def _nested(depth: int) -> bytes:
    head = b'{"id": "' + ID.encode() + b'", "status": "starting", "logs": '
    return head + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_absurd_nesting_is_an_invalid_payload(depth: int) -> None:
    with pytest.raises(InvalidProviderPayload):
        parse_prediction(_nested(depth))


def test_moderate_nesting_in_ignored_fields_is_fine() -> None:
    assert parse_prediction(_nested(100)).id == ID


def test_unrelated_fields_are_ignored() -> None:
    prediction = parse_prediction(
        encode(
            status="processing",
            logs="Generating image with Gemini Flash...",
            metrics={"predict_time": 9.8},
            urls={"get": "https://api.replicate.com/v1/predictions/x"},
            version="hidden",
            deadline="2025-08-30T03:47:41Z",
        )
    )
    assert prediction.status is ProviderStatus.PROCESSING
