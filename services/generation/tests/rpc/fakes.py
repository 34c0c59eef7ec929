"""In-memory stand-ins for the domain's ports, and the servicer under grpcio-testing.

Only what the RPC-level cases reach is implemented: a call into anything else
fails loudly (AttributeError), so a fake never answers what it does not know.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc_testing  # type: ignore[import-untyped]  # it ships no type hints

from generation.api.servicer import GenerationServicer
from generation.domain.context import GenerationContext
from generation.domain.jobs import JobView
from generation.domain.provider import Prediction, ProviderStatus
from generation.domain.records import Job, NewJob, TerminalUpdate
from generation.domain.states import JobStatus
from generation.domain.submit_request import SubmitCommand
from interior.generation.v1 import generation_pb2 as pb
from kit.errors import DomainError
from kit.runtime_config import load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SERVICE = pb.DESCRIPTOR.services_by_name["GenerationService"]


def make_job(owner: uuid.UUID, status: str = JobStatus.STARTING, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner_id": owner,
        "prediction_id": None,
        "status": status,
        "mode": "imagine",
        "room_type": None,
        "style": "scandinavian",
        "error_code": None,
        "error_message": None,
        "created_at": NOW,
        "updated_at": NOW,
        "completed_at": None,
        "version": 7,
        "input_keys": (),
        "source_job_id": None,
        "request_fingerprint": "f" * 64,
        "charge_state": "none",
        "refund_state": "none",
    }
    return Job(**{**values, **fields})


class FakeStores:
    """Jobs in a dict; writes are recorded so a test can see what the flow asked for."""

    def __init__(self) -> None:
        self.jobs_by_id: dict[uuid.UUID, Job] = {}
        self.with_output: set[uuid.UUID] = set()
        self.ended: list[tuple[uuid.UUID, str, str]] = []
        self.cancel_requested: set[uuid.UUID] = set()

    def add(self, job: Job) -> Job:
        self.jobs_by_id[job.id] = job
        return job

    # The unit of work: every store is this object.
    @property
    def jobs(self) -> FakeStores:
        return self

    @property
    def renders(self) -> FakeStores:
        return self

    @property
    def removals(self) -> FakeStores:
        return self

    @property
    def reads(self) -> FakeStores:
        return self

    async def view(self, owner_id: uuid.UUID, job_id: uuid.UUID) -> JobView | None:
        job = self.jobs_by_id.get(job_id)
        return job.view() if job is not None and job.owner_id == owner_id else None

    async def get(self, job_id: uuid.UUID) -> Job | None:
        return self.jobs_by_id.get(job_id)

    async def get_by_prediction_id(self, prediction_id: str) -> Job | None:
        found = [job for job in self.jobs_by_id.values() if job.prediction_id == prediction_id]
        return found[0] if found else None

    async def mark_ended_without_output(
        self,
        job_id: uuid.UUID,
        status: str,
        error_code: str,
        error_message: str,
        now: datetime,
        *,
        unless_attached: bool = False,
        message_if_owner_asked: str | None = None,
    ) -> TerminalUpdate:
        job = self.jobs_by_id[job_id]
        if job.status not in (JobStatus.STARTING, JobStatus.PROCESSING):
            return TerminalUpdate(changed=False, refund_due=False)
        if unless_attached and job.prediction_id is not None:
            return TerminalUpdate(changed=False, refund_due=False)
        self.ended.append((job_id, status, error_code))
        if message_if_owner_asked is not None and job_id in self.cancel_requested:
            error_message = message_if_owner_asked
        self.jobs_by_id[job_id] = dataclasses.replace(
            job, status=status, error_code=error_code, error_message=error_message
        )
        return TerminalUpdate(changed=True, refund_due=False)

    async def request_cancel(self, job_id: uuid.UUID, now: datetime) -> None:
        self.cancel_requested.add(job_id)

    async def audit_page(
        self, owner_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> list[Job]:
        jobs = sorted(self.jobs_by_id.values(), key=lambda job: job.id)
        jobs = [job for job in jobs if owner_id is None or job.owner_id == owner_id]
        return [job for job in jobs if after is None or job.id > after][:limit]

    async def outputs_of(self, job_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        return self.with_output & set(job_ids)


class FixedClock:
    def now(self) -> datetime:
        return NOW


class FakeStorage:
    def sign_get_url(self, bucket: str, key: str, ttl: int) -> str:
        return f"https://signed.test/{bucket}/{key}?ttl={ttl}"


class FakeProvider:
    """Parses any payload as a succeeded prediction named by the payload's text."""

    def parse_event(self, payload: bytes) -> Prediction:
        return Prediction(payload.decode(), ProviderStatus.SUCCEEDED, (), False, None, None, None)


async def _cursor_key() -> bytes:
    return b"rpc-tests-cursor-key"


def fake_context(stores: FakeStores) -> GenerationContext:
    @asynccontextmanager
    async def transaction() -> AsyncIterator[FakeStores]:
        yield stores

    unused: Any = None  # collaborators no RPC-level case reaches
    return GenerationContext(
        transactions=transaction,  # type: ignore[arg-type]
        reads=transaction,  # type: ignore[arg-type]
        statements=transaction,  # type: ignore[arg-type]
        provider=FakeProvider(),  # type: ignore[arg-type]
        storage=FakeStorage(),  # type: ignore[arg-type]
        usage=unused,
        config=load_runtime_config(REPO_RUNTIME_CONFIG),
        clock=FixedClock(),
        private_bucket="private",
        public_bucket="public",
        webhook_base_url=None,
        decoder=unused,
        cursor_key=_cursor_key,
    )


def _blocking(method: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """An async servicer method as grpcio-testing calls it: in a thread, synchronously.

    Domain errors become statuses as the service's interceptor makes them (code and
    reason), so the cases see what a client sees.
    """

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return asyncio.run(method(request, context))
        except DomainError as error:
            context.abort(error.grpc_status, error.code)

    return call


class BlockingServicer:
    """The real GenerationServicer's unary methods, callable by grpcio-testing."""

    def __init__(self, servicer: GenerationServicer) -> None:
        for name in SERVICE.methods_by_name:
            setattr(self, name, _blocking(getattr(servicer, name)))


def rpc_server(stores: FakeStores) -> grpc_testing.Server:
    servicer = GenerationServicer(fake_context(stores), feed=None)  # type: ignore[arg-type]
    return grpc_testing.server_from_dictionary(
        {SERVICE: BlockingServicer(servicer)}, grpc_testing.strict_real_time()
    )


def unary(
    server: grpc_testing.Server, method: str, request: Any
) -> tuple[Any, grpc.StatusCode, str]:
    """Invoke a unary method; (response, code, details)."""
    rpc = server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
    response, _, code, details = rpc.termination()
    return response, code, details


def imagine_command() -> SubmitCommand:
    """A valid submission of a new owner's that needs no upload."""
    return SubmitCommand(
        owner_id=uuid.uuid4(),
        idempotency_key=None,
        mode="imagine",
        prompt="a den",
        room_type=None,
        style=None,
        inputs=(),
        request_base_url=None,
    )


def imagine_job(owner_id: uuid.UUID) -> NewJob:
    """The row a new imagine submission of ``owner_id``'s writes, created now."""
    return NewJob(
        id=uuid.uuid4(),
        owner_id=owner_id,
        idempotency_key=None,
        request_fingerprint="f" * 64,
        mode="imagine",
        room_type=None,
        style=None,
        prompt="a den",
        composed_prompt="a den",
        input_keys=(),
        source_job_id=None,
        source_variant_idx=None,
        created_at=datetime.now(UTC),
    )
