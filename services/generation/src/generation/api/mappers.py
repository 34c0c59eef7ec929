"""Protobuf <-> domain conversions for the generation servicer."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from generation.domain.audit import JobOutcome
from generation.domain.changes import JobChangeRef
from generation.domain.events import Outcome
from generation.domain.jobs import JobView
from generation.domain.presentation import SignedInput
from generation.domain.refine import SourceRef
from generation.domain.states import JobStatus
from generation.domain.submit_request import SubmitCommand
from interior.generation.v1 import generation_pb2 as pb
from kit.errors import NotFound, ValidationError
from kit.ids import parse_uuid

_STATUS: dict[str, pb.JobStatus.ValueType] = {
    JobStatus.STARTING: pb.JOB_STATUS_STARTING,
    JobStatus.PROCESSING: pb.JOB_STATUS_PROCESSING,
    JobStatus.SUCCEEDED: pb.JOB_STATUS_SUCCEEDED,
    JobStatus.FAILED: pb.JOB_STATUS_FAILED,
    JobStatus.CANCELED: pb.JOB_STATUS_CANCELED,
}
_STATUS_NAMES = {value: name for name, value in _STATUS.items()}
_OUTCOME = {
    Outcome.APPLIED: pb.EVENT_OUTCOME_APPLIED,
    Outcome.UNKNOWN_PREDICTION: pb.EVENT_OUTCOME_UNKNOWN_PREDICTION,
    Outcome.STALE: pb.EVENT_OUTCOME_STALE,
}
_MAX_KEY_LENGTH = 200


def owner_id_from(raw: str) -> uuid.UUID:
    """The caller's id; the edge verified it, but never trust a string blindly."""
    try:
        return parse_uuid(raw)
    except ValueError:
        raise ValidationError("owner_id must be a UUID.") from None


def job_id_from(raw: str) -> uuid.UUID:
    """A job id; anything that is not a UUID cannot name a job: NOT_FOUND."""
    try:
        return parse_uuid(raw)
    except ValueError:
        raise NotFound("Generation not found.") from None


# The most jobs one GetJobs reads: a follower's watched jobs, in a few calls.
MAX_JOBS_PER_READ = 500


def job_ids_from(raw: Sequence[str]) -> list[uuid.UUID]:
    """The ids of a GetJobs request (each read once)."""
    if len(raw) > MAX_JOBS_PER_READ:
        raise ValidationError(f"At most {MAX_JOBS_PER_READ} job ids at once.")
    try:
        return list(dict.fromkeys(parse_uuid(item) for item in raw))
    except ValueError:
        raise ValidationError("job_ids must be UUIDs.") from None


def named_job_from(raw: str) -> uuid.UUID | None:
    """The job a webhook's URL names; None for none or anything that is not a UUID (the
    event is still applied: the name only helps with a prediction no job has)."""
    try:
        return parse_uuid(raw) if raw else None
    except ValueError:
        return None


def idempotency_key_from(raw: str) -> str | None:
    """The request's key; None when it sent none (an empty string). A key of spaces
    alone is refused: taken as none, its retries would each make a new job."""
    if not raw:
        return None
    key = raw.strip()
    if not key:
        raise ValidationError("Idempotency-Key must not be blank.")
    if len(key) > _MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ValidationError("Idempotency-Key must be 1-200 printable ASCII characters.")
    return key


def submit_command(request: pb.SubmitGenerationRequest) -> SubmitCommand:
    """The command for a submission's request part (ids checked); inputs come once received."""
    return SubmitCommand(
        owner_id=owner_id_from(request.owner_id),
        idempotency_key=idempotency_key_from(request.idempotency_key),
        mode=request.mode,
        prompt=request.prompt or None,
        room_type=request.room_type or None,
        style=request.style or None,
        inputs=(),
        request_base_url=request.request_base_url or None,
        source=_source_from(request),
    )


# Names no job (every job's id is a random UUID): what a malformed source id becomes.
_NO_JOB = uuid.UUID(int=0)


def _source_from(request: pb.SubmitGenerationRequest) -> SourceRef | None:
    """The refine source. An id or index that cannot name a variant is not refused here,
    at the stream's start: it is looked up (and not found) where any source is, after
    the field, in-flight and quota checks, so it gets the answer a missing one gets."""
    if not request.HasField("source"):
        return None
    try:
        job_id = parse_uuid(request.source.job_id)
    except ValueError:
        job_id = _NO_JOB
    if not 0 <= request.source.variant_idx <= 999:
        job_id = _NO_JOB
    return SourceRef(job_id, request.source.variant_idx)


def input_field(request: pb.SubmitGenerationRequest, index: int) -> str:
    """The name of a declared input: its field, else ``input<n>`` by its position (a
    refine's source being input1)."""
    first = 2 if request.HasField("source") else 1
    return request.inputs[index].field or f"input{index + first}"


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def job_message(job: JobView, inputs: Sequence[SignedInput] = ()) -> pb.Job:
    message = pb.Job(
        id=str(job.id),
        owner_id=str(job.owner_id),
        prediction_id=job.prediction_id or "",
        status=_STATUS[job.status],
        settings=pb.JobSettings(
            mode=job.mode,
            room_type=job.room_type or "",
            style=job.style or "",
            source_generation_id=str(job.source_job_id) if job.source_job_id else "",
        ),
        created_at=_timestamp(job.created_at),
        updated_at=_timestamp(job.updated_at),
        completed_at=_timestamp(job.completed_at),
        render_id=str(job.render_id) if job.render_id else "",
        variants=[
            pb.Variant(
                idx=v.idx,
                object_key=v.object_key,
                thumbnail_object_key=v.thumbnail_key or "",
                width=v.width or 0,
                height=v.height or 0,
            )
            for v in job.variants
        ],
        version=job.version,
        inputs=[pb.InputImage(idx=item.idx, url=item.url) for item in inputs],
    )
    if job.error_code:
        message.error.CopyFrom(pb.JobError(code=job.error_code, message=job.error_message or ""))
    return message


def change_message(change: JobChangeRef) -> pb.JobChange:
    return pb.JobChange(
        version=change.version, job_id=str(change.job_id), owner_id=str(change.owner_id)
    )


def outcome_message(outcome: Outcome) -> pb.EventOutcome.ValueType:
    return _OUTCOME[outcome]


def status_filter_from(value: pb.JobStatus.ValueType) -> str | None:
    """A list's status filter: None for UNSPECIFIED (every status)."""
    if value == pb.JOB_STATUS_UNSPECIFIED:
        return None
    name = _STATUS_NAMES.get(value)
    if name is None:
        raise ValidationError("status is not a known job status.")
    return name


def status_message(status: str) -> pb.JobStatus.ValueType:
    return _STATUS[status]


def outcome_entry(item: JobOutcome) -> pb.JobOutcome:
    return pb.JobOutcome(
        job_id=str(item.job_id),
        owner_id=str(item.owner_id),
        status=_STATUS[item.status],
        created_at=_timestamp(item.created_at),
        has_output=item.has_output,
        charged=item.charged,
        refunded=item.refunded,
        waived=item.waived,
    )
