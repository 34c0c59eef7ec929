"""Webhooks: Standard Webhooks signatures checked by independent peers, events,
retries of the terminal delivery only, and the drop/duplicate/reorder knobs."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from replicate.webhook import InvalidSignatureError, Webhooks, WebhookSigningSecret
from standardwebhooks import Webhook, WebhookVerificationError

from replicate_emulator import EmulatorConfig
from replicate_emulator.signing import sign
from testkit.emulator import EmulatorServer
from testkit.recorder import RecordingServer

MODEL_PATH = "/v1/models/google/nano-banana/predictions"
ALL_EVENTS = ["start", "output", "logs", "completed"]


def create(api: httpx.Client, url: str, events: list[str] | None = None) -> str:
    body: dict[str, Any] = {"input": {"prompt": "sunroom"}, "webhook": url}
    if events is not None:
        body["webhook_events_filter"] = events
    response = api.post(MODEL_PATH, json=body)
    assert response.status_code == 201
    prediction_id: str = response.json()["id"]
    return prediction_id


def events_by_id(emulator: EmulatorServer, prediction_id: str) -> dict[str, str]:
    """webhook-id -> event name, from the delivery log."""
    return {e["webhook_id"]: e["event"] for e in emulator.control.webhooks(prediction_id)}


def logged(emulator: EmulatorServer, prediction_id: str, count: int) -> list[dict[str, Any]]:
    """The delivery log once it holds ``count`` attempts (it is written after each answer)."""
    deadline = time.monotonic() + 5
    while len(entries := emulator.control.webhooks(prediction_id)) < count:
        assert time.monotonic() < deadline, entries
        time.sleep(0.01)
    return entries


def test_signing_matches_the_published_test_vector() -> None:
    headers = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        b'{"test": 2432232314}',
        timestamp=1614265330,
    )
    assert headers.signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signatures_verify_with_both_libraries(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    pid = create(api, receiver.url, ["completed"])
    [delivery] = receiver.wait_for(1)
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["webhook-id"].startswith("msg_")

    payload = Webhook(emulator.webhook_secret).verify(delivery.body, delivery.headers)
    assert payload["id"] == pid
    Webhooks.validate(
        headers=delivery.headers,
        body=delivery.body.decode(),
        secret=WebhookSigningSecret(key=emulator.webhook_secret),
        tolerance=300,
    )
    # The body is the prediction exactly as GET shows it.
    assert payload == api.get(f"/v1/predictions/{pid}").json()

    tampered = delivery.body.replace(b"succeeded", b"failed")
    with pytest.raises(WebhookVerificationError):
        Webhook(emulator.webhook_secret).verify(tampered, delivery.headers)
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(
            headers=delivery.headers,
            body=tampered.decode(),
            secret=WebhookSigningSecret(key=emulator.webhook_secret),
        )


def names(emulator: EmulatorServer, deliveries: list[Any]) -> list[str]:
    """The event of each delivery, in the order they arrived."""
    by_id = {e["webhook_id"]: e["event"] for e in emulator.control.webhooks()}
    return [by_id[d.headers["webhook-id"]] for d in deliveries]


def test_without_a_filter_outputs_and_completion_are_sent(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    # Replicate's default: "whenever there are new outputs or the prediction has finished".
    pid = create(api, receiver.url)
    emulator.control.wait_for_status(pid, ["succeeded"])
    deliveries = receiver.wait_for(1)
    logged(emulator, pid, 1)
    time.sleep(0.1)
    assert names(emulator, receiver.snapshot()) == ["completed"]  # one value: no output event
    emulator.control.set_faults(output_shape="list")
    listed = create(api, receiver.url)
    deliveries = receiver.wait_for(3)[1:]
    logged(emulator, listed, 2)
    assert names(emulator, deliveries) == ["output", "completed"]


def test_output_and_logs_events_are_throttled_to_one_per_interval(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    # The fast run (50 ms) ends within 0.5 s of its start: the logs right after the
    # start and the last logs are dropped; start and completed always go.
    emulator.control.set_faults(output_shape="list")
    pid = create(api, receiver.url, ALL_EVENTS)
    emulator.control.wait_for_status(pid, ["succeeded"])
    logged(emulator, pid, 2)
    time.sleep(0.1)
    assert names(emulator, receiver.snapshot()) == ["start", "completed"]
    # A run longer than the interval: its last logs come through.
    emulator.control.set_faults(output_shape="string", run_delay_ms=700)
    slow = create(api, receiver.url, ALL_EVENTS)
    emulator.control.wait_for_status(slow, ["succeeded"], timeout=5)
    logged(emulator, slow, 3)
    assert [e["event"] for e in emulator.control.webhooks(slow)] == ["start", "logs", "completed"]


def test_without_a_throttle_every_event_is_sent(
    fast_config: EmulatorConfig, receiver: RecordingServer
) -> None:
    with EmulatorServer(fast_config.replace(webhook_throttle_seconds=0)) as emulator:
        emulator.control.set_faults(output_shape="list")
        with httpx.Client(
            base_url=emulator.base_url,
            headers={"Authorization": f"Bearer {fast_config.token}"},
        ) as api:
            pid = create(api, receiver.url, ALL_EVENTS)
        deliveries = receiver.wait_for(5)
        logged(emulator, pid, 5)
        assert names(emulator, deliveries) == ["start", "logs", "logs", "output", "completed"]
        assert deliveries[0].json()["status"] == "processing"
        assert deliveries[-1].json()["status"] == "succeeded"
        assert len({d.headers["webhook-id"] for d in deliveries}) == 5


def test_the_body_is_the_bytes_get_answers(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    # Non-ASCII text travels as UTF-8, not \\u escapes: the signed bytes are GET's own.
    response = api.post(
        MODEL_PATH,
        json={
            "input": {"prompt": "caf\u00e9 \u2013 寝室 <b>&"},
            "webhook": receiver.url,
            "webhook_events_filter": ["completed"],
        },
    )
    pid = response.json()["id"]
    [delivery] = receiver.wait_for(1)
    assert "寝室".encode() in delivery.body
    assert delivery.body == api.get(f"/v1/predictions/{pid}").content
    Webhook(emulator.webhook_secret).verify(delivery.body, delivery.headers)


def test_events_filter_is_honoured(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    pid = create(api, receiver.url, ["start", "completed"])
    emulator.control.wait_for_status(pid, ["succeeded"])
    deliveries = receiver.wait_for(2)
    assert [d.json()["status"] for d in deliveries] == ["processing", "succeeded"]
    # The log is written after each answer, so wait for both entries, not just the deliveries.
    assert {e["event"] for e in logged(emulator, pid, 2)} == {"start", "completed"}


def test_terminal_webhook_is_retried_with_the_same_id(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    receiver.statuses = [500, 404]
    pid = create(api, receiver.url, ["completed"])
    deliveries = receiver.wait_for(3)
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    attempts = [(e["attempt"], e["status_code"]) for e in logged(emulator, pid, 3)]
    assert attempts == [(1, 500), (2, 404), (3, 200)]
    for delivery in deliveries:
        Webhook(emulator.webhook_secret).verify(delivery.body, delivery.headers)
    assert pid == deliveries[-1].json()["id"]


def test_terminal_retries_stop_after_max_attempts(
    emulator: EmulatorServer,
    api: httpx.Client,
    receiver: RecordingServer,
    fast_config: EmulatorConfig,
) -> None:
    receiver.statuses = [503] * 10
    pid = create(api, receiver.url, ["completed"])
    receiver.wait_for(fast_config.webhook_max_attempts)
    assert len(logged(emulator, pid, fast_config.webhook_max_attempts)) == 4
    time.sleep(0.3)  # longer than the next backoff would be: no fifth attempt comes
    assert len(receiver.snapshot()) == fast_config.webhook_max_attempts


def test_intermediate_webhooks_are_not_retried(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    receiver.statuses = [500, 302]  # start fails, completed is redirected
    pid = create(api, receiver.url, ["start", "completed"])
    deliveries = receiver.wait_for(3)
    log = [(e["event"], e["attempt"], e["status_code"]) for e in logged(emulator, pid, 3)]
    assert log == [("start", 1, 500), ("completed", 1, 302), ("completed", 2, 200)]
    # A redirect is a failed delivery, never followed.
    assert all(d.path == "/hooks/replicate" for d in deliveries)


def test_unreachable_receiver_is_retried_then_given_up(
    emulator: EmulatorServer,
    api: httpx.Client,
    fast_config: EmulatorConfig,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pid = create(api, f"http://127.0.0.1:{port}/hooks", ["completed"])
    attempts = fast_config.webhook_max_attempts
    entries = logged(emulator, pid, attempts)
    assert [e["error"] for e in entries] == ["ConnectError"] * attempts


def test_dropped_terminal_webhook_is_lost_not_retried(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    emulator.control.set_faults(drop_webhooks=1)
    lost = create(api, receiver.url, ["completed"])
    emulator.control.wait_for_status(lost, ["succeeded"])
    kept = create(api, receiver.url, ["completed"])
    [delivery] = receiver.wait_for(1)
    assert delivery.json()["id"] == kept
    assert [e["kind"] for e in emulator.control.webhooks(lost)] == ["dropped"]


def test_drop_all(
    emulator: EmulatorServer,
    api: httpx.Client,
    receiver: RecordingServer,
    wait_until: Callable[..., None],
) -> None:
    emulator.control.set_faults(drop_webhooks="all")
    pid = create(api, receiver.url)
    wait_until(lambda: "completed" in events_by_id(emulator, pid).values())
    assert receiver.snapshot() == []
    assert {e["kind"] for e in emulator.control.webhooks(pid)} == {"dropped"}


def test_duplicates_carry_the_same_id(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    emulator.control.set_faults(duplicate_webhooks=2)
    create(api, receiver.url, ["completed"])
    deliveries = receiver.wait_for(3)
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    assert len({d.body for d in deliveries}) == 1


def test_reorder_sends_the_terminal_one_first(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    emulator.control.set_faults(reorder_webhooks=True)
    pid = create(api, receiver.url, ["start", "completed"])
    deliveries = receiver.wait_for(2)
    assert [d.json()["status"] for d in deliveries] == ["succeeded", "processing"]
    assert [e["event"] for e in logged(emulator, pid, 2)] == ["completed", "start"]


def test_redeliver_replays_identical_headers(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    pid = create(api, receiver.url, ["completed"])
    [original] = receiver.wait_for(1)
    entry = emulator.control.redeliver(pid, "completed")
    assert entry["kind"] == "redelivery"
    replay = receiver.wait_for(2)[1]
    assert replay.body == original.body
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert replay.headers[header] == original.headers[header]
