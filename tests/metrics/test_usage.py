"""Usage ledger metrics through the real usage server: debits and credits by outcome."""

from __future__ import annotations

import uuid

import grpc
import pytest

from interior.usage.v1 import usage_pb2
from kit.service_identity import GENERATION
from testkit.stack import Stack
from tests.metrics.helpers import Scrape, local_scrape, local_scrape_until

DEBITS = "usage_ledger_debits_total"
CREDITS = "usage_ledger_credits_total"
HANDLED = "grpc_server_handled_total"
REFUSED_RPC = {
    "grpc_service": "interior.usage.v1.UsageService",
    "grpc_method": "Debit",
    "grpc_code": "RESOURCE_EXHAUSTED",
}


def _delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


async def test_debits_and_credits_are_counted_by_outcome(stack: Stack) -> None:
    stub = await stack.usage_stub(GENERATION)  # debits and credits are generation's calls
    owner, job = str(uuid.uuid4()), str(uuid.uuid4())
    await stack.set_plan(uuid.UUID(owner), "price_test_one")
    before = local_scrape()

    debit = usage_pb2.DebitRequest(
        owner_id=owner, job_id=job, idempotency_key=f"debit:{job}", reason="generation"
    )
    assert (await stub.Debit(debit, timeout=5)).replayed is False
    assert (await stub.Debit(debit, timeout=5)).replayed is True
    other_job = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Debit(
            usage_pb2.DebitRequest(
                owner_id=owner, job_id=other_job, idempotency_key=f"debit:{other_job}"
            ),
            timeout=5,
        )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    credit = usage_pb2.CreditRequest(
        owner_id=owner, job_id=job, idempotency_key=f"credit:{job}", reason="job_failed"
    )
    assert (await stub.Credit(credit, timeout=5)).recorded is True
    assert (await stub.Credit(credit, timeout=5)).replayed is True
    never = usage_pb2.CreditRequest(
        owner_id=owner, job_id=other_job, idempotency_key=f"credit:{other_job}"
    )
    assert (await stub.Credit(never, timeout=5)).recorded is False
    after = await local_scrape_until(lambda now: _delta(before, now, HANDLED, **REFUSED_RPC) >= 1)

    # Other in-process stacks may record entries meanwhile; only this test replays or refuses.
    assert _delta(before, after, DEBITS, outcome="recorded") >= 1
    assert _delta(before, after, CREDITS, outcome="recorded") >= 1
    for outcome in ("replayed", "refused"):
        assert _delta(before, after, DEBITS, outcome=outcome) == 1, outcome
    for outcome in ("replayed", "not_debited"):
        assert _delta(before, after, CREDITS, outcome=outcome) == 1, outcome
    plan_changes = "usage_plan_changes_total"
    assert after.value(plan_changes, plan="one") >= 1
    assert _delta(before, after, HANDLED, **REFUSED_RPC) == 1
