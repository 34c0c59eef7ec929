"""Where spans go: the services' OTel SDK and `make run`'s Envoy read the same variables."""

from __future__ import annotations

import pytest

from kit.tracing import traces_url


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            "http://collector:4318/v1/traces",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
            "http://collector:4318/v1/traces",
        ),
        # The traces variable is a whole URL, used as is, and wins over the base.
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example:4318/custom",
            },
            "https://traces.example:4318/custom",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
            "http://c:4318/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, None),
    ],
)
def test_the_traces_url_follows_the_sdk_variables(
    env: dict[str, str], expected: str | None
) -> None:
    assert traces_url(env) == expected
