"""Synthetic finished jobs written straight into the generation database (COPY).

Each job is a succeeded redesign with its render and one variant, spread over
the last 30 days and over many owners, as a year of real use would leave them.

They are history, not news: the change feed keeps events for a day (its
``RETENTION``) and announced each when it happened, so the rows go in with the
feed's triggers off (``session_replication_role = replica``, for this transaction
only). With the triggers on, 100k jobs would be 200k changes announced at once in
the middle of the measurement, and what the round measured would be the feed
catching up (the edge answers generation's reads while its feed is behind), not
the table's size.
"""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from generation.domain.jobs import render_id_for, variant_key

BATCH = 20_000
JOBS_PER_OWNER = 5

_JOB_COLUMNS = (
    "id", "owner_id", "request_fingerprint", "mode", "style", "input_keys", "prediction_id",
    "status", "charge_state", "refund_state", "created_at", "updated_at", "started_at",
    "completed_at",
)  # fmt: skip
_RENDER_COLUMNS = ("id", "job_id", "owner_id", "mode", "style", "created_at")
_VARIANT_COLUMNS = ("id", "render_id", "idx", "object_key", "created_at")


async def count_jobs(dsn: str) -> int:
    """Rows in generation_jobs now."""
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM generation_jobs"))
    finally:
        await connection.close()


async def top_up(dsn: str, total: int) -> int:
    """Insert synthetic finished jobs until the table holds ``total``; returns the count."""
    connection = await asyncpg.connect(dsn)
    try:
        have = int(await connection.fetchval("SELECT count(*) FROM generation_jobs"))
        missing = total - have
        while missing > 0:
            size = min(BATCH, missing)
            await _insert_batch(connection, size)
            missing -= size
        # What autovacuum would have done by the time a real table got this big.
        await connection.execute("ANALYZE generation_jobs, renders, render_variants")
        return int(await connection.fetchval("SELECT count(*) FROM generation_jobs"))
    finally:
        await connection.close()


async def _insert_batch(connection: asyncpg.Connection, size: int) -> None:
    now = datetime.now(UTC)
    jobs, renders, variants = [], [], []
    owner = uuid.uuid4()
    for index in range(size):
        if index % JOBS_PER_OWNER == 0:
            owner = uuid.uuid4()
        job_id = uuid.uuid4()
        created = now - timedelta(seconds=secrets.randbelow(30 * 86_400))
        done = created + timedelta(seconds=12)
        render_id = render_id_for(job_id)
        jobs.append(
            (
                job_id, owner, secrets.token_hex(32), "redesign", "scandi_au",
                json.dumps([f"{owner}/inputs/{uuid.uuid4()}.jpg"]), f"bench{secrets.token_hex(12)}",
                "succeeded", "charged", "none", created, done, created, done,
            )
        )  # fmt: skip
        renders.append((render_id, job_id, owner, "redesign", "scandi_au", done))
        variants.append((uuid.uuid4(), render_id, 0, variant_key(render_id, 0), done))
    async with connection.transaction():
        await connection.execute("SET LOCAL session_replication_role = replica")
        await connection.copy_records_to_table(
            "generation_jobs", records=jobs, columns=_JOB_COLUMNS
        )
        await connection.copy_records_to_table("renders", records=renders, columns=_RENDER_COLUMNS)
        await connection.copy_records_to_table(
            "render_variants", records=variants, columns=_VARIANT_COLUMNS
        )


async def end_parked_jobs(dsn: str) -> int:
    """Cancel the jobs a phase left in flight on purpose (their predictions were parked).

    The emulator forgets those predictions on reset; without this the sweep would
    poll them for ten minutes and add load to the phases that follow.
    """
    connection = await asyncpg.connect(dsn)
    try:
        result = await connection.execute(
            "UPDATE generation_jobs SET status = 'canceled', error_code = 'CANCELED', "
            "error_message = 'bench cleanup', completed_at = now(), updated_at = now() "
            "WHERE status IN ('starting', 'processing')"
        )
        return int(result.split()[-1])
    finally:
        await connection.close()


# The hot queries of GET, submit and webhook, as the repositories issue them.
HOT_QUERIES = {
    "job_for_owner": "SELECT * FROM generation_jobs WHERE id = $1 AND owner_id = $2",
    "admission_facts": (
        "SELECT EXISTS (SELECT 1 FROM generation_jobs WHERE owner_id = $1 "
        "AND status IN ('starting', 'processing')), (SELECT count(*) FROM generation_jobs "
        "WHERE owner_id = $1 AND status = 'succeeded' AND charge_state = 'none' "
        "AND prediction_id IS NOT NULL)"
    ),
    "job_by_prediction": "SELECT * FROM generation_jobs WHERE prediction_id = $1",
    "render_for_job": "SELECT * FROM renders WHERE job_id = $1",
    "variants_of_render": "SELECT * FROM render_variants WHERE render_id = $1 ORDER BY idx",
}


async def query_plans(dsn: str) -> dict[str, str]:
    """The access path PostgreSQL picks for each hot query (evidence for the scale ratio)."""
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT j.id, j.owner_id, j.prediction_id, r.id AS render_id "
            "FROM generation_jobs j JOIN renders r ON r.job_id = j.id LIMIT 1"
        )
        assert row is not None
        args = {
            "job_for_owner": (row["id"], row["owner_id"]),
            "admission_facts": (row["owner_id"],),
            "job_by_prediction": (row["prediction_id"],),
            "render_for_job": (row["id"],),
            "variants_of_render": (row["render_id"],),
        }
        plans = {}
        for name, sql in HOT_QUERIES.items():
            lines = await connection.fetch(f"EXPLAIN {sql}", *args[name])
            plans[name] = " / ".join(str(line[0]).strip() for line in lines[:2])
        return plans
    finally:
        await connection.close()
