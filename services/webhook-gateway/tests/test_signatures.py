"""Unit tests of the signature check, against the published test vector and a peer library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pydantic
import pytest
from standardwebhooks import Webhook

from webhook_gateway.settings import GatewaySettings, decode_webhook_secret
from webhook_gateway.signatures import SignatureRejected, WebhookVerifier

# Standard Webhooks / Replicate test vector (REPLICATE.md).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


class FrozenClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def verifier_at(at: datetime, secret: str = VECTOR_SECRET) -> WebhookVerifier:
    return WebhookVerifier(secret, tolerance_seconds=300, clock=FrozenClock(at))


VECTOR_TIME = datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=UTC)


def reason_of(verifier: WebhookVerifier, body: bytes, headers: dict[str, str]) -> str:
    with pytest.raises(SignatureRejected) as caught:
        verifier.verify(body, headers)
    return caught.value.reason


def test_test_vector_verifies_with_a_frozen_clock() -> None:
    verifier_at(VECTOR_TIME).verify(VECTOR_BODY, vector_headers())
    verifier_at(VECTOR_TIME + timedelta(seconds=299)).verify(VECTOR_BODY, vector_headers())


def test_test_vector_verifies_with_the_tolerance_disabled() -> None:
    verifier = WebhookVerifier(
        VECTOR_SECRET, tolerance_seconds=None, clock=FrozenClock(datetime.now(UTC))
    )
    verifier.verify(VECTOR_BODY, vector_headers())


def test_test_vector_is_stale_today() -> None:
    verifier = verifier_at(datetime.now(UTC))
    assert reason_of(verifier, VECTOR_BODY, vector_headers()) == "stale_timestamp"


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamps_outside_the_tolerance_are_stale(offset: int) -> None:
    verifier = verifier_at(VECTOR_TIME + timedelta(seconds=offset))
    assert reason_of(verifier, VECTOR_BODY, vector_headers()) == "stale_timestamp"


def test_any_one_matching_v1_entry_is_enough() -> None:
    wrong = "v1," + base64.b64encode(b"x" * 32).decode()
    header = f"v2,abc {wrong}  not-an-entry v1,%%% {VECTOR_SIGNATURE}"
    verifier_at(VECTOR_TIME).verify(VECTOR_BODY, vector_headers(header))


@pytest.mark.parametrize(
    "header",
    [
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",  # one bit off
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # right digest, unknown version
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # no version
        "v1,",
        "v1,!!!!",
        ",,,",
        "v1,é",  # non-ASCII: b64decode raises a plain ValueError, not binascii.Error
        "v1,\xff",  # a raw 0xFF header byte, as Starlette decodes it (latin-1)
    ],
)
def test_non_matching_or_malformed_signatures_are_bad(header: str) -> None:
    assert reason_of(verifier_at(VECTOR_TIME), VECTOR_BODY, vector_headers(header)) == (
        "bad_signature"
    )


def test_a_tampered_body_is_bad() -> None:
    verifier = verifier_at(VECTOR_TIME)
    assert reason_of(verifier, b'{"test": 2432232315}', vector_headers()) == "bad_signature"


def test_another_secret_is_bad() -> None:
    other = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-00000").decode()
    verifier = verifier_at(VECTOR_TIME, secret=other)
    assert reason_of(verifier, VECTOR_BODY, vector_headers()) == "bad_signature"


def test_a_body_that_is_not_utf8_is_bad() -> None:
    assert reason_of(verifier_at(VECTOR_TIME), b"\xff\xfe", vector_headers()) == "bad_signature"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_reported(missing: str) -> None:
    headers = vector_headers()
    del headers[missing]
    assert reason_of(verifier_at(VECTOR_TIME), VECTOR_BODY, headers) == "missing_signature"


@pytest.mark.parametrize("timestamp", ["1614265330.5", "-1614265330", "abc", "9" * 30, "١٢"])
def test_a_timestamp_that_is_not_unix_seconds_is_bad(timestamp: str) -> None:
    headers = vector_headers()
    headers["webhook-timestamp"] = timestamp
    assert reason_of(verifier_at(VECTOR_TIME), VECTOR_BODY, headers) == "bad_signature"


def test_agrees_with_the_standardwebhooks_library_on_fresh_messages() -> None:
    now = datetime.now(UTC)
    body = b'{"id": "q1w2e3", "status": "succeeded", "output": "https://x/y.jpg"}'
    peer = Webhook(VECTOR_SECRET)
    headers = {
        "webhook-id": "msg_peer",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": peer.sign("msg_peer", now, body.decode()),
    }
    WebhookVerifier(VECTOR_SECRET, tolerance_seconds=300, clock=FrozenClock(now)).verify(
        body, headers
    )
    # The library, as an independent verifier, accepts the same delivery.
    assert peer.verify(body, headers) == {
        "id": "q1w2e3",
        "status": "succeeded",
        "output": "https://x/y.jpg",
    }


@pytest.mark.parametrize(
    "secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not*base64", "whsec_==="]
)
def test_malformed_secrets_are_refused_at_start(secret: str) -> None:
    with pytest.raises(ValueError, match=r"whsec_|base64|empty"):
        decode_webhook_secret(secret)
    with pytest.raises(pydantic.ValidationError, match="REPLICATE_WEBHOOK_SECRET") as caught:
        GatewaySettings.model_validate({"REPLICATE_WEBHOOK_SECRET": secret})
    # Pydantic echoes inputs by default; the message we print must not.
    assert secret not in str(caught.value.errors(include_input=False))


def test_an_empty_secret_means_unchecked() -> None:
    settings = GatewaySettings.model_validate({"REPLICATE_WEBHOOK_SECRET": "  "})
    assert settings.webhook_secret() is None
