"""The edge's table from an error reason to its HTTP status."""

from __future__ import annotations

import pytest

from edge_api.statuses import HTTP_STATUS_BY_REASON, UNKNOWN_REASON_STATUS, http_status
from kit.errors import ALL_ERRORS, CODE_BY_REASON

# SPEC.md's error table (code: HTTP), with its 413/415 variants of VALIDATION_ERROR.
SPEC_TABLE = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "NOT_FOUND": 404,
    "TOO_MANY_INFLIGHT": 409,
    "LIMIT_EXCEEDED": 402,
    "UPSTREAM_ERROR": 502,
    "INTERNAL_ERROR": 500,
}
SPEC_VARIANTS = {"PAYLOAD_TOO_LARGE": 413, "UNSUPPORTED_MEDIA_TYPE": 415}


@pytest.mark.parametrize(("reason", "status"), [*SPEC_TABLE.items(), *SPEC_VARIANTS.items()])
def test_every_spec_code_maps_to_its_documented_status(reason: str, status: int) -> None:
    assert http_status(reason) == status


@pytest.mark.parametrize("reason", sorted(SPEC_VARIANTS))
def test_the_spec_variants_are_validation_errors_to_the_client(reason: str) -> None:
    assert CODE_BY_REASON[reason] == "VALIDATION_ERROR"


def test_every_reason_a_service_can_send_has_a_status() -> None:
    assert {error.reason for error in ALL_ERRORS} == set(HTTP_STATUS_BY_REASON)


def test_every_status_is_an_error_status() -> None:
    assert all(400 <= status <= 599 for status in HTTP_STATUS_BY_REASON.values())


def test_an_unknown_reason_is_an_internal_error() -> None:
    assert http_status("SOMETHING_NEW") == UNKNOWN_REASON_STATUS == SPEC_TABLE["INTERNAL_ERROR"]
