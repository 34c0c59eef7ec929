"""Generation metrics through the real system: transitions, provider calls, retries, sweep."""

from __future__ import annotations

from datetime import timedelta

from generation.domain.sweep import sweep_once
from testkit.stack import Stack
from tests.e2e.harness import User, jpeg_bytes
from tests.metrics.helpers import Scrape, local_scrape, local_scrape_until

TRANSITIONS = "generation_job_transitions_total"
CALLS = "generation_provider_calls_total"
RETRIES = "generation_provider_retries_total"
GENERATION = "interior.generation.v1.GenerationService"
USAGE = "interior.usage.v1.UsageService"


def _delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    # Sums over unnamed labels; other in-process stacks only ever add to these counters.
    return after.total(name, **labels) - before.total(name, **labels)


async def test_a_generation_is_counted_end_to_end(stack: Stack, user: User) -> None:
    before = local_scrape()
    response = await user.submit("redesign", images=[jpeg_bytes()], style="japandi")
    assert response.status_code == 202, response.text
    await user.wait_for(response.json()["id"], {"succeeded"})
    # A GET may see the committed status just before the webhook's task counts it.
    after = await local_scrape_until(
        lambda now: _delta(before, now, TRANSITIONS, status="succeeded") >= 1
    )

    assert _delta(before, after, TRANSITIONS, status="starting", source="submit") >= 1
    assert _delta(before, after, TRANSITIONS, status="succeeded") >= 1
    assert _delta(before, after, CALLS, operation="create", outcome="2xx") >= 1
    assert _delta(before, after, CALLS, operation="download", outcome="2xx") >= 1
    seconds = "generation_provider_call_duration_seconds_count"
    assert _delta(before, after, seconds, operation="create") >= 1
    assert _delta(before, after, "generation_assets_total", outcome="stored") >= 1
    assert (
        _delta(before, after, "generation_settlements_total", operation="debit", outcome="done")
        >= 1
    )
    handled = "grpc_server_handled_total"
    submit = {"grpc_service": GENERATION, "grpc_method": "SubmitGeneration", "grpc_code": "OK"}
    assert _delta(before, after, handled, **submit) >= 1
    debit = {"grpc_service": USAGE, "grpc_method": "Debit", "grpc_code": "OK"}
    assert _delta(before, after, handled, **debit) >= 1
    assert _delta(before, after, "usage_ledger_debits_total", outcome="recorded") >= 1


async def test_provider_retries_and_give_ups_are_counted(stack: Stack, user: User) -> None:
    before = local_scrape()
    await stack.control("set_faults", create_errors=[503, 429])
    response = await user.submit("imagine", prompt="A sunroom with plants")
    assert response.status_code == 202, response.text
    await user.wait_for(response.json()["id"], {"succeeded"})
    await stack.control("set_faults", create_errors=[503] * 8)
    assert (await user.submit("imagine", prompt="A sunroom with plants")).status_code == 502
    after = local_scrape()

    assert _delta(before, after, RETRIES, operation="create", reason="5xx") >= 4
    assert _delta(before, after, RETRIES, operation="create", reason="429") >= 1
    assert _delta(before, after, CALLS, operation="create", outcome="5xx") >= 5
    assert _delta(before, after, CALLS, operation="create", outcome="429") >= 1
    unavailable = "generation_provider_unavailable_total"
    assert _delta(before, after, unavailable, operation="create") >= 1
    assert _delta(before, after, TRANSITIONS, status="failed", source="submit") >= 1


async def test_cancel_and_sweep_timeouts_are_counted(stack: Stack, user: User) -> None:
    await stack.control("set_faults", hold=True)
    before = local_scrape()
    first = await user.submit("imagine", prompt="A quiet study")
    assert first.status_code == 202, first.text
    assert (await user.cancel(first.json()["id"])).status_code == 200
    second = await user.submit("imagine", prompt="A quiet study")
    assert second.status_code == 202, second.text
    stack.clock.advance(timedelta(minutes=11))
    counts = await sweep_once(stack.ctx)
    assert counts["timedOut"] >= 1
    after = local_scrape()

    # Counted once, by whichever write ended the job: the user's cancel, or the provider's
    # "canceled" webhook when it arrived first (a race the cancel allows).
    canceled = sum(
        _delta(before, after, TRANSITIONS, status="canceled", source=source)
        for source in ("user", "webhook")
    )
    assert canceled >= 1
    assert _delta(before, after, TRANSITIONS, status="failed", source="sweep") >= 1
    assert _delta(before, after, "generation_sweep_passes_total") >= 1
    sweep_jobs = "generation_sweep_jobs_total"
    assert _delta(before, after, sweep_jobs, action="timed_out") >= counts["timedOut"]
    refunds = {"operation": "refund", "outcome": "done"}
    assert _delta(before, after, "generation_settlements_total", **refunds) >= 2
    assert _delta(before, after, "usage_ledger_credits_total", outcome="recorded") >= 2
