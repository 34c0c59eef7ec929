"""POST /generations and GET / PATCH / DELETE /generations/{id}."""

from __future__ import annotations

import asyncio
from typing import Annotated

import grpc
from fastapi import APIRouter, Header, Request, Response
from python_multipart.multipart import parse_options_header

from edge_api.anonymous import zero_plan
from edge_api.auth import Authenticated, Owner
from edge_api.mappers import job_to_json
from edge_api.openapi import CANCEL_BODY, SUBMIT_BODY, errors
from edge_api.routes import API_PREFIX
from edge_api.routes.params import JobId, canonical_job_id, entry_base, public_base
from edge_api.schemas import IDEMPOTENCY_KEY_PATTERN, CancelRequest, JobOut, SubmissionFields
from edge_api.state import EdgeState, State
from edge_api.submission import Submission, send_submission
from edge_api.uploads import (
    MinRate,
    MultipartForm,
    multipart_boundary,
    parse_model,
    read_json,
    read_multipart,
)
from interior.generation.v1 import generation_pb2
from kit.errors import (
    LimitExceeded,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationError,
)
from kit.grpc_client import outgoing_metadata

router = APIRouter(prefix=f"{API_PREFIX}/generations", tags=["generations"])

JSON_TYPE = b"application/json"
MULTIPART_TYPE = b"multipart/form-data"


async def _read_submission(request: Request, state: EdgeState) -> Submission:
    """The whole form (text fields may follow the files) or JSON body, checked.

    Either body holds a submission slot while it arrives, so both get the minimum
    rate and, as the ceiling for the whole body, the read timeout (408 for each).
    """
    media_type, options = parse_options_header(request.headers.get("content-type"))
    if media_type not in (MULTIPART_TYPE, JSON_TYPE):
        raise UnsupportedMediaType("Send multipart/form-data (with images) or application/json.")
    settings = state.settings
    min_rate = MinRate(settings.upload_min_bytes_per_second, settings.upload_rate_window_seconds)
    try:
        async with asyncio.timeout(settings.upload_read_timeout_seconds):
            if media_type == JSON_TYPE:
                data = await read_json(request, min_rate=min_rate)
                fields = parse_model(SubmissionFields, _json_fields(data), strict=True)
                return Submission(fields, MultipartForm())
            boundary = multipart_boundary(options)
            max_bytes = state.runtime_config.uploads.max_bytes
            form = await read_multipart(request, boundary, max_bytes, min_rate)
    except TimeoutError:
        raise RequestTimeout("The upload took too long.") from None
    try:
        fields = parse_model(SubmissionFields, form.fields)
    except BaseException:
        form.close()
        raise
    return Submission(fields, form)


# The multipart spelling of a refine source: JSON names it as "source": {...} only.
_FORM_ONLY_FIELDS = ("sourceGenerationId", "sourceVariantIdx")


def _json_fields(data: object) -> object:
    """A JSON body as the form model reads it, refused when it uses the form's names."""
    if isinstance(data, dict):
        for name in _FORM_ONLY_FIELDS:
            if name in data:
                raise ValidationError(f'{name}: not a JSON field; send "source": {{...}}')
    return data


def _idempotency_key(header: str | None, field: str | None) -> str:
    if header is not None and field is not None and header != field:
        raise ValidationError("The Idempotency-Key header and the idempotencyKey field differ.")
    return header or field or ""


# Beyond a failed DELETE call's deadline, the time generation may take to notice that
# its caller gave up (its transaction is then rolled back or committed).
_DEADLINE_SLACK_SECONDS = 5.0


def _delete_outcome_unknown_seconds(state: EdgeState) -> float:
    """How long a job whose DELETE call failed may still change by it."""
    return state.rpc_timeout() + _DEADLINE_SLACK_SECONDS


# Answers that say the DELETE did nothing (someone else's job, one not finished, a bad
# id): the job's views stay as they were. Any other failure may hide a deletion.
_REFUSED = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


