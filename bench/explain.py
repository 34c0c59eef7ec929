"""What else a submission does, measured alone: evidence for reading submit_p50_ratio.

The ratio's baseline is the unavoidable I/O only. The path also cleans the image
(decode + re-encode, the product's metadata stripping), asks the usage service
twice (quota, debit) and sends the generation database four single statements in
autocommit (no BEGIN/COMMIT). Each is timed here alone, with the generation service's
own code.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.stats import Summary, summarize
from bench.system import BenchSystem
from generation.clients.usage import GrpcUsageGateway
from generation.domain.images import inspect_and_clean
from generation.persistence.repositories import JobRepository
from kit.db import create_engine, create_read_sessionmaker
from kit.grpc_client import create_channel
from kit.runtime_config import RuntimeConfig
from kit.service_identity import GENERATION, USAGE, TokenSigner
from kit.settings import DatabaseSettings
from launcher.keys import key_file

# Statements of one submission, each its own transaction: pre-check, insert, attach,
# charge (services/generation/tests/core/test_submit_statements.py counts them).
SUBMIT_STATEMENTS = 4


@dataclass(frozen=True)
class SubmitExtras:
    clean_image: Summary
    usage_quota: Summary
    usage_debit: Summary
    db_statement: Summary
    clean_bytes: int

    def explained_p50(self, unavoidable_p50: float, put_p50: float) -> float:
        """The unavoidable parts plus every extra step, each at its p50 alone. A JPEG
        that keeps its pixels is stored while it is proven whole, so the cleaning
        adds only what it takes longer than the PUT (``put_p50``)."""
        return (
            unavoidable_p50
            + max(0.0, self.clean_image.p50 - put_p50)
            + self.usage_quota.p50
            + self.usage_debit.p50
            + SUBMIT_STATEMENTS * self.db_statement.p50
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean_image": self.clean_image.as_dict(),
            "clean_image_output_bytes": self.clean_bytes,
            "usage_quota_rpc": self.usage_quota.as_dict(),
            "usage_debit_rpc": self.usage_debit.as_dict(),
            "db_statement": self.db_statement.as_dict(),
            "db_statements_per_submit": SUBMIT_STATEMENTS,
        }


async def _time(action: Callable[[], Awaitable[object]], rounds: int) -> Summary:
    samples = []
    for index in range(rounds + 2):
        began = time.perf_counter()
        await action()
        if index >= 2:
            samples.append((time.perf_counter() - began) * 1000.0)
    return summarize(samples)


async def submit_extras(
    system: BenchSystem, config: RuntimeConfig, image: bytes, rounds: int
) -> SubmitExtras:
    """Each extra step of a submission, ``rounds`` samples after two warm-ups."""
    clean_bytes = await asyncio.to_thread(_clean, image, config)
    clean_image = await _time(lambda: asyncio.to_thread(_clean, image, config), rounds)
    # The bench measures generation's calls, so it signs as generation (service identity).
    signer = TokenSigner(GENERATION, key_file(system.config, GENERATION))
    channel = create_channel(system.config.grpc_target("usage"), signer=signer, audience=USAGE)
    engine = create_engine(
        DatabaseSettings.model_validate({"DATABASE_URL": system.config.database_url("generation")})
    )
    readers = create_read_sessionmaker(engine)
    try:
        usage = GrpcUsageGateway(channel)
        quota = await _time(lambda: usage.quota(uuid.uuid4()), rounds)
        debit = await _time(lambda: usage.debit(uuid.uuid4(), uuid.uuid4()), rounds)

        async def statement() -> None:
            async with readers() as session:
                await JobRepository(session).admission_facts(uuid.uuid4())

        single = await _time(statement, rounds)
    finally:
        await channel.close()
        await engine.dispose()
    return SubmitExtras(clean_image, quota, debit, single, clean_bytes)


def _clean(image: bytes, config: RuntimeConfig) -> int:
    """One cleaning as the service does it (from a file, into a temporary file): its size."""
    with io.BytesIO(image) as source:
        clean = inspect_and_clean(source, config.uploads, "input1")
    clean.close()
    return clean.size
