"""RPC-level cases of the GenerationServicer through grpcio-testing, over in-memory ports:
argument errors, not-found, owner checks and how domain results map to responses."""

from __future__ import annotations

import uuid

import grpc
import pytest

from generation.api.mappers import idempotency_key_from
from generation.domain.records import Job
from generation.domain.states import JobStatus
from interior.generation.v1 import generation_pb2 as pb
from kit.errors import ValidationError
from services.generation.tests.rpc.fakes import FakeStores, make_job, rpc_server, unary


def test_an_owner_id_that_is_no_uuid_is_a_validation_error() -> None:
    server = rpc_server(FakeStores())
    request = pb.GetGenerationRequest(owner_id="someone", job_id=str(uuid.uuid4()))
    _, code, details = unary(server, "GetGeneration", request)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR")


def test_an_idempotency_key_of_spaces_is_refused_not_taken_as_none() -> None:
    """Taken as no key, each retry of such a submission would make a new job (and debit)."""
    assert idempotency_key_from("") is None
    assert idempotency_key_from("k-1") == "k-1"
    with pytest.raises(ValidationError):
        idempotency_key_from("   ")


def test_a_job_id_that_is_no_uuid_is_not_found() -> None:
    server = rpc_server(FakeStores())
    request = pb.GetGenerationRequest(owner_id=str(uuid.uuid4()), job_id="../etc")
    _, code, details = unary(server, "GetGeneration", request)
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


def test_someone_elses_job_is_not_found_for_every_method() -> None:
    stores = FakeStores()
    job = stores.add(make_job(uuid.uuid4(), JobStatus.SUCCEEDED))
    server = rpc_server(stores)
    stranger, job_id = str(uuid.uuid4()), str(job.id)
    for method, request in (
        ("GetGeneration", pb.GetGenerationRequest(owner_id=stranger, job_id=job_id)),
        ("CancelGeneration", pb.CancelGenerationRequest(owner_id=stranger, job_id=job_id)),
        ("DeleteGeneration", pb.DeleteGenerationRequest(owner_id=stranger, job_id=job_id)),
    ):
        _, code, _ = unary(server, method, request)
        assert code == grpc.StatusCode.NOT_FOUND, method
    assert stores.ended == []


def test_a_job_maps_to_its_message_with_signed_inputs() -> None:
    stores = FakeStores()
    owner = uuid.uuid4()
    job = stores.add(
        make_job(
            owner,
            JobStatus.FAILED,
            prediction_id="p1",
            error_code="PROVIDER_FAILED",
            error_message="The image model could not complete this design.",
            input_keys=(f"{owner}/inputs/a.jpg",),
        )
    )
    response, code, _ = unary(
        rpc_server(stores),
        "GetGeneration",
        pb.GetGenerationRequest(owner_id=str(owner), job_id=str(job.id)),
    )
    assert code == grpc.StatusCode.OK
    shown = response.job
    assert (shown.id, shown.status, shown.prediction_id) == (
        str(job.id),
        pb.JOB_STATUS_FAILED,
        "p1",
    )
    assert (shown.settings.mode, shown.settings.style, shown.version) == (
        "imagine",
        "scandinavian",
        7,
    )
    assert shown.error.code == "PROVIDER_FAILED"
    (signed,) = shown.inputs
    assert signed.idx == 0
    assert signed.url.startswith(f"https://signed.test/private/{owner}/inputs/a.jpg?ttl=")


def test_cancel_of_a_finished_job_is_refused_and_changes_nothing() -> None:
    stores = FakeStores()
    owner = uuid.uuid4()
    job = stores.add(make_job(owner, JobStatus.SUCCEEDED))
    request = pb.CancelGenerationRequest(owner_id=str(owner), job_id=str(job.id))
    _, code, details = unary(rpc_server(stores), "CancelGeneration", request)
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_CANCELLABLE")
    assert stores.ended == []


def test_cancel_of_an_unsubmitted_job_ends_it_canceled() -> None:
    stores = FakeStores()
    owner = uuid.uuid4()
    job = stores.add(make_job(owner, JobStatus.STARTING))
    request = pb.CancelGenerationRequest(owner_id=str(owner), job_id=str(job.id))
    response, code, _ = unary(rpc_server(stores), "CancelGeneration", request)
    assert code == grpc.StatusCode.OK
    assert response.job.status == pb.JOB_STATUS_CANCELED
    assert stores.ended == [(job.id, JobStatus.CANCELED, "CANCELED")]


