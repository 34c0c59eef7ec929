"""Protobuf messages -> the REST API's JSON models."""

from __future__ import annotations

from datetime import UTC
from urllib.parse import quote

from google.protobuf.timestamp_pb2 import Timestamp

from edge_api.schemas import (
    InputOut,
    JobErrorOut,
    JobOut,
    JobSettingsOut,
    JobStatusName,
    QuotaOut,
    VariantOut,
)
from interior.generation.v1 import generation_pb2
from interior.usage.v1 import usage_pb2
from kit.errors import InternalError
from kit.timefmt import iso_utc

_STATUS_NAMES: dict[generation_pb2.JobStatus.ValueType, JobStatusName] = {
    generation_pb2.JOB_STATUS_STARTING: "starting",
    generation_pb2.JOB_STATUS_PROCESSING: "processing",
    generation_pb2.JOB_STATUS_SUCCEEDED: "succeeded",
    generation_pb2.JOB_STATUS_FAILED: "failed",
    generation_pb2.JOB_STATUS_CANCELED: "canceled",
}


_STATUS_VALUES = {name: value for value, name in _STATUS_NAMES.items()}


def status_message(status: JobStatusName) -> generation_pb2.JobStatus.ValueType:
    """The protobuf status for a status name of the API."""
    return _STATUS_VALUES[status]


def timestamp_iso(timestamp: Timestamp) -> str:
    """A protobuf timestamp in the one format clients see (``kit.timefmt.iso_utc``)."""
    return iso_utc(timestamp.ToDatetime(tzinfo=UTC))


def job_to_json(job: generation_pb2.Job, public_base_url: str) -> JobOut:
    """The job JSON; variant URLs are ``public_base_url`` + ``/`` + object key."""
    status = _STATUS_NAMES.get(job.status)
    if status is None:
        # The generation service broke its contract: never guess a status.
        raise InternalError()
    error = (
        JobErrorOut(code=job.error.code, message=job.error.message)
        if job.HasField("error") and job.error.code
        else None
    )
    variants = (
        [_variant(v, public_base_url) for v in sorted(job.variants, key=lambda v: v.idx)]
        if status == "succeeded"
        else []
    )
    return JobOut(
        id=job.id,
        prediction_id=job.prediction_id or None,
        status=status,
        settings=JobSettingsOut(
            mode=job.settings.mode,
            room_type=job.settings.room_type or None,
            style=job.settings.style or None,
            source_generation_id=job.settings.source_generation_id or None,
        ),
        error=error,
        created_at=timestamp_iso(job.created_at),
        updated_at=timestamp_iso(job.updated_at),
        completed_at=timestamp_iso(job.completed_at) if job.HasField("completed_at") else None,
        inputs=[InputOut(idx=item.idx, url=item.url) for item in sorted(job.inputs, key=_idx)],
        variants=variants,
    )


def _variant(variant: generation_pb2.Variant, public_base_url: str) -> VariantOut:
    thumbnail = variant.thumbnail_object_key
    return VariantOut(
        idx=variant.idx,
        url=f"{public_base_url}/{quote(variant.object_key, safe='/')}",
        thumbnail_url=f"{public_base_url}/{quote(thumbnail, safe='/')}" if thumbnail else None,
        width=variant.width or None,
        height=variant.height or None,
    )


def _idx(item: generation_pb2.InputImage) -> int:
    return item.idx


def quota_to_json(quota: usage_pb2.Quota) -> QuotaOut:
    """The usage JSON."""
    return QuotaOut(
        plan=quota.plan,
        monthly_generations=quota.monthly_generations,
        used=quota.used,
        remaining=quota.remaining,
        period_start=timestamp_iso(quota.period_start),
        period_end=timestamp_iso(quota.period_end),
    )
