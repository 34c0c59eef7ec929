"""Provider trouble through the real stack: timeouts, 5xx and 429 on create, get and
cancel; output files failing or slow. Each case ends with every invariant checked."""

from __future__ import annotations

import time

import pytest

from tests.faults.checks import assert_invariants, eventually
from tests.faults.client import ApiUser, assert_error
from tests.faults.system import OVERALL_TIMEOUT_SECONDS, System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Above the adapter's request timeout (runtime config: 1 s in these suites).
TIMES_OUT_MS = 1500


def test_create_5xx_and_429_are_retried(quiet: System) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(create_errors=[503, 429])
    job = user.submit_ok(image=True)
    user.wait_for(job["id"], {"succeeded"})
    assert quiet.control.faults()["create_errors"] == []
    assert_invariants(quiet, [user])


def test_create_failing_for_good_is_502_without_charge_or_held_slot(quiet: System) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(create_errors=[500, 503, 502])
    assert_error(user.submit(image=True), {502}, "UPSTREAM_ERROR")
    assert user.usage()["used"] == 0
    retry = user.submit_ok(image=True)  # no TOO_MANY_INFLIGHT: the slot was freed
    user.wait_for(retry["id"], {"succeeded"})
    rows = assert_invariants(quiet, [user])
    assert [row["status"] for row in rows] == ["failed", "succeeded"]


def test_a_create_whose_answer_is_lost_goes_on_with_the_run_its_webhook_names(
    quiet: System,
) -> None:
    user = ApiUser(quiet)
    runs_before = len(quiet.control.predictions())
    # The create reaches the provider and starts a run; its answer comes too late, but
    # the run's start webhook (its URL names the job) arrives while we wait for it.
    quiet.control.set_faults(create_answer_delay_ms=TIMES_OUT_MS)
    job = user.submit_ok(image=False)
    quiet.control.set_faults(create_answer_delay_ms=0)
    runs = quiet.control.predictions()[runs_before:]
    # One run, not sent again, and it is the job's.
    assert [run["id"] for run in runs] == [job["predictionId"]]
    assert runs[0]["webhook"].endswith(f"/api/v1/webhooks/replicate?job={job['id']}")
    done = user.wait_for(job["id"], {"succeeded"})
    assert len(done["variants"]) == 1
    assert user.usage()["used"] == 1
    rows = assert_invariants(quiet, [user])
    assert [(row["status"], row["error"]) for row in rows] == [("succeeded", "")]


def test_a_create_timing_out_unnamed_is_502_and_its_run_is_stopped_when_it_calls(
    quiet: System,
) -> None:
    user = ApiUser(quiet)
    runs_before = len(quiet.control.predictions())
    # The answer comes too late and the run's webhooks are lost meanwhile; it is held
    # from settling, as a real run takes seconds.
    quiet.control.set_faults(create_answer_delay_ms=TIMES_OUT_MS, drop_webhooks="all", hold=True)
    began = time.monotonic()
    assert_error(user.submit(image=False), {502}, "UPSTREAM_ERROR")
    assert time.monotonic() - began < 10  # retries are bounded
    quiet.control.set_faults(create_answer_delay_ms=0, drop_webhooks=0)
    # It was not sent again: a retry would have started a second run on our account.
    [orphan] = quiet.control.predictions()[runs_before:]
    assert orphan["status"] == "processing"
    # The run's start webhook comes late: its job failed without it, so nobody would
    # follow it. It is canceled, and stops costing.
    quiet.control.redeliver(orphan["id"], "start")
    quiet.control.wait_for_status(orphan["id"], {"canceled"})
    quiet.control.set_faults(hold=False)
    job = user.submit_ok(image=False)
    user.wait_for(job["id"], {"succeeded"})
    assert user.usage()["used"] == 1
    rows = assert_invariants(quiet, [user])
    assert [(row["status"], row["error"]) for row in rows] == [
        ("failed", "UPSTREAM_ERROR"),
        ("succeeded", ""),
    ]


def test_get_errors_with_every_webhook_lost_are_recovered(quiet: System) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(drop_webhooks="all", get_errors=[503, 500, 429, 502, 503, 500])
    job = user.submit_ok(image=True)
    deadline = time.monotonic() + 15
    status = "starting"
    while status != "succeeded" and time.monotonic() < deadline:
        response = user.get(job["id"])
        assert response.status_code == 200, response.text  # a GET never fails for the provider
        status = response.json()["status"]
        time.sleep(0.1)
    assert status == "succeeded"
    assert_invariants(quiet, [user])


