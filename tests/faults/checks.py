"""The invariants every fault case ends with, checked through the API, the DB and the audit.

- no job stuck in flight past the overall timeout (anywhere in the database);
- no duplicate render or variant, no render for a job that did not succeed, and
  every ``succeeded`` job has its render with stored variants that serve bytes;
- the users' usage equals their succeeded jobs (failed/canceled ones refunded);
- the usage audit (``python -m usage.cli audit``) finds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tests.faults.client import ApiUser
from tests.faults.system import OVERALL_TIMEOUT_SECONDS, System

T = TypeVar("T")
# The sweep ends an overdue job within a pass or two; settlement waits 10 s first.
SETTLE_SECONDS = OVERALL_TIMEOUT_SECONDS + 20
JPEG_MAGIC = b"\xff\xd8\xff"


def eventually(probe: Callable[[], T], ok: Callable[[T], bool], timeout: float) -> T:
    """Call ``probe`` until ``ok`` holds for its value; return the last value either way."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = probe()
    return value


def _owner_list(users: Sequence[ApiUser]) -> str:
    return ", ".join(f"'{user.id}'" for user in users)


def job_rows(system: System, users: Sequence[ApiUser]) -> list[dict[str, str]]:
    """The users' jobs as the generation service stores them."""
    # The ids are UUIDs this test made, so the query text is safe.
    rows = system.sql(
        "SELECT id, owner_id, status, charge_state, refund_state, coalesce(error_code, '') "  # noqa: S608
        f"FROM generation_jobs WHERE owner_id IN ({_owner_list(users)}) ORDER BY created_at"
    )
    keys = ("id", "owner", "status", "charge", "refund", "error")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _settled(rows: list[dict[str, str]]) -> bool:
    for row in rows:
        if row["status"] in {"starting", "processing"} or row["refund"] == "pending":
            return False
        if row["status"] == "succeeded" and row["charge"] != "charged":
            return False
    return True


def stuck_jobs(system: System) -> list[list[str]]:
    """In-flight jobs older than the overall timeout plus a sweep's slack."""
    slack_ms = int(OVERALL_TIMEOUT_SECONDS * 1000) + 5000
    return system.sql(
        "SELECT id, status FROM generation_jobs WHERE status IN ('starting', 'processing') "  # noqa: S608
        f"AND created_at < now() - interval '{slack_ms} milliseconds'"
    )


def storage_anomalies(system: System) -> list[list[str]]:
    """Duplicate renders/variants, lost renders and renders of unsuccessful jobs."""
    return system.sql(
        "SELECT 'duplicate render', job_id::text FROM renders GROUP BY job_id HAVING count(*) > 1 "
        "UNION ALL SELECT 'duplicate variant', render_id::text FROM render_variants "
        "GROUP BY render_id, idx HAVING count(*) > 1 "
        "UNION ALL SELECT 'succeeded without variants', j.id::text FROM generation_jobs j "
        "WHERE j.status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM renders r "
        "JOIN render_variants v ON v.render_id = r.id WHERE r.job_id = j.id) "
        "UNION ALL SELECT 'render of a job that did not succeed', r.job_id::text FROM renders r "
        "JOIN generation_jobs j ON j.id = r.job_id WHERE j.status <> 'succeeded'"
    )


def clean_audit(system: System) -> dict[str, Any]:
    """The audit report once it is clean (a refund in flight may show for a moment)."""
    code, report = eventually(system.audit, lambda result: result[0] == 0, timeout=15)
    assert code == 0, report
    return report


def assert_variants_served(system: System, user: ApiUser, job_id: str) -> None:
    """A succeeded job lists its variants and each public URL serves the JPEG."""
    body = user.get(job_id).json()
    assert body["status"] == "succeeded"
    assert len(body["variants"]) == 1, body
    for variant in body["variants"]:
        response = system.http.get(variant["url"])
        assert response.status_code == 200, (variant["url"], response.status_code)
        assert response.content.startswith(JPEG_MAGIC)


def assert_invariants(system: System, users: Sequence[ApiUser]) -> list[dict[str, str]]:
    """Wait for the users' jobs to settle, then check everything; returns their rows."""
    rows = eventually(lambda: job_rows(system, users), _settled, timeout=SETTLE_SECONDS)
    assert _settled(rows), rows
    assert {row["id"] for row in rows} >= {job for user in users for job in user.job_ids}
    for user in users:
        mine = [row for row in rows if row["owner"] == str(user.id)]
        succeeded = [row["id"] for row in mine if row["status"] == "succeeded"]
        assert user.usage()["used"] == len(succeeded), mine
        for job_id in succeeded:
            assert_variants_served(system, user, job_id)
    assert stuck_jobs(system) == []
    assert storage_anomalies(system) == []
    clean_audit(system)
    return rows
