"""Every job transition is logged with its four fields and counted, exactly once, also on
the paths a submission takes when it is cut short or usage is away.

Lines are read as the services render them (JSON, redacted), from a log captured for
the test; the counts from the process's Prometheus registry.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TextIO, cast

import pytest
import structlog
from prometheus_client import REGISTRY

from generation.domain import job_record
from generation.domain.provider import ProviderUnavailable
from generation.domain.submission import submit_generation
from generation.domain.submit_request import SubmitCommand
from generation.domain.sweep import sweep_once
from kit.errors import ServiceUnavailable
from kit.logging import configure_logging
from testkit.stack import Stack
from tests.e2e.harness import User

FOUR = ("ownerId", "jobId", "predictionId", "status")


class Captured:
    """Every line the loggers write while the test runs."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._chunks.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            text = "".join(self._chunks)
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def logs() -> Iterator[Captured]:
    captured = Captured()
    configure_logging("tests", "INFO")
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(cast(TextIO, captured)))
    try:
        yield captured
    finally:
        configure_logging("tests", "INFO")


def _transitions() -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in REGISTRY.collect():
        if family.name == "generation_job_transitions":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["status"], sample.labels["source"])] = sample.value
    return counts


def _moved(before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    after = _transitions()
    return {key: n - before.get(key, 0.0) for key, n in after.items() if n != before.get(key)}


async def test_a_submission_cut_off_after_its_row_was_written_logs_and_counts_starting(
    stack: Stack, logs: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller leaves while the row's INSERT commits: the job was ``starting``, then
    ``failed``/INTERRUPTED; both transitions are logged and counted (a failed/submit
    count without its starting/submit breaks every ratio built on the counter)."""
    real_insert = job_record._insert
    inserted = asyncio.Event()

    async def slow_answer(ctx: Any, job: Any) -> Any:
        outcome = await real_insert(ctx, job)
        inserted.set()
        await asyncio.sleep(1.0)  # the committed write's answer is still on its way
        return outcome

    monkeypatch.setattr(job_record, "_insert", slow_answer)
    before = _transitions()
    owner = uuid.uuid4()
    command = SubmitCommand(
        owner_id=owner,
        idempotency_key=None,
        mode="imagine",
        prompt="A cosy den",
        room_type=None,
        style=None,
        inputs=(),
        request_base_url="http://127.0.0.1:1",
    )
    task = asyncio.ensure_future(submit_generation(stack.ctx, command))
    await asyncio.wait_for(inserted.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    lines = [line for line in logs.events() if line.get("ownerId") == str(owner)]
    by_event = {line["event"]: line for line in lines}
    assert by_event["job.submitted"]["status"] == "starting", lines
    assert by_event["job.submit_interrupted"]["status"] == "failed", lines
    assert by_event["job.submitted"]["jobId"] == by_event["job.submit_interrupted"]["jobId"]
    assert _moved(before) == {("starting", "submit"): 1, ("failed", "submit"): 1}


async def test_a_deferred_debit_and_its_retry_carry_the_four_fields(
    stack: Stack, user: User, logs: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*_: object, **__: object) -> bool:
        raise ServiceUnavailable()

    with monkeypatch.context() as patch:
        patch.setattr(stack.ctx.usage, "debit", unreachable)
        response = await user.submit("imagine", prompt="A hall with a long runner")
        assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await user.wait_for(job_id, {"succeeded"})
    stack.clock.advance(timedelta(seconds=30))
    await sweep_once(stack.ctx)

    lines = [
        line
        for line in logs.events()
        if line.get("jobId") == job_id
        and str(line.get("event")).startswith("ledger.")
        and str(line.get("component")).startswith("generation.")
    ]
    assert {line["event"] for line in lines} >= {"ledger.debit_deferred", "ledger.debited"}
    assert [(line["event"], [k for k in FOUR if k not in line]) for line in lines] == [
        (line["event"], []) for line in lines
    ]


async def test_a_cancel_the_provider_did_not_take_is_logged_with_the_four_fields(
    stack: Stack, user: User, logs: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stack.control("set_faults", hold=True)
    try:
        response = await user.submit("imagine", prompt="A quiet study with a bay window")
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await user.wait_for(job_id, {"processing"})

        async def unavailable(prediction_id: str) -> Any:
            raise ProviderUnavailable("injected: the provider is away")

        monkeypatch.setattr(stack.ctx.provider, "cancel_prediction", unavailable)
        canceled = await user.cancel(job_id)
        assert canceled.status_code == 200, canceled.text
    finally:
        await stack.control("set_faults", hold=False)

    [line] = [e for e in logs.events() if e["event"] == "provider.cancel_failed"]
    assert {key: line.get(key) for key in FOUR} == {
        "ownerId": str(user.id),
        "jobId": job_id,
        "predictionId": response.json()["predictionId"],
        "status": "processing",
    }
