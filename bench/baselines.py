"""The unavoidable work of each request, measured alone against the same servers.

- submit: one S3 PUT of the uploaded bytes (kit.storage.ObjectStorage.put_file,
  part by part as the service stores inputs), one
  provider create on the emulator (the generation service's own Replicate
  adapter, same body shape), one row insert into a scratch copy of
  generation_jobs (same columns and indexes) on the same PostgreSQL;
- webhook: one download of the output file plus one S3 PUT of its bytes.

Samples are taken one at a time, interleaved, with the system otherwise idle.
"""

from __future__ import annotations

import io
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx

from bench.stats import Summary, summarize
from bench.system import BenchSystem
from generation.domain.provider import PredictionRequest
from generation.providers.replicate import ReplicateProvider
from kit.runtime_config import RuntimeConfig, load_runtime_config
from kit.storage import ObjectStorage

SCRATCH_TABLE = "bench_scratch_jobs"
PROMPT = (
    "Redesign this living room in a Scandinavian style adapted to Australia: light timber, "
    "white walls, cosy wool throws, simple forms. Keep the walls, windows and doors."
)


async def _timed(action: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await action()
    return (time.perf_counter() - began) * 1000.0


@dataclass
class SubmitParts:
    """The three parts of a submission's unavoidable work, each p50 in ms."""

    s3_put: Summary
    provider_create: Summary
    row_insert: Summary

    @property
    def total_p50(self) -> float:
        return self.s3_put.p50 + self.provider_create.p50 + self.row_insert.p50

    def as_dict(self) -> dict[str, object]:
        return {
            "s3_put": self.s3_put.as_dict(),
            "provider_create": self.provider_create.as_dict(),
            "row_insert": self.row_insert.as_dict(),
            "sum_p50_ms": round(self.total_p50, 2),
        }


class Baselines:
    """Clients of the same servers the system uses, for measuring parts alone."""

    def __init__(self, system: BenchSystem, config: RuntimeConfig) -> None:
        self.system = system
        self.config = config
        settings = system.s3()
        self.storage = ObjectStorage(settings)
        self.private_bucket = settings.s3_private_bucket
        self.public_bucket = settings.s3_public_bucket
        self.provider = ReplicateProvider(
            system.replicate_url,
            system.replicate_token,
            config.replicate.model,
            timeout_seconds=config.replicate.request_timeout_seconds,
            max_attempts=config.replicate.max_attempts,
        )
        self.http = httpx.AsyncClient(timeout=30.0, trust_env=False)
        self.db: asyncpg.Connection | None = None

    async def open(self) -> None:
        self.db = await asyncpg.connect(self.system.generation_dsn())
        await self.db.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        await self.db.execute(f"CREATE TABLE {SCRATCH_TABLE} (LIKE generation_jobs INCLUDING ALL)")

    async def close(self) -> None:
        if self.db is not None:
            await self.db.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
            await self.db.close()
        await self.provider.aclose()
        await self.http.aclose()

    async def submit_parts(self, image: bytes, rounds: int) -> SubmitParts:
        """``rounds`` interleaved samples of each part (after two warm-up rounds)."""
        input_key = f"bench/inputs/{uuid.uuid4()}.jpg"
        await self.storage.put_bytes(self.private_bucket, input_key, image, "image/jpeg")
        signed = await self.storage.presigned_get_url(
            self.private_bucket, input_key, self.config.uploads.signed_url_ttl_seconds
        )
        request = PredictionRequest(
            prompt=PROMPT,
            image_urls=(signed,),
            webhook_url=self.system.webhook_url,
            webhook_events=self.config.replicate.webhook_events,
            output_format=self.config.replicate.output_format,
        )
        puts: list[float] = []
        creates: list[float] = []
        inserts: list[float] = []
        for index in range(rounds + 2):
            key = f"bench/inputs/{uuid.uuid4()}.jpg"
            put = await _timed(
                lambda key=key: self.storage.put_file(  # type: ignore[misc]
                    self.private_bucket, key, io.BytesIO(image), len(image), "image/jpeg"
                )
            )
            create = await _timed(lambda: self.provider.create_prediction(request))
            insert = await _timed(self._insert_row)
            if index >= 2:
                puts.append(put)
                creates.append(create)
                inserts.append(insert)
        return SubmitParts(summarize(puts), summarize(creates), summarize(inserts))

    async def _insert_row(self) -> None:
        assert self.db is not None
        now = datetime.now(UTC)
        owner = uuid.uuid4()
        await self.db.execute(
            f"INSERT INTO {SCRATCH_TABLE} (id, owner_id, request_fingerprint, mode, style, "
            "prompt, input_keys, status, charge_state, refund_state, created_at, updated_at) "
            "VALUES ($1, $2, $3, 'redesign', 'scandi_au', $4, $5, 'starting', 'none', 'none', "
            "$6, $6)",
            uuid.uuid4(),
            owner,
            secrets.token_hex(32),
            PROMPT,
            f'["{owner}/inputs/{uuid.uuid4()}.jpg"]',
            now,
        )

    async def download_and_put(self, url: str) -> tuple[float, int]:
        """One sample of the webhook's unavoidable work: (ms, bytes of the output)."""
        began = time.perf_counter()
        response = await self.http.get(url)
        response.raise_for_status()
        data = response.content
        key = f"bench/outputs/{uuid.uuid4()}.jpg"
        await self.storage.put_bytes(self.public_bucket, key, data, "image/jpeg")
        return (time.perf_counter() - began) * 1000.0, len(data)


@asynccontextmanager
async def opened_baselines(system: BenchSystem) -> AsyncIterator[Baselines]:
    """:class:`Baselines` on the system's own runtime config, open for the block."""
    baselines = Baselines(system, load_runtime_config(system.config.runtime_config_file))
    await baselines.open()
    try:
        yield baselines
    finally:
        await baselines.close()
