"""Schemathesis against the edge's own OpenAPI document, served by the real stack.

Every operation gets positive cases (valid per the schema) and negative ones
(schema-violating), with a valid bearer token. Checks: no 5xx, every status is
documented, bodies, content types and headers match the document. Bounded
(MAX_EXAMPLES per operation and mode) to stay within a few seconds.

The stack's gRPC servers live in the test's event loop, so Hypothesis runs in a
worker thread while the loop keeps serving them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.harness import Stack, make_token

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def _fuzz_operation(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]
) -> int:
    """Run one operation's cases; returns how many requests were sent."""
    sent = 0
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal sent
        with requests.Session() as session:
            case.call_and_validate(
                base_url=base_url, session=session, headers=headers, checks=checks, timeout=30
            )
        sent += 1

    try:
        run()
    except Unsatisfiable:
        # Nothing to negate (an operation without parameters or body, e.g. /healthz).
        if mode is not GenerationMode.NEGATIVE:
            raise
    return sent


def _fuzz_all(base_url: str, token: str) -> dict[str, int]:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json", timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        for mode in MODES:
            counts[f"{operation.label} {mode.value}"] = _fuzz_operation(
                operation, mode, base_url, headers
            )
    return counts


async def _in_thread(function: Callable[..., dict[str, int]], *args: Any) -> dict[str, int]:
    return await asyncio.to_thread(function, *args)


async def test_the_edge_conforms_to_its_openapi_document(stack: Stack) -> None:
    counts = await _in_thread(_fuzz_all, stack.edge.base_url, make_token(uuid.uuid4()))
    # Every operation was exercised; those with inputs in both modes.
    with_inputs = [
        "POST /api/v1/generations",
        "GET /api/v1/generations/{job_id}",
        "PATCH /api/v1/generations/{job_id}",
        "DELETE /api/v1/generations/{job_id}",
        "GET /public/renders/{render_id}/{file_name}",
    ]
    for label in with_inputs:
        assert counts[f"{label} negative"] > 0, "; ".join(f"{k}={v}" for k, v in counts.items())
    assert all(count > 0 for label, count in counts.items() if label.endswith("positive"))
    print("schemathesis requests per operation and mode:", counts)  # for the README figures