def test_get_timing_out_keeps_the_job_in_flight_until_the_provider_answers(
    quiet: System,
) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(drop_webhooks="all")
    job = user.submit_ok(image=False)
    quiet.control.wait_for_status(job["predictionId"], ["succeeded"])
    quiet.control.set_faults(latency_ms=TIMES_OUT_MS)
    time.sleep(1.0)  # stale now: this GET polls, and the poll times out
    response = user.get(job["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] in {"starting", "processing"}
    quiet.control.set_faults(latency_ms=0)
    user.wait_for(job["id"], {"succeeded"})
    assert_invariants(quiet, [user])


def test_cancel_failing_at_the_provider_still_cancels_and_refunds(quiet: System) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(hold=True)
    job = user.submit_ok(image=True)
    assert user.usage()["used"] == 1
    quiet.control.set_faults(cancel_errors=[503, 500, 502])
    canceled = user.cancel(job["id"])
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    # The provider's run goes on and succeeds: its late webhook changes nothing.
    quiet.control.set_faults(hold=False)
    quiet.control.wait_for_status(job["predictionId"], ["succeeded"])
    answered = eventually(
        lambda: quiet.control.webhooks(job["predictionId"]),
        lambda entries: any(
            e["event"] == "completed" and e["status_code"] is not None for e in entries
        ),
        timeout=15,
    )
    assert any(e["event"] == "completed" and e["status_code"] == 200 for e in answered)
    assert user.get(job["id"]).json()["status"] == "canceled"
    rows = assert_invariants(quiet, [user])
    assert [(row["status"], row["refund"]) for row in rows] == [("canceled", "done")]


def test_cancel_timing_out_then_a_429_is_retried(quiet: System) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(hold=True)
    first = user.submit_ok(image=False)
    quiet.control.set_faults(latency_ms=TIMES_OUT_MS)
    assert user.cancel(first["id"]).json()["status"] == "canceled"
    quiet.control.set_faults(latency_ms=0, cancel_errors=[429])
    second = user.submit_ok(image=False)
    assert user.cancel(second["id"]).json()["status"] == "canceled"
    assert quiet.control.prediction(second["predictionId"])["status"] == "canceled"
    quiet.control.set_faults(hold=False)
    assert_invariants(quiet, [user])


def test_output_failing_then_reachable_ends_succeeded(quiet: System) -> None:
    user = ApiUser(quiet)
    # More failures than one download's attempts: the first webhook cannot store the
    # output, the gateway answers 503, and the emulator retries the terminal webhook.
    quiet.control.set_faults(output_errors=[500, 503, 502, 500, 503])
    job = user.submit_ok(image=True)
    user.wait_for(job["id"], {"succeeded"})
    assert quiet.control.faults()["output_errors"] == []
    assert_invariants(quiet, [user])


def test_output_slow_then_reachable_ends_succeeded(quiet: System) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(output_delay_ms=TIMES_OUT_MS)
    job = user.submit_ok(image=True)
    quiet.control.wait_for_status(job["predictionId"], ["succeeded"])
    time.sleep(2.0)  # downloads time out meanwhile
    assert user.get(job["id"]).json()["status"] in {"starting", "processing"}
    quiet.control.set_faults(output_delay_ms=0)
    user.wait_for(job["id"], {"succeeded"}, timeout=OVERALL_TIMEOUT_SECONDS)
    assert_invariants(quiet, [user])


def test_output_never_reachable_fails_at_the_overall_timeout_with_a_refund(
    quiet: System,
) -> None:
    user = ApiUser(quiet)
    quiet.control.set_faults(output_delay_ms=3 * TIMES_OUT_MS)
    job = user.submit_ok(image=False)
    body = user.wait_for(job["id"], {"failed", "succeeded"}, timeout=OVERALL_TIMEOUT_SECONDS + 8)
    assert body["status"] == "failed"
    assert body["error"]["code"] == "TIMED_OUT"
    assert body.get("variants", []) == []
    quiet.control.set_faults(output_delay_ms=0)
    rows = assert_invariants(quiet, [user])
    assert [(row["status"], row["refund"]) for row in rows] == [("failed", "done")]