@router.post(
    "",
    status_code=202,
    summary="Submit a generation",
    responses={
        202: {
            "description": "Accepted. `Location` names the job; a replay of an earlier "
            "submission with the same idempotency key carries `Idempotent-Replayed: true`."
        },
        **errors(400, 401, 402, 404, 408, 409, 413, 415, 422, 429, 500, 502, 503),
    },
    openapi_extra=SUBMIT_BODY,
)
async def submit_generation(
    request: Request,
    response: Response,
    caller: Authenticated,
    state: State,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Client-chosen key: a repeat returns the same job and charges once.",
        ),
    ] = None,
) -> JobOut:
    """Validate and stream the upload, then hand it to the generation service."""
    if caller.anonymous:  # a zero plan: refused before a byte of the upload is read
        raise LimitExceeded(periodEnd=zero_plan().period_end)
    if len(request.headers.getlist("idempotency-key")) > 1:
        # Which one would be the key? Two answers for one submission could follow.
        raise ValidationError("Send one Idempotency-Key header.")
    owner_id = caller.owner_id
    clients = state.connected()
    # Authenticated first (owner_id), so the per-user limit applies before a slot is taken.
    async with state.uploads.admit(owner_id):
        submission = await _read_submission(request, state)
        try:
            submission.check_limits(state.runtime_config)
            header = submission.request(
                owner_id,
                _idempotency_key(idempotency_key, submission.fields.idempotency_key),
                entry_base(state, request),
            )
            call = clients.generation.SubmitGeneration(
                timeout=state.settings.grpc_submit_deadline_seconds,
                metadata=outgoing_metadata(),
            )
            reply = await send_submission(call, header, submission.files())
        finally:
            submission.close()
    job = job_to_json(reply.job, public_base(state, request))
    response.headers["Location"] = f"{API_PREFIX}/generations/{job.id}"
    if reply.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job


@router.get(
    "/{job_id}",
    summary="Get a generation",
    responses=errors(401, 404, 500, 502, 503),
)
async def get_generation(job_id: JobId, request: Request, owner_id: Owner, state: State) -> JobOut:
    """The job; a stale running job is refreshed from the provider first.

    A settled job this edge already served is answered from memory while the change
    feed is live (edge_api.settled); anything else, or someone else's job, is asked.
    """
    job_id = canonical_job_id(job_id)
    state.feed.ensure_running()
    settled = state.feed.settled
    job = settled.lookup(job_id, owner_id)
    if job is None:
        with settled.reading(job_id) as read:
            reply = await state.connected().generation.GetGeneration(
                generation_pb2.GetGenerationRequest(owner_id=owner_id, job_id=job_id),
                timeout=state.rpc_timeout(),
                metadata=outgoing_metadata(),
            )
            settled.keep(read, reply.job, owner_id)
        job = reply.job
    return job_to_json(job, public_base(state, request))


# RFC 9110 9.1: HEAD wherever GET (uvicorn sends the headers without the body).
router.head("/{job_id}", include_in_schema=False)(get_generation)


@router.patch(
    "/{job_id}",
    summary="Cancel a running generation",
    responses=errors(400, 401, 404, 409, 413, 415, 500, 502, 503),
    openapi_extra=CANCEL_BODY,
)
async def cancel_generation(
    job_id: JobId, request: Request, owner_id: Owner, state: State
) -> JobOut:
    """`{"action": "cancel"}`: only `starting` / `processing` jobs (else 409)."""
    job_id = canonical_job_id(job_id)
    media_type, _ = parse_options_header(request.headers.get("content-type"))
    if media_type != JSON_TYPE:
        raise UnsupportedMediaType("Send application/json.")
    parse_model(CancelRequest, await read_json(request))
    reply = await state.connected().generation.CancelGeneration(
        generation_pb2.CancelGenerationRequest(owner_id=owner_id, job_id=job_id),
        timeout=state.rpc_timeout(),
        metadata=outgoing_metadata(),
    )
    # This edge's watchers of the job show it now, whatever the feed's delay.
    state.feed.share(job_id, reply.job)
    return job_to_json(reply.job, public_base(state, request))


@router.delete(
    "/{job_id}",
    summary="Delete a finished generation's render",
    description="Soft-deletes the render of a finished job and answers 200 with the job "
    "(its `variants` are then empty). 409 JOB_NOT_FINISHED while it is still running.",
    responses=errors(401, 404, 409, 500, 502, 503),
)
async def delete_generation(
    job_id: JobId, request: Request, owner_id: Owner, state: State
) -> JobOut:
    """Soft-delete a finished job's render.

    The reply counts as a change of the job here and now: this edge never answers
    an older view (with the deleted variants) again, whatever the feed's delay.
    """
    job_id = canonical_job_id(job_id)
    state.feed.ensure_running()
    settled = state.feed.settled
    with settled.reading(job_id) as read:
        try:
            reply = await state.connected().generation.DeleteGeneration(
                generation_pb2.DeleteGenerationRequest(owner_id=owner_id, job_id=job_id),
                timeout=state.rpc_timeout(),
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in _REFUSED:
                settled.forget(
                    job_id, _delete_outcome_unknown_seconds(state)
                )  # it may have been done
            raise
        except BaseException:
            settled.forget(job_id, _delete_outcome_unknown_seconds(state))
            raise
        settled.answered(job_id, reply.job.version)
        settled.keep(read, reply.job, owner_id)
    return job_to_json(reply.job, public_base(state, request))
