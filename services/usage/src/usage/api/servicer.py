"""``interior.usage.v1.UsageService``: thin methods that map and delegate.

Domain errors propagate; the kit's interceptor turns them into rich statuses.
"""

from __future__ import annotations

from typing import Any

import grpc

from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.logging import bind_context
from kit.service_identity import EDGE_API, GENERATION, OPERATOR
from usage.api import mappers
from usage.domain.audit import LedgerAuditor
from usage.domain.ledger import LedgerService
from usage.domain.model import parse_owner_id, parse_pending_job_ids

Context = grpc.aio.ServicerContext[Any, Any]

# Who may call each method (service identity; a method missing here is denied).
# Plans and the audit are operator work; only generation moves the ledger.
ALLOWED_CALLERS: dict[str, frozenset[str]] = {
    "GetQuota": frozenset({EDGE_API, GENERATION}),
    "Debit": frozenset({GENERATION}),
    "Credit": frozenset({GENERATION, OPERATOR}),
    "SetPlan": frozenset({OPERATOR}),
    "AuditLedger": frozenset({OPERATOR}),
}


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    """Quota, ledger, plans and audit over gRPC."""

    def __init__(self, ledger: LedgerService, auditor: LedgerAuditor) -> None:
        self._ledger = ledger
        self._auditor = auditor

    async def GetQuota(
        self, request: usage_pb2.GetQuotaRequest, context: Context
    ) -> usage_pb2.Quota:
        owner_id = parse_owner_id(request.owner_id)
        pending = parse_pending_job_ids(request.pending_job_ids)
        bind_context(ownerId=str(owner_id))
        message = mappers.quota_message(await self._ledger.get_quota(owner_id, pending))
        message.pending_jobs_counted = bool(pending)
        return message

    async def Debit(
        self, request: usage_pb2.DebitRequest, context: Context
    ) -> usage_pb2.LedgerResult:
        command = mappers.debit_command(request)
        bind_context(ownerId=str(command.owner_id), jobId=str(command.job_id))
        return mappers.ledger_result_message(await self._ledger.debit(command))

    async def Credit(
        self, request: usage_pb2.CreditRequest, context: Context
    ) -> usage_pb2.LedgerResult:
        command = mappers.credit_command(request)
        bind_context(ownerId=str(command.owner_id), jobId=str(command.job_id))
        return mappers.ledger_result_message(await self._ledger.credit(command))

    async def SetPlan(self, request: usage_pb2.SetPlanRequest, context: Context) -> usage_pb2.Quota:
        owner_id = parse_owner_id(request.owner_id)
        bind_context(ownerId=str(owner_id))
        return mappers.quota_message(await self._ledger.set_plan(owner_id, request.price_id))

    async def AuditLedger(
        self, request: usage_pb2.AuditLedgerRequest, context: Context
    ) -> usage_pb2.AuditLedgerResponse:
        return mappers.audit_message(await self._auditor.run())
