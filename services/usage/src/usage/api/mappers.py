"""Protobuf <-> domain conversions. The only place both kinds of types meet."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from interior.usage.v1 import usage_pb2
from usage.domain.model import AuditReport, LedgerCommand, LedgerResult, Quota

DEBIT_REASON = "generation"
CREDIT_REASON = "refund"


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def quota_message(quota: Quota) -> usage_pb2.Quota:
    """The ``Quota`` message."""
    return usage_pb2.Quota(
        plan=quota.plan,
        price_id=quota.price_id,
        monthly_generations=quota.monthly_generations,
        used=quota.used,
        remaining=quota.remaining,
        period_start=_timestamp(quota.period.start),
        period_end=_timestamp(quota.period.end),
    )


def ledger_result_message(result: LedgerResult) -> usage_pb2.LedgerResult:
    """The ``LedgerResult`` message."""
    return usage_pb2.LedgerResult(
        recorded=result.recorded, replayed=result.replayed, quota=quota_message(result.quota)
    )


def debit_command(request: usage_pb2.DebitRequest) -> LedgerCommand:
    """A validated debit; VALIDATION_ERROR for bad fields."""
    return LedgerCommand.parse(
        request.owner_id, request.job_id, request.idempotency_key, request.reason, DEBIT_REASON
    )


def credit_command(request: usage_pb2.CreditRequest) -> LedgerCommand:
    """A validated credit; VALIDATION_ERROR for bad fields."""
    return LedgerCommand.parse(
        request.owner_id, request.job_id, request.idempotency_key, request.reason, CREDIT_REASON
    )


def audit_message(report: AuditReport) -> usage_pb2.AuditLedgerResponse:
    """The ``AuditLedgerResponse`` message."""
    return usage_pb2.AuditLedgerResponse(
        discrepancies=[
            usage_pb2.Discrepancy(
                kind=found.kind, owner_id=found.owner_id, job_id=found.job_id, detail=found.detail
            )
            for found in report.discrepancies
        ],
        jobs_checked=report.jobs_checked,
        entries_checked=report.entries_checked,
    )
