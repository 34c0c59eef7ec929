"""Writing the job row: a caller that leaves mid-write never leaves the slot held."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from generation.domain import jobs
from generation.domain.job_record import record_job
from generation.domain.records import Inserted, NewJob, TerminalUpdate
from services.generation.tests.rpc.fakes import (
    FakeStores,
    fake_context,
    imagine_command,
    imagine_job,
)


class SlowInsert(FakeStores):
    """An insert that commits only when released (an autocommit statement in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.failed: list[tuple[uuid.UUID, str, str]] = []

    async def insert(self, job: NewJob) -> Inserted:
        self.started.set()
        await self.release.wait()
        return Inserted()

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
        self.failed.append((job_id, status, error_code))
        return TerminalUpdate(changed=True, refund_due=False)


async def test_a_submission_cancelled_while_its_row_is_written_ends_the_job() -> None:
    stores = SlowInsert()
    owner = uuid.uuid4()
    job = imagine_job(owner)
    command = dataclasses.replace(imagine_command(), owner_id=owner)
    submitting = asyncio.create_task(record_job(fake_context(stores), job, command))
    await stores.started.wait()
    submitting.cancel()  # the client went away while the INSERT was in flight
    await asyncio.sleep(0)
    stores.release.set()  # ...and the row commits all the same
    with pytest.raises(asyncio.CancelledError):
        await submitting
    for _ in range(10):
        if stores.failed:
            break
        await asyncio.sleep(0.01)
    assert stores.failed == [(job.id, jobs.FAILED, jobs.INTERRUPTED.code)]


def _failed_by_submit() -> float:
    labels = {"status": "failed", "source": "submit"}
    return REGISTRY.get_sample_value("generation_job_transitions_total", labels) or 0.0


async def test_the_interrupted_insert_s_failure_is_logged_and_counted_once() -> None:
    stores = SlowInsert()
    owner = uuid.uuid4()
    job = imagine_job(owner)
    command = dataclasses.replace(imagine_command(), owner_id=owner)
    before = _failed_by_submit()
    with capture_logs() as logs:
        submitting = asyncio.create_task(record_job(fake_context(stores), job, command))
        await stores.started.wait()
        submitting.cancel()
        await asyncio.sleep(0)
        stores.release.set()
        with pytest.raises(asyncio.CancelledError):
            await submitting
        for _ in range(10):
            if any(entry["event"] == "job.submit_interrupted" for entry in logs):
                break
            await asyncio.sleep(0.01)
    lines = [entry for entry in logs if entry["event"] == "job.submit_interrupted"]
    assert [(line["jobId"], line["predictionId"], line["status"]) for line in lines] == [
        (str(job.id), None, "failed")
    ]
    assert lines[0]["ownerId"] == str(owner)
    assert _failed_by_submit() - before == 1
