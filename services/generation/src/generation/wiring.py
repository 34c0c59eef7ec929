"""The composition root: settings in, a ready gRPC server (and its cleanup) out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from generation.api.servicer import ALLOWED_CALLERS, GenerationServicer
from generation.api.slots import submission_slots
from generation.clients.usage import GrpcUsageGateway
from generation.domain.context import GenerationContext
from generation.domain.decoder import ImageDecoder
from generation.domain.provider import ImageProvider
from generation.domain.sweep import Sweeper
from generation.persistence.cursor_key import CursorKeySource
from generation.persistence.feed import ChangeFeed
from generation.persistence.store import sql_reads, sql_statements, sql_transactions
from generation.providers.replicate import ReplicateProvider
from generation.settings import GenerationSettings
from interior.generation.v1 import generation_pb2, generation_pb2_grpc
from kit.clock import Clock, SystemClock
from kit.db import (
    UNAVAILABLE_ERRORS,
    DatabaseProbe,
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    run_migrations,
)
from kit.grpc_client import create_channel
from kit.grpc_server import GrpcServer, ServiceBinding
from kit.logging import get_logger
from kit.runtime_config import RuntimeConfig, load_runtime_config
from kit.service_identity import GENERATION, USAGE
from kit.slots import Slots
from kit.storage import ObjectStorage

log = get_logger("generation.wiring")

MIGRATIONS = Path(__file__).parent / "persistence" / "alembic"
SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name


@dataclass(frozen=True, kw_only=True)
class WiredContext(GenerationContext):
    """The domain's context plus the session factories its stores were built on.

    The domain never reads these two (it sees the stores only); tests and operator
    tools that look at the tables directly do.
    """

    sessions: async_sessionmaker[AsyncSession]
    readers: async_sessionmaker[AsyncSession]


@dataclass
class GenerationApp:
    server: GrpcServer
    context: WiredContext
    sweeper: Sweeper | None
    slots: Slots


async def build_app(
    settings: GenerationSettings,
    *,
    runtime_config: RuntimeConfig | None = None,
    clock: Clock | None = None,
    provider: ImageProvider | None = None,
    port: int | None = None,
) -> GenerationApp:
    """Migrate, wire every collaborator, and return the (not yet started) server."""
    config = runtime_config or load_runtime_config(settings.runtime_config_file)
    database_url = settings.database_url.get_secret_value()
    if settings.run_migrations:
        await run_migrations(MIGRATIONS, database_url)
    engine = create_engine(settings)
    storage = ObjectStorage(settings)
    for bucket in (settings.s3_private_bucket, settings.s3_public_bucket):
        await storage.ensure_bucket(bucket)
    identity = settings.service_identity(GENERATION)
    usage_channel = create_channel(
        settings.usage_grpc_target, signer=identity.signer, audience=USAGE
    )
    provider = provider or ReplicateProvider(
        settings.replicate_api_base_url,
        settings.replicate_token(),
        config.replicate.model,
        timeout_seconds=config.replicate.request_timeout_seconds,
        max_attempts=config.replicate.max_attempts,
        # The provider adds the API's host:port when it is not Replicate's (an emulator).
        output_hosts=config.replicate.output_hosts,
    )
    decoder = ImageDecoder(config.uploads)
    await decoder.start()
    sessions = create_sessionmaker(engine)
    readers = create_read_sessionmaker(engine)
    context = WiredContext(
        transactions=sql_transactions(sessions),
        reads=sql_reads(readers),
        statements=sql_statements(readers),
        sessions=sessions,
        readers=readers,
        provider=provider,
        storage=storage,
        usage=GrpcUsageGateway(usage_channel),
        config=config,
        clock=clock or SystemClock(),
        private_bucket=settings.s3_private_bucket,
        public_bucket=settings.s3_public_bucket,
        webhook_base_url=settings.webhook_base_url,
        decoder=decoder,
        cursor_key=CursorKeySource(sessions),
    )
    sweeper = Sweeper(context) if settings.sweep_enabled else None
    feed = ChangeFeed(database_url, readers, settings.feed_heartbeat_seconds)
    probe = DatabaseProbe(database_url, "generation-readiness")
    slots = submission_slots(
        settings.max_concurrent_submissions, settings.submission_slot_wait_seconds
    )
    servicer = GenerationServicer(context, feed, slots)

    async def on_stop() -> None:
        if sweeper is not None:
            await sweeper.stop()
        await feed.close()
        await probe.close()
        await provider.aclose()
        await usage_channel.close()
        await engine.dispose()
        await decoder.stop()

    server = GrpcServer(
        [
            ServiceBinding(
                SERVICE_NAME,
                lambda s: generation_pb2_grpc.add_GenerationServiceServicer_to_server(servicer, s),
                ALLOWED_CALLERS,
            )
        ],
        host=settings.grpc_host,
        port=settings.grpc_port if port is None else port,
        max_message_bytes=settings.grpc_max_message_bytes,
        on_stop=on_stop,
        # WatchJobs streams end at once (UNAVAILABLE): the edge resumes on another instance.
        on_stopping=feed.close,
        verifier=identity.verifier,
        reflection=settings.development,
        unavailable_errors=UNAVAILABLE_ERRORS,
        # Named services follow the database (readiness); "" stays the process's.
        readiness=probe,
    )
    return GenerationApp(server=server, context=context, sweeper=sweeper, slots=slots)
