"""Our own parts failing under the real stack: the S3 server stopped, the generation
service SIGKILLed (so the webhook gateway cannot reach it), PostgreSQL stopped and
started. Each case ends with every invariant checked (see checks.py)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import pytest

from tests.faults.checks import assert_invariants, eventually, job_rows
from tests.faults.client import ApiUser, assert_error
from tests.faults.system import OVERALL_TIMEOUT_SECONDS, System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _held_jobs(system: System, users: list[ApiUser]) -> list[dict[str, str]]:
    """One job per user, each held at the provider in ``processing``."""
    system.control.set_faults(hold=True)
    jobs = [user.submit_ok(image=False) for user in users]
    for job in jobs:
        system.control.wait_for_status(job["predictionId"], ["processing"])
    return jobs


def _assert_clean_5xx(response: httpx.Response) -> None:
    assert 500 <= response.status_code <= 599, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] in {"UPSTREAM_ERROR", "INTERNAL_ERROR"}, error
    assert error["message"]


def test_s3_down_during_upload_is_a_clean_5xx_with_nothing_held(quiet: System) -> None:
    user = ApiUser(quiet)
    quiet.stack.stop_part("s3")
    try:
        assert_error(user.submit(image=True), {502, 503}, "UPSTREAM_ERROR")
    finally:
        quiet.stack.start_part("s3")
    assert job_rows(quiet, [user]) == []
    assert user.usage()["used"] == 0
    job = user.submit_ok(image=True)
    user.wait_for(job["id"], {"succeeded"})
    assert_invariants(quiet, [user])


def test_s3_down_during_asset_storage_completes_once_it_is_back(quiet: System) -> None:
    user = ApiUser(quiet)
    (job,) = _held_jobs(quiet, [user])
    quiet.stack.stop_part("s3")
    try:
        quiet.control.set_faults(hold=False)
        quiet.control.wait_for_status(job["predictionId"], ["succeeded"])
        time.sleep(1.5)  # webhook attempts, refreshes and sweeps fail to store meanwhile
        assert user.get(job["id"]).json()["status"] == "processing"
    finally:
        quiet.stack.start_part("s3")
    user.wait_for(job["id"], {"succeeded"}, timeout=OVERALL_TIMEOUT_SECONDS)
    assert_invariants(quiet, [user])


def test_generation_killed_with_jobs_in_flight_recovers_them(quiet: System) -> None:
    """Also the gateway cut off from generation: it answers 503, the emulator retries."""
    users = [ApiUser(quiet) for _ in range(3)]
    jobs = _held_jobs(quiet, users)
    predictions = [job["predictionId"] for job in jobs]
    quiet.stack.kill("generation")
    try:
        _assert_clean_5xx(users[0].get(jobs[0]["id"]))
        _assert_clean_5xx(users[1].submit(image=False))
        quiet.control.set_faults(hold=False)  # the results arrive while it is down
        for prediction in predictions:
            eventually(partial(_completed_statuses, quiet, prediction), bool, timeout=10)
    finally:
        quiet.stack.start_part("generation")
    for user, job in zip(users, jobs, strict=True):
        user.wait_for(job["id"], {"succeeded"})
    for prediction in predictions:
        statuses = eventually(
            partial(_completed_statuses, quiet, prediction),
            lambda statuses: 200 in statuses,
            timeout=40,  # the emulator's next retry (exponential backoff from 0.3 s)
        )
        # The gateway itself answered 503 (it runs; generation does not), then 200.
        assert statuses[0] == 503, statuses
        assert statuses[-1] == 200, statuses
    rows = assert_invariants(quiet, users)
    assert [row["status"] for row in rows] == ["succeeded"] * 3


def test_generation_killed_during_a_provider_create_fails_the_job_cleanly(
    quiet: System,
) -> None:
    user = ApiUser(quiet)
    # Every create attempt answers 503, slowly: retried, the create lasts over 2.4 s.
    quiet.control.set_faults(latency_ms=800, create_errors=[503] * 3)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(user.submit, image=True)
        eventually(lambda: job_rows(quiet, [user]), bool, timeout=10)
        quiet.stack.kill("generation")
        _assert_clean_5xx(pending.result(timeout=30))
    quiet.control.set_faults(latency_ms=0, create_errors=[])
    quiet.stack.start_part("generation")
    # Stuck `starting` without a prediction: the sweep ends it at the overall timeout.
    rows = assert_invariants(quiet, [user])
    assert [(row["status"], row["error"], row["charge"]) for row in rows] == [
        ("failed", "INTERRUPTED", "none")
    ]
    job = user.submit_ok(image=True)
    user.wait_for(job["id"], {"succeeded"})
    assert_invariants(quiet, [user])


def test_postgres_restart_gives_clean_5xx_then_everything_recovers(quiet: System) -> None:
    user, newcomer = ApiUser(quiet), ApiUser(quiet)
    (job,) = _held_jobs(quiet, [user])
    quiet.stack.stop_part("postgres")
    try:
        _assert_clean_5xx(user.get(job["id"]))
        _assert_clean_5xx(newcomer.submit(image=False))
        outage_usage = quiet.http.get(f"{quiet.api}/usage", headers=user.headers)
        _assert_clean_5xx(outage_usage)
    finally:
        quiet.stack.start_part("postgres")
    quiet.control.set_faults(hold=False)
    user.wait_for(job["id"], {"succeeded"})
    fresh = newcomer.submit_ok(image=True)
    newcomer.wait_for(fresh["id"], {"succeeded"})
    assert_invariants(quiet, [user, newcomer])


def _completed_statuses(system: System, prediction_id: str) -> list[int | None]:
    entries = system.control.webhooks(prediction_id)
    return [entry["status_code"] for entry in entries if entry["event"] == "completed"]
