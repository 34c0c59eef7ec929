"""Runs the provider names before we do: one whose create's answer was lost is adopted
by its job, and one no job will follow is stopped.

A create whose answer never comes (a read timeout after the request reached the
provider) has started a run we hold no id for: it was billed and its render thrown
away, while the user was told to try again. Every webhook URL we give the provider
names its job (``?job=<id>``), so that run's first webhook (``start``, sent as it
begins, usually long before our create gives up) says whose it is. For a prediction
no job has:

- its job is still ``starting`` without a run: the job adopts it, with the same
  conditional write the create's answer makes (whichever comes first names the run,
  the other finds it named). The submission whose create then fails finds the run
  attached and goes on as if the answer had come (domain/prediction_start.py).
- its job has another run, or ended without one (its create failed first, its user
  canceled): nobody follows this run, so it is canceled at the provider, which stops
  its billing, unless it already ended.

Only the event's own prediction is ever attached or canceled, and only while no job
has it. The job is read from the webhook body's ``webhook`` field, which the provider's
signature covers; the URL's query, which it does not, only when the body has none.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit, urlunsplit

from generation.domain import jobs
from generation.domain.context import GenerationContext
from generation.domain.provider import Prediction, ProviderError
from generation.domain.records import Job
from kit.ids import parse_uuid
from kit.logging import get_logger

log = get_logger("generation.run_claims")

JOB_PARAMETER = "job"


def webhook_url_for(url: str, job_id: uuid.UUID) -> str:
    """The webhook URL the provider is given for ``job_id``'s run: ``url?job=<id>``."""
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}{JOB_PARAMETER}={job_id}"))


def named_job(prediction: Prediction, delivered_to: uuid.UUID | None) -> uuid.UUID | None:
    """The job a run's webhook names: the one in the (signed) body's webhook URL when
    the body has one, else ``delivered_to``, the one in the URL it was posted to."""
    if prediction.webhook_url is None:
        return delivered_to
    try:
        values = parse_qs(urlsplit(prediction.webhook_url).query).get(JOB_PARAMETER, [])
        return parse_uuid(values[-1]) if values else None
    except ValueError:
        return None


async def claim_run(
    ctx: GenerationContext, prediction: Prediction, delivered_to: uuid.UUID | None
) -> Job | None:
    """The job that adopts ``prediction`` (unknown to every job), or None when no job is
    named or the run is nobody's (it is then canceled, unless it already ended).
    ``delivered_to``: the job the webhook's URL names (see :func:`named_job`)."""
    job_id = named_job(prediction, delivered_to)
    if job_id is None:
        return None
    async with ctx.statements() as stores:
        adopted = await stores.jobs.attach_prediction(job_id, prediction.id, ctx.clock.now())
        current = adopted or await stores.jobs.get(job_id)
    if current is None:
        return None
    if adopted is not None:
        # Also the usual order when a run's start webhook beats the create's answer.
        log.info("job.run_adopted", **jobs.log_fields(adopted))
        return adopted
    if current.prediction_id == prediction.id:  # the create's answer named it just now
        return current
    fields = jobs.log_fields(current)
    if prediction.status.is_terminal:
        log.info("provider.orphan_run_ended", **fields, orphanPredictionId=prediction.id)
        return None
    if await cancel_quietly(ctx, prediction.id) is not None:
        log.warning("provider.orphan_run_canceled", **fields, orphanPredictionId=prediction.id)
    else:  # its next webhook (while it runs) tries again
        log.warning("provider.orphan_cancel_failed", **fields, orphanPredictionId=prediction.id)
    return None


async def cancel_quietly(
    ctx: GenerationContext,
    prediction_id: str,
    job: jobs.JobRef | None = None,
    status: str | None = None,
) -> Prediction | None:
    """Cancel a run at the provider: the run as the provider answered, or None (logged,
    never raised) when that failed. ``job``: the job the run was for, named in that line
    (with ``status`` when the job's own is not the one to log)."""
    try:
        return await ctx.provider.cancel_prediction(prediction_id)
    except ProviderError as error:
        fields = jobs.log_fields(job, status) if job is not None else {}
        log.warning(
            "provider.cancel_failed",
            **{**fields, "predictionId": prediction_id},
            error=type(error).__name__,
        )
        return None
