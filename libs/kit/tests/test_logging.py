"""Logs are JSON lines and never carry prompts, tokens or URL signatures."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from kit.logging import bind_context, clear_context, configure_logging, get_logger


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


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    configure_logging("tests")  # as the test kit configured it for the whole run
