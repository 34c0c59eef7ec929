"""Replicate's wire shapes: the prediction object, errors, auth and fault queues."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from replicate_emulator import EmulatorConfig
from replicate_emulator.app import create_app
from testkit.emulator import EmulatorServer

MODEL_PATH = "/v1/models/google/nano-banana/predictions"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.(\d{1,9}))?Z$")


def parse_timestamp(text: str) -> datetime:
    """Parse RFC 3339 with 0..9 fractional digits (Python keeps microseconds)."""
    match = RFC3339.match(text)
    assert match is not None, text
    fraction = (match.group(2) or "").ljust(6, "0")[:6]
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(
        microsecond=int(fraction), tzinfo=UTC
    )


def create(api: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return api.post(MODEL_PATH, json=body, headers=headers)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    return body


def test_prediction_object_shape(emulator: EmulatorServer, api: httpx.Client) -> None:
    response = create(api, {"input": {"prompt": "loft"}, "webhook": "https://example.test/h"})
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"[a-z0-9]{26}", body["id"])
    assert body["model"] == "google/nano-banana"
    assert body["version"] == "hidden"
    assert body["input"] == {"prompt": "loft"}
    assert body["output"] is None
    assert body["error"] is None
    assert body["data_removed"] is False
    assert body["status"] == "starting"
    # What Replicate's own example of a starting prediction shows.
    assert (body["started_at"], body["completed_at"], body["logs"]) == (None, None, None)
    assert body["metrics"] == {}
    assert body["webhook"] == "https://example.test/h"
    assert set(body["urls"]) == {"get", "cancel", "web"}
    assert all(isinstance(url, str) for url in body["urls"].values())
    assert body["urls"]["get"] == f"{emulator.base_url}/v1/predictions/{body['id']}"
    parse_timestamp(body["created_at"])

    done = emulator.control.wait_for_status(body["id"], ["succeeded"])
    fetched = api.get(f"/v1/predictions/{body['id']}").json()
    assert fetched == done
    created, started, completed = (
        parse_timestamp(fetched[key]) for key in ("created_at", "started_at", "completed_at")
    )
    assert created <= started <= completed
    assert set(fetched["metrics"]) == {"predict_time", "total_time"}


def _fraction_digits(timestamp: str) -> int:
    seconds = timestamp.removesuffix("Z").rpartition(":")[2]
    return len(seconds.partition(".")[2])


def test_timestamps_carry_zero_to_nine_fractional_digits(api: httpx.Client) -> None:
    # Replicate prints Go's RFC3339Nano: 0 to 9 digits, trailing zeros dropped.
    stamps = [create(api, {"input": {"prompt": "x"}}).json()["created_at"] for _ in range(6)]
    widths = {_fraction_digits(stamp) for stamp in stamps}
    assert {0, 9} <= widths, stamps
    assert len(widths) >= 3, stamps
    for stamp in stamps:
        parse_timestamp(stamp)
        assert stamp.endswith("Z"), stamp
        assert not re.search(r"\.\d*0Z$", stamp), stamp


def test_ids_are_unique(api: httpx.Client) -> None:
    ids = {create(api, {"input": {"prompt": "x"}}).json()["id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer r8_wrong"}, {"Authorization": "Basic abc"}],
)
def test_unauthenticated(emulator: EmulatorServer, headers: dict[str, str]) -> None:
    response = httpx.post(
        f"{emulator.base_url}{MODEL_PATH}", json={"input": {"prompt": "x"}}, headers=headers
    )
    assert assert_problem(response, 401)["title"] == "Unauthenticated"


def test_legacy_token_scheme_is_accepted(emulator: EmulatorServer) -> None:
    response = httpx.get(
        f"{emulator.base_url}/v1/webhooks/default/secret",
        headers={"Authorization": f"Token {emulator.token}"},
    )
    assert response.json() == {"key": emulator.webhook_secret}


def test_unknown_model_and_prediction_are_404(api: httpx.Client) -> None:
    assert_problem(api.post("/v1/models/google/imagen/predictions", json={"input": {}}), 404)
    assert_problem(api.get("/v1/predictions/" + "a" * 26), 404)
    assert_problem(api.post("/v1/predictions/" + "a" * 26 + "/cancel"), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": {"prompt": "x"}, "webhook_completed": "https://e.test/h"}, "webhook_completed"),
        ({"input": {"prompt": "x"}, "stream": True}, "stream"),
        ({"input": {}}, "input.prompt"),
        ({}, "input"),
        ({"input": {"prompt": 3}}, "input.prompt"),
        ({"input": {"prompt": "x", "seed": 1}}, "input.seed"),
        ({"input": {"prompt": "x", "image_input": "https://e.test/a.jpg"}}, "input.image_input"),
        ({"input": {"prompt": "x", "image_input": ["ftp://e.test/a.jpg"]}}, "input.image_input.0"),
        ({"input": {"prompt": "x", "image_input": ["https://e.test/a"] * 11}}, "input.image_input"),
        ({"input": {"prompt": "x", "output_format": "webp"}}, "input.output_format"),
        ({"input": {"prompt": "x", "aspect_ratio": "7:3"}}, "input.aspect_ratio"),
        ({"input": {"prompt": "x"}, "webhook": "not a url"}, "webhook"),
        # URLs that the URL parser itself refuses (an unclosed IPv6 bracket).
        ({"input": {"prompt": "x"}, "webhook": "http://[abc/hook"}, "webhook"),
        ({"input": {"prompt": "x", "image_input": ["http://[::1"]}}, "input.image_input.0"),
        (
            {
                "input": {"prompt": "x"},
                "webhook": "https://e.test",
                "webhook_events_filter": ["done"],
            },
            "webhook_events_filter.0",
        ),
    ],
)
def test_invalid_bodies_are_422(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(create(api, body), 422)
    fields = problem["invalid_fields"]
    assert field in {f["field"] for f in fields}
    assert all(set(f) == {"type", "field", "description"} for f in fields)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"input": {"prompt": "x", "n": ' + b"1" * 5000 + b"}}",  # past the digit limit
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
        b'{"input": {"prompt": "\xff"}}',  # not UTF-8
    ],
)
def test_a_body_that_is_no_json_is_a_400_problem(api: httpx.Client, raw: bytes) -> None:
    response = api.post(MODEL_PATH, content=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 400)


def test_a_cancel_after_past_the_longest_duration_is_422(api: httpx.Client) -> None:
    response = create(api, {"input": {"prompt": "x"}}, **{"Cancel-After": "99999999999h"})
    assert assert_problem(response, 422)["invalid_fields"][0]["field"] == "Cancel-After"


def test_invalid_version_is_422(api: httpx.Client) -> None:
    response = api.post("/v1/predictions", json={"version": "acme/other", "input": {"prompt": "x"}})
    assert assert_problem(response, 422)["invalid_fields"][0]["field"] == "version"


def test_injected_throttle_then_success(emulator: EmulatorServer, api: httpx.Client) -> None:
    emulator.control.set_faults(create_errors=[429, 503], retry_after_seconds=2)
    throttled = create(api, {"input": {"prompt": "x"}})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
    assert throttled.json()["detail"].startswith("Request was throttled.")
    assert_problem(create(api, {"input": {"prompt": "x"}}), 503)
    assert create(api, {"input": {"prompt": "x"}}).status_code == 201
    assert emulator.control.faults()["create_errors"] == []


def test_get_and_cancel_error_queues(emulator: EmulatorServer, api: httpx.Client) -> None:
    pid = create(api, {"input": {"prompt": "x"}}).json()["id"]
    emulator.control.set_faults(get_errors=[500], cancel_errors=[502])
    assert_problem(api.get(f"/v1/predictions/{pid}"), 500)
    assert api.get(f"/v1/predictions/{pid}").status_code == 200
    assert_problem(api.post(f"/v1/predictions/{pid}/cancel"), 502)
    assert api.post(f"/v1/predictions/{pid}/cancel").status_code == 200


def test_latency_is_added(emulator: EmulatorServer, api: httpx.Client) -> None:
    emulator.control.set_faults(latency_ms=200)
    started = time.monotonic()
    api.get("/v1/webhooks/default/secret")
    assert time.monotonic() - started >= 0.2


def test_a_late_create_answer_still_starts_its_run(
    emulator: EmulatorServer, api: httpx.Client
) -> None:
    emulator.control.set_faults(create_answer_delay_ms=1000)
    before = len(emulator.control.predictions())
    with pytest.raises(httpx.ReadTimeout):
        api.post(MODEL_PATH, json={"input": {"prompt": "x"}}, timeout=0.2)
    assert len(emulator.control.predictions()) == before + 1


@pytest.mark.parametrize("prefer", ["wait=5", "respond-async, wait=5", "wait=5, respond-async"])
def test_prefer_wait_holds_the_create_call(api: httpx.Client, prefer: str) -> None:
    response = create(api, {"input": {"prompt": "x"}}, Prefer=prefer)
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"


@pytest.mark.parametrize("prefer", ["wait=0", "wait=61", "respond-async"])
def test_a_wait_outside_one_to_sixty_seconds_does_not_wait(
    emulator: EmulatorServer, api: httpx.Client, prefer: str
) -> None:
    emulator.control.set_faults(run_delay_ms=3000)
    response = create(api, {"input": {"prompt": "x"}}, Prefer=prefer)
    assert response.status_code == 201
    assert response.json()["status"] == "starting"


@pytest.mark.parametrize(("knob", "figure"), [(0, "1"), (0.4, "1"), (1.2, "2"), (2, "2")])
def test_the_throttle_header_and_detail_name_the_same_wait(
    emulator: EmulatorServer, api: httpx.Client, knob: float, figure: str
) -> None:
    emulator.control.set_faults(create_errors=[429], retry_after_seconds=knob)
    throttled = create(api, {"input": {"prompt": "x"}})
    assert throttled.headers["retry-after"] == figure
    assert f"Expected available in {figure} second" in throttled.json()["detail"]


def test_bad_knobs_are_refused(emulator: EmulatorServer) -> None:
    response = httpx.post(
        f"{emulator.base_url}/_emulator/faults", json={"create_errors": [200], "nope": 1}
    )
    assert response.status_code == 400
    assert emulator.control.faults()["create_errors"] == []


async def test_an_unexpected_error_is_a_500_problem(fast_config: EmulatorConfig) -> None:
    """A bug of the emulator answers in Replicate's shape too, not as plain text."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = create_app(fast_config)
    app.router.routes.append(Route("/v1/broken", broken))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        assert_problem(await client.get("/v1/broken"), 500)