def test_delete_of_a_job_in_flight_is_refused() -> None:
    stores = FakeStores()
    owner = uuid.uuid4()
    job = stores.add(make_job(owner, JobStatus.PROCESSING))
    request = pb.DeleteGenerationRequest(owner_id=str(owner), job_id=str(job.id))
    _, code, details = unary(rpc_server(stores), "DeleteGeneration", request)
    assert (code, details) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_FINISHED")


def test_a_status_filter_out_of_the_enum_is_a_validation_error() -> None:
    request = pb.ListGenerationsRequest(owner_id=str(uuid.uuid4()), status=99)  # type: ignore[arg-type]
    _, code, _ = unary(rpc_server(FakeStores()), "ListGenerations", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_job_outcomes_map_charge_refund_and_output_and_page_on() -> None:
    stores = FakeStores()
    owner = uuid.uuid4()
    charged = stores.add(make_job(owner, JobStatus.SUCCEEDED, charge_state="charged"))
    refunded = stores.add(
        make_job(owner, JobStatus.FAILED, charge_state="charged", refund_state="done")
    )
    stores.with_output.add(charged.id)
    server = rpc_server(stores)
    first, code, _ = unary(
        server, "ListJobOutcomes", pb.ListJobOutcomesRequest(owner_id=str(owner), page_size=1)
    )
    assert code == grpc.StatusCode.OK
    assert first.next_page_token == str(min(charged.id, refunded.id))
    rest, _, _ = unary(
        server,
        "ListJobOutcomes",
        pb.ListJobOutcomesRequest(owner_id=str(owner), page_token=first.next_page_token),
    )
    entries = {item.job_id: item for item in [*first.jobs, *rest.jobs]}
    assert rest.next_page_token == ""
    got = entries[str(charged.id)]
    assert (got.charged, got.refunded, got.has_output, got.status) == (
        True,
        False,
        True,
        pb.JOB_STATUS_SUCCEEDED,
    )
    got = entries[str(refunded.id)]
    assert (got.charged, got.refunded, got.has_output) == (True, True, False)


def test_a_page_token_that_is_no_job_id_is_a_validation_error() -> None:
    request = pb.ListJobOutcomesRequest(page_token="next")
    _, code, details = unary(rpc_server(FakeStores()), "ListJobOutcomes", request)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR")


def test_an_event_too_large_is_refused_before_it_is_parsed() -> None:
    request = pb.ApplyProviderEventRequest(payload=b"x" * (1024 * 1024 + 1))
    _, code, _ = unary(rpc_server(FakeStores()), "ApplyProviderEvent", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_event_for_an_unknown_prediction_is_answered_as_such() -> None:
    request = pb.ApplyProviderEventRequest(payload=b"unknown-prediction")
    response, code, _ = unary(rpc_server(FakeStores()), "ApplyProviderEvent", request)
    assert code == grpc.StatusCode.OK
    assert (response.outcome, response.job_id, response.status) == (
        pb.EVENT_OUTCOME_UNKNOWN_PREDICTION,
        "",
        pb.JOB_STATUS_UNSPECIFIED,
    )


def test_an_event_naming_a_job_that_is_no_uuid_is_answered_as_unknown() -> None:
    request = pb.ApplyProviderEventRequest(payload=b"unknown-prediction", job_id="not-a-job")
    response, code, _ = unary(rpc_server(FakeStores()), "ApplyProviderEvent", request)
    assert code == grpc.StatusCode.OK
    assert response.outcome == pb.EVENT_OUTCOME_UNKNOWN_PREDICTION


class CountingStores(FakeStores):
    """Counts the reads of one job by id."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, job_id: uuid.UUID) -> Job | None:
        self.gets += 1
        return await super().get(job_id)


def test_an_applied_event_answers_the_status_it_set_without_reading_the_job_again() -> None:
    stores = CountingStores()
    job = stores.add(make_job(uuid.uuid4(), JobStatus.PROCESSING, prediction_id="p-applied"))
    # FakeProvider reads it as succeeded without outputs: the job ends failed.
    request = pb.ApplyProviderEventRequest(payload=b"p-applied")

    response, code, _ = unary(rpc_server(stores), "ApplyProviderEvent", request)

    assert code == grpc.StatusCode.OK
    assert (response.outcome, response.job_id, response.status) == (
        pb.EVENT_OUTCOME_APPLIED,
        str(job.id),
        pb.JOB_STATUS_FAILED,
    )
    # The one read is the end's own (in its transaction, for the refund); no second
    # read after the change just to answer.
    assert stores.gets == 1
