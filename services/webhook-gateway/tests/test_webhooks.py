"""The webhook over real HTTP, forwarded to a real gRPC generation double."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from interior.generation.v1 import generation_pb2

if TYPE_CHECKING:
    from conftest import GatewayFactory, GenerationDouble
    from testkit.servers import MovableClock

Signer = Callable[..., dict[str, str]]
PATH = "/api/v1/webhooks/replicate"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Key order and spacing that a re-serialization would change: the raw bytes must survive.
BODY = b'{"status":"succeeded",  "id":"ufawqhfynnddngldkgtslldrkq", "output": "https://replicate.delivery/x.jpg"}'
UNAUTHORIZED = {
    "error": {
        "code": "UNAUTHORIZED",
        "message": "The webhook signature is missing, not valid or expired.",
    }
}


async def test_a_valid_delivery_is_forwarded_once_with_the_raw_bytes(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=BODY, headers=signer(BODY, msg_id="msg_1"))
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "applied"}
    assert [(e.payload, e.delivery_id) for e in generation.servicer.received] == [(BODY, "msg_1")]
    [forwarded] = gw.events("webhook.forwarded")
    assert forwarded["deliveryId"] == "msg_1"
    assert forwarded["predictionId"] == "ufawqhfynnddngldkgtslldrkq"  # ops find the run by it
    assert forwarded["outcome"] == "applied"
    assert forwarded["jobId"] == "0b7c4a8e-2f53-4c39-9d8e-5f0a1c2b3d4e"
    assert forwarded["status"] == "succeeded"
    [received] = gw.events("webhook.received")
    assert received["bytes"] == len(BODY)


async def test_the_job_the_url_names_is_forwarded_and_a_malformed_one_is_not_refused(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    job = "0b7c4a8e-2f53-4c39-9d8e-5f0a1c2b3d4e"
    async with start_gateway() as gw:
        named = await gw.client.post(f"{PATH}?job={job}", content=BODY, headers=signer(BODY))
        long = await gw.client.post(f"{PATH}?job={'x' * 37}", content=BODY, headers=signer(BODY))
        odd = await gw.client.post(f"{PATH}?job=not-a-job", content=BODY, headers=signer(BODY))
    assert [named.status_code, long.status_code, odd.status_code] == [200, 200, 200]
    # Generation reads it (a name that is no UUID names no job); the gateway only caps it.
    assert [e.job_id for e in generation.servicer.received] == [job, "", "not-a-job"]


async def test_several_signatures_where_only_the_second_matches_are_accepted(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    headers = signer(BODY)
    wrong = signer(BODY, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    headers["webhook-signature"] = f"{wrong['webhook-signature']} {headers['webhook-signature']}"
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=BODY, headers=headers)
    assert response.status_code == 200
    assert len(generation.servicer.received) == 1


async def test_a_signature_of_non_ascii_bytes_is_a_401_not_a_500(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    headers = {k.encode(): v.encode() for k, v in signer(BODY).items()}
    headers[b"webhook-signature"] = b"v1,\xc3\xa9 v1,\xff"
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=BODY, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert generation.servicer.received == []


def _tamper(headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return BODY.replace(b"succeeded", b"processing"), headers


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong_secret", "bad_signature"),
        ("tampered_body", "bad_signature"),
        ("no_headers", "missing_signature"),
        ("no_signature", "missing_signature"),
        ("six_minutes_old", "stale_timestamp"),
        ("six_minutes_ahead", "stale_timestamp"),
    ],
)
async def test_unauthentic_deliveries_get_401_and_nothing_is_forwarded(
    start_gateway: GatewayFactory,
    generation: GenerationDouble,
    signer: Signer,
    case: str,
    reason: str,
) -> None:
    now = datetime.now(UTC)
    body, headers = BODY, signer(BODY)
    if case == "wrong_secret":
        headers = signer(BODY, secret="whsec_" + "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=")
    elif case == "tampered_body":
        body, headers = _tamper(headers)
    elif case == "no_headers":
        headers = {"content-type": "application/json"}
    elif case == "no_signature":
        del headers["webhook-signature"]
    elif case == "six_minutes_old":
        headers = signer(BODY, at=now - timedelta(minutes=6))
    elif case == "six_minutes_ahead":
        headers = signer(BODY, at=now + timedelta(minutes=6))
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert generation.servicer.received == []
    assert [e["reason"] for e in gw.events("webhook.rejected")] == [reason]


async def test_a_replayed_delivery_is_refused_once_its_timestamp_is_past_the_tolerance(
    start_gateway: GatewayFactory,
    generation: GenerationDouble,
    signer: Signer,
    clock: MovableClock,
) -> None:
    headers = signer(BODY, msg_id="msg_replayed", at=clock.now())
    async with start_gateway(clock=clock) as gw:
        first = await gw.client.post(PATH, content=BODY, headers=headers)
        clock.advance(timedelta(seconds=301))
        replay = await gw.client.post(PATH, content=BODY, headers=headers)
    assert first.status_code == 200
    assert replay.status_code == 401
    assert len(generation.servicer.received) == 1
    assert [e["reason"] for e in gw.events("webhook.rejected")] == ["stale_timestamp"]


async def test_without_a_secret_deliveries_are_accepted_unsigned_and_a_warning_is_logged(
    start_gateway: GatewayFactory, generation: GenerationDouble
) -> None:
    async with start_gateway(secret=None) as gw:
        response = await gw.client.post(PATH, content=BODY)
    assert response.status_code == 200
    assert generation.servicer.received[0].payload == BODY
    warnings = [e for e in gw.logs if e["log_level"] == "warning" and "not checked" in str(e)]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "body", [b"not json", b'[{"id": "abc"}]', b'"a string"', b"", b"\xff\xfe{}", b"[" * 100_000]
)
async def test_bodies_that_are_not_a_json_object_get_400_and_nothing_is_forwarded(
    start_gateway: GatewayFactory, generation: GenerationDouble, body: bytes
) -> None:
    async with start_gateway(secret=None, max_body_bytes=200_000) as gw:
        response = await gw.client.post(PATH, content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert generation.servicer.received == []
    assert [e["reason"] for e in gw.events("webhook.rejected")] == ["not_json"]


async def test_a_signed_non_json_body_is_also_refused(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=b"[1, 2]", headers=signer(b"[1, 2]"))
    assert response.status_code == 400
    assert generation.servicer.received == []


@pytest.mark.parametrize(
    ("outcome", "name"),
    [
        (generation_pb2.EVENT_OUTCOME_APPLIED, "applied"),
        (generation_pb2.EVENT_OUTCOME_UNKNOWN_PREDICTION, "unknown_prediction"),
        (generation_pb2.EVENT_OUTCOME_STALE, "stale"),
    ],
)
async def test_each_outcome_is_reported(
    start_gateway: GatewayFactory,
    generation: GenerationDouble,
    signer: Signer,
    outcome: int,
    name: str,
) -> None:
    generation.servicer.outcome = outcome
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=BODY, headers=signer(BODY))
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": name}


async def test_an_answer_without_an_outcome_is_not_acknowledged(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    generation.servicer.outcome = generation_pb2.EVENT_OUTCOME_UNSPECIFIED
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=BODY, headers=signer(BODY))
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("failure", "grpc_code"),
    [("internal", "INTERNAL"), ("stopped", "UNAVAILABLE"), ("slow", "DEADLINE_EXCEEDED")],
)
async def test_generation_failures_get_503_so_the_provider_retries(
    start_gateway: GatewayFactory,
    generation: GenerationDouble,
    signer: Signer,
    failure: str,
    grpc_code: str,
) -> None:
    async with start_gateway(deadline_seconds=0.3) as gw:
        if failure == "stopped":
            await generation.stop()
        else:
            generation.servicer.mode = "internal" if failure == "internal" else "slow"
        response = await gw.client.post(PATH, content=BODY, headers=signer(BODY))
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "code": "UPSTREAM_ERROR",
            "message": "The event could not be processed now; please retry.",
        }
    }
    [failed] = gw.events("webhook.forward_failed")
    assert (failed["grpcCode"], failed["predictionId"]) == (grpc_code, "ufawqhfynnddngldkgtslldrkq")
    assert gw.events("webhook.forwarded") == []


async def test_generation_unable_to_read_the_payload_gets_400(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    generation.servicer.mode = "invalid"
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=BODY, headers=signer(BODY))
    assert response.status_code == 400
    # Generation's own text is not passed through.
    assert response.json() == {
        "error": {"code": "VALIDATION_ERROR", "message": "The webhook event could not be read."}
    }


async def test_our_request_id_travels_to_generation_and_back_never_the_callers(
    start_gateway: GatewayFactory, generation: GenerationDouble, signer: Signer
) -> None:
    headers = {**signer(BODY), "x-request-id": "req-7f3a9c"}
    async with start_gateway() as gw:
        given = await gw.client.post(PATH, content=BODY, headers=headers)
        fresh = await gw.client.post(PATH, content=BODY, headers=signer(BODY))
    assert given.headers["x-request-id"] != "req-7f3a9c"
    assert len(given.headers["x-request-id"]) == len(fresh.headers["x-request-id"]) == 32
    assert [e.request_id for e in generation.servicer.received] == [
        given.headers["x-request-id"],
        fresh.headers["x-request-id"],
    ]


async def test_logs_hold_no_body_signature_or_secret(
    start_gateway: GatewayFactory, signer: Signer
) -> None:
    headers = signer(BODY)
    async with start_gateway() as gw:
        await gw.client.post(PATH, content=BODY, headers=headers)
        await gw.client.post(PATH, content=b"[1]", headers=signer(b"[1]"))
        await gw.client.post(PATH, content=BODY, headers={**headers, "webhook-id": "other"})
    written = json.dumps(gw.logs, default=str)
    signature = headers["webhook-signature"].partition(",")[2]
    # The prediction id is logged on purpose (it names the run); the body's other
    # values, the signature and the secret are not.
    for secret_part in ("replicate.delivery", BODY.decode()[:20], signature, SECRET[6:]):
        assert secret_part not in written
    assert gw.events("webhook.received")


async def test_an_unexpected_forwarding_failure_is_not_acknowledged(
    start_gateway: GatewayFactory, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicate gets a 2xx only once generation applied the event: a failure of any
    kind (here a bug in the forwarder, no gRPC error) answers 503, so it retries."""
    from webhook_gateway.forwarder import GenerationForwarder

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the forwarder")

    monkeypatch.setattr(GenerationForwarder, "apply_event", broken)
    async with start_gateway() as gw:
        response = await gw.client.post(PATH, content=BODY, headers=signer(BODY))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "UPSTREAM_ERROR"
