"""The composition root: settings in, a ready (not yet started) gRPC server out.

Tests and the cross-service suites run a real usage server in-process with
``build_server(settings, clock=..., runtime_config=...)`` and ``await
server.start()`` (port 0 picks a free port), after ``await migrate(url)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.clock import Clock, SystemClock
from kit.db import (
    UNAVAILABLE_ERRORS,
    DatabaseProbe,
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    run_migrations,
)
from kit.grpc_server import GrpcServer, ServiceBinding
from kit.runtime_config import RuntimeConfig, load_runtime_config
from kit.service_identity import USAGE
from usage.api.servicer import ALLOWED_CALLERS, UsageServicer
from usage.clients.generation_jobs import GenerationJobOutcomes
from usage.domain.audit import LedgerAuditor
from usage.domain.ledger import LedgerService
from usage.domain.plans import PlanCatalog
from usage.persistence.store import sql_reads, sql_statements, sql_transactions
from usage.settings import UsageSettings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "persistence" / "alembic"
SERVICE_NAME: str = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name

Cleanup = Callable[[], Awaitable[None]]


async def migrate(database_url: str) -> None:
    """``alembic upgrade head`` for the usage tables; safe to run twice."""
    await run_migrations(MIGRATIONS_DIR, database_url)


def build_server(
    settings: UsageSettings,
    clock: Clock | None = None,
    runtime_config: RuntimeConfig | None = None,
) -> tuple[GrpcServer, Cleanup]:
    """The usage gRPC server and its cleanup (also run by the server's graceful stop).

    Raises RuntimeConfigError when the runtime config file is bad.
    """
    config = runtime_config or load_runtime_config(settings.runtime_config_file)
    plans = PlanCatalog.from_config(config)
    clock = clock or SystemClock()
    engine = create_engine(settings)
    probe = DatabaseProbe(settings.database_url.get_secret_value(), "usage-readiness")
    transactions = sql_transactions(create_sessionmaker(engine))
    identity = settings.service_identity(USAGE)
    jobs = GenerationJobOutcomes(
        settings.generation_grpc_target,
        signer=identity.signer,
        timeout_seconds=settings.audit_call_timeout_seconds,
        page_size=settings.audit_page_size,
    )
    servicer = UsageServicer(
        LedgerService(
            transactions,
            plans,
            clock,
            reads=sql_reads(create_read_sessionmaker(engine)),
            statements=sql_statements(engine),
        ),
        LedgerAuditor(transactions, plans, jobs, clock),
    )
    closed = False

    async def cleanup() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        await jobs.close()
        await probe.close()
        await engine.dispose()

    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: usage_pb2_grpc.add_UsageServiceServicer_to_server(servicer, server),
        ALLOWED_CALLERS,
    )
    server = GrpcServer(
        [binding],
        host=settings.grpc_host,
        port=settings.grpc_port,
        max_message_bytes=settings.grpc_max_message_bytes,
        on_stop=cleanup,
        verifier=identity.verifier,
        reflection=settings.development,
        unavailable_errors=UNAVAILABLE_ERRORS,
        # Named services follow the database (readiness); "" stays the process's.
        readiness=probe,
    )
    return server, cleanup
