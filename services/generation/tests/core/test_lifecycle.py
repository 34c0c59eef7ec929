"""The core through the real servicer: submit, webhook, settle, cancel, delete, retry.

Charges and refunds are read back through ListJobOutcomes (what the usage audit
sees), so a settlement step that is skipped fails here, not only end to end.
"""

from __future__ import annotations

import uuid

import pytest

from generation.domain.provider import Prediction
from interior.generation.v1 import generation_pb2 as pb
from services.generation.tests.core.stack import Core, error_of


def owner() -> uuid.UUID:
    return uuid.uuid4()


async def test_submit_then_succeeded_webhook_stores_the_render_and_charges_once(core: Core) -> None:
    user = owner()
    submitted = await core.submit(user)
    job = submitted.job
    assert job.status == pb.JOB_STATUS_STARTING
    assert job.prediction_id
    assert not submitted.replayed

    applied = await core.apply_webhook(job.prediction_id, "succeeded")
    assert (applied.outcome, applied.status) == (pb.EVENT_OUTCOME_APPLIED, pb.JOB_STATUS_SUCCEEDED)
    shown = await core.get(user, job.id)
    assert shown.status == pb.JOB_STATUS_SUCCEEDED
    assert shown.render_id
    assert shown.variants
    outcome = await core.outcome(user, job.id)
    assert (outcome.charged, outcome.refunded, outcome.has_output) == (True, False, True)


async def test_the_same_webhook_twice_is_stale_the_second_time(core: Core) -> None:
    user = owner()
    job = (await core.submit(user)).job
    await core.apply_webhook(job.prediction_id, "succeeded")
    again = await core.redeliver(job.prediction_id, "succeeded")
    assert (again.outcome, again.status) == (pb.EVENT_OUTCOME_STALE, pb.JOB_STATUS_SUCCEEDED)


async def test_a_failed_run_is_refunded(core: Core) -> None:
    user = owner()
    job = (await core.submit(user)).job
    applied = await core.apply_webhook(job.prediction_id, "failed")
    assert applied.status == pb.JOB_STATUS_FAILED
    shown = await core.get(user, job.id)
    assert shown.error.code == "PROVIDER_FAILED"
    assert not shown.variants
    outcome = await core.outcome(user, job.id)
    assert (outcome.charged, outcome.refunded, outcome.has_output) == (True, True, False)


async def test_cancel_ends_the_job_refunds_it_and_frees_the_slot(core: Core) -> None:
    user = owner()
    job = (await core.submit(user)).job
    canceled = await core.stub.CancelGeneration(
        pb.CancelGenerationRequest(owner_id=str(user), job_id=job.id), timeout=30
    )
    assert canceled.job.status == pb.JOB_STATUS_CANCELED
    outcome = await core.outcome(user, job.id)
    assert (outcome.charged, outcome.refunded) == (True, True)
    # The provider's own event about it comes late: it changes nothing.
    late = await core.redeliver(job.prediction_id, "canceled")
    assert (late.outcome, late.status) == (pb.EVENT_OUTCOME_STALE, pb.JOB_STATUS_CANCELED)
    assert (await core.submit(user)).job.id != job.id


async def test_a_cancel_the_providers_webhook_ends_first_says_its_owner_canceled(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cancel asks the provider first, then ends the job; the provider's ``canceled``
    # webhook, applied in between, ends it first. The job still says who canceled it.
    user = owner()
    job = (await core.submit(user)).job
    provider = core.app.context.provider
    cancel_at_provider = provider.cancel_prediction

    async def cancel_then_webhook(prediction_id: str) -> Prediction:
        prediction = await cancel_at_provider(prediction_id)
        applied = await core.redeliver(prediction_id, "canceled")
        assert applied.outcome == pb.EVENT_OUTCOME_APPLIED  # the webhook won the race
        return prediction

    monkeypatch.setattr(provider, "cancel_prediction", cancel_then_webhook)
    canceled = await core.stub.CancelGeneration(
        pb.CancelGenerationRequest(owner_id=str(user), job_id=job.id), timeout=30
    )
    assert canceled.job.status == pb.JOB_STATUS_CANCELED
    assert canceled.job.error.message == "You canceled this generation."
    assert (await core.get(user, job.id)).error.message == "You canceled this generation."
    outcome = await core.outcome(user, job.id)
    assert (outcome.charged, outcome.refunded) == (True, True)


async def test_a_run_the_provider_canceled_on_its_own_says_so(core: Core) -> None:
    user = owner()
    job = (await core.submit(user)).job
    applied = await core.apply_webhook(job.prediction_id, "canceled")
    assert applied.status == pb.JOB_STATUS_CANCELED
    shown = await core.get(user, job.id)
    assert (shown.error.code, shown.error.message) == ("CANCELED", "The generation was canceled.")


async def test_cancel_of_a_job_that_finished_at_the_provider_keeps_its_result(core: Core) -> None:
    # The run finished but no webhook was applied yet: the cancel learns it from the
    # provider, applies the result, and the conditional end must then leave it alone.
    user = owner()
    job = (await core.submit(user)).job
    await core.advance(job.prediction_id, "succeeded")
    error = await error_of(
        core.stub.CancelGeneration(
            pb.CancelGenerationRequest(owner_id=str(user), job_id=job.id), timeout=30
        )
    )
    assert error.code == "JOB_NOT_CANCELLABLE"
    assert (await core.get(user, job.id)).status == pb.JOB_STATUS_SUCCEEDED
    assert not (await core.outcome(user, job.id)).refunded


async def test_delete_hides_the_render_and_needs_a_finished_job(core: Core) -> None:
    user = owner()
    job = (await core.submit(user)).job
    early = await error_of(
        core.stub.DeleteGeneration(
            pb.DeleteGenerationRequest(owner_id=str(user), job_id=job.id), timeout=30
        )
    )
    assert early.code == "JOB_NOT_FINISHED"
    await core.apply_webhook(job.prediction_id, "succeeded")
    deleted = await core.stub.DeleteGeneration(
        pb.DeleteGenerationRequest(owner_id=str(user), job_id=job.id), timeout=30
    )
    assert not deleted.job.variants
    assert not deleted.job.render_id
    shown = await core.get(user, job.id)
    assert shown.status == pb.JOB_STATUS_SUCCEEDED
    assert not shown.variants


async def test_a_retry_under_the_same_key_answers_the_same_job(core: Core) -> None:
    user = owner()
    first = await core.submit(user, key="retry-1")
    again = await core.submit(user, key="retry-1")
    assert again.replayed
    assert again.job.id == first.job.id
    reused = await error_of(core.submit(user, key="retry-1", prompt="a different room entirely"))
    assert reused.code == "IDEMPOTENCY_KEY_REUSED"


async def test_a_second_job_while_one_is_in_flight_is_refused(core: Core) -> None:
    user = owner()
    first = (await core.submit(user)).job
    refused = await error_of(core.submit(user, key="second"))
    assert refused.code == "TOO_MANY_INFLIGHT"
    await core.apply_webhook(first.prediction_id, "succeeded")
    assert (await core.submit(user, key="second")).job.status == pb.JOB_STATUS_STARTING


async def test_someone_elses_job_is_not_found(core: Core) -> None:
    job = (await core.submit(owner())).job
    error = await error_of(core.get(owner(), job.id))
    assert error.code == "NOT_FOUND"
