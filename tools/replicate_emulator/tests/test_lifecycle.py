"""Lifecycle: Cancel-After, cancel, hold/advance, fail_next, output shapes, retention."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from replicate_emulator import AsyncControlClient, ControlError
from testkit.emulator import EmulatorServer
from testkit.recorder import RecordingServer

MODEL_PATH = "/v1/models/google/nano-banana/predictions"
EVENTS = ["completed"]


def create(api: httpx.Client, body: dict[str, Any] | None = None, **headers: str) -> str:
    response = api.post(MODEL_PATH, json=body or {"input": {"prompt": "x"}}, headers=headers)
    assert response.status_code == 201, response.text
    prediction_id: str = response.json()["id"]
    return prediction_id


def test_cancel_after_passing_before_the_start_aborts(
    emulator: EmulatorServer, api: httpx.Client, receiver: RecordingServer
) -> None:
    emulator.control.set_faults(start_delay_ms=5000)
    body = {
        "input": {"prompt": "x"},
        "webhook": receiver.url,
        "webhook_events_filter": ["completed"],
    }
    pid = create(api, body, **{"Cancel-After": "200ms"})

    done = emulator.control.wait_for_status(pid, ["aborted"], timeout=3)

    assert done["completed_at"] is not None
    assert done["started_at"] is None
    assert done["deadline"].endswith("Z")
    [webhook] = receiver.wait_for(1)
    assert webhook.json()["status"] == "aborted"


def test_cancel_after_during_the_run_cancels(emulator: EmulatorServer, api: httpx.Client) -> None:
    emulator.control.set_faults(hold=True)
    pid = create(api, None, **{"Cancel-After": "0.3s"})
    assert emulator.control.wait_for_status(pid, ["processing"])["status"] == "processing"
    done = emulator.control.wait_for_status(pid, ["canceled"], timeout=3)
    assert done["output"] is None


def test_generous_cancel_after_lets_it_succeed(emulator: EmulatorServer, api: httpx.Client) -> None:
    pid = create(api, None, **{"Cancel-After": "1h2m3s"})
    assert emulator.control.wait_for_status(pid, ["succeeded"])["status"] == "succeeded"


@pytest.mark.parametrize("duration", ["0s", "50ms", "0.09s"])
def test_a_cancel_after_under_the_minimum_is_422_not_raised(
    emulator: EmulatorServer, api: httpx.Client, duration: str
) -> None:
    # The fast config's minimum is 0.1 s (Replicate's is 5 s): a caller that forgot its
    # own floor learns it here instead of getting a later deadline than it asked for.
    before = len(emulator.control.predictions())
    response = api.post(
        MODEL_PATH, json={"input": {"prompt": "x"}}, headers={"Cancel-After": duration}
    )
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "Cancel-After"
    assert len(emulator.control.predictions()) == before


def test_bad_cancel_after_is_422(api: httpx.Client) -> None:
    response = api.post(
        MODEL_PATH, json={"input": {"prompt": "x"}}, headers={"Cancel-After": "soon"}
    )
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "Cancel-After"


def test_cancel_of_a_starting_prediction_is_final(
    emulator: EmulatorServer, api: httpx.Client
) -> None:
    emulator.control.set_faults(start_delay_ms=100)
    pid = create(api)
    canceled = api.post(f"/v1/predictions/{pid}/cancel").json()
    assert canceled["status"] == "canceled"
    assert "metrics" in canceled
    time.sleep(0.3)  # past the start delay: the run must not have resumed
    assert api.get(f"/v1/predictions/{pid}").json() == canceled


def test_cancel_of_a_finished_prediction_changes_nothing(
    emulator: EmulatorServer, api: httpx.Client
) -> None:
    pid = create(api)
    done = emulator.control.wait_for_status(pid, ["succeeded"])
    again = api.post(f"/v1/predictions/{pid}/cancel")
    assert again.status_code == 200
    assert again.json() == done


def test_hold_then_advance(emulator: EmulatorServer, api: httpx.Client) -> None:
    emulator.control.set_faults(hold=True)
    ok, bad, gone = create(api), create(api), create(api)
    for pid in (ok, bad, gone):
        emulator.control.wait_for_status(pid, ["processing"])

    assert emulator.control.advance(ok, "succeeded")["status"] == "succeeded"
    failed = emulator.control.advance(bad, "failed")
    assert failed["status"] == "failed"
    assert failed["error"]
    assert emulator.control.advance(gone, "canceled")["status"] == "canceled"
    with pytest.raises(ControlError, match="409"):
        emulator.control.advance(ok, "processing")


def test_releasing_hold_lets_predictions_finish(
    emulator: EmulatorServer, api: httpx.Client
) -> None:
    emulator.control.set_faults(hold=True)
    pid = create(api)
    emulator.control.wait_for_status(pid, ["processing"])
    emulator.control.set_faults(hold=False)
    assert emulator.control.wait_for_status(pid, ["succeeded"])["status"] == "succeeded"


def test_advance_can_abort_a_starting_prediction(
    emulator: EmulatorServer, api: httpx.Client
) -> None:
    emulator.control.set_faults(start_delay_ms=5000)
    pid = create(api)
    assert emulator.control.advance(pid, "aborted")["status"] == "aborted"


def test_fail_next(emulator: EmulatorServer, api: httpx.Client) -> None:
    emulator.control.set_faults(fail_next=1)
    first, second = create(api), create(api)
    failed = emulator.control.wait_for_status(first, ["succeeded", "failed"])
    assert failed["status"] == "failed"
    assert failed["error"].startswith("E6716")
    assert (
        emulator.control.wait_for_status(second, ["succeeded", "failed"])["status"] == "succeeded"
    )


@pytest.mark.parametrize(("shape", "kind"), [("list", list), ("null", type(None))])
def test_output_shape_knob(
    emulator: EmulatorServer, api: httpx.Client, shape: Literal["list", "null"], kind: type
) -> None:
    emulator.control.set_faults(output_shape=shape)
    done = emulator.control.wait_for_status(create(api), ["succeeded"])
    assert isinstance(done["output"], kind)


def test_output_file_faults(emulator: EmulatorServer, api: httpx.Client) -> None:
    done = emulator.control.wait_for_status(create(api), ["succeeded"])
    emulator.control.set_faults(output_errors=[503, 403], output_delay_ms=50)
    assert httpx.get(done["output"]).status_code == 503
    assert httpx.get(done["output"]).status_code == 403
    assert httpx.get(done["output"]).status_code == 200


def test_data_retention_removes_output(
    emulator: EmulatorServer, api: httpx.Client, wait_until: Callable[..., None]
) -> None:
    # Long enough for the first download to come first on a loaded machine.
    emulator.control.set_faults(data_retention_seconds=1.5)
    pid = create(api)
    done = emulator.control.wait_for_status(pid, ["succeeded"])
    assert httpx.get(done["output"]).status_code == 200

    wait_until(lambda: api.get(f"/v1/predictions/{pid}").json()["data_removed"] is True)

    removed = api.get(f"/v1/predictions/{pid}").json()
    assert removed["output"] is None
    assert removed["status"] == "succeeded"
    assert removed["input"] == {}
    assert httpx.get(done["output"]).status_code == 404


def test_reset_forgets_everything(emulator: EmulatorServer, api: httpx.Client) -> None:
    emulator.control.set_faults(hold=True, create_errors=[500, 500])
    api.post(MODEL_PATH, json={"input": {"prompt": "x"}})
    emulator.control.reset()
    assert emulator.control.predictions() == []
    assert emulator.control.faults()["create_errors"] == []
    assert emulator.control.wait_for_status(create(api), ["succeeded"])["status"] == "succeeded"
    assert len(emulator.control.predictions()) == 1


async def test_async_control_client(emulator: EmulatorServer, api: httpx.Client) -> None:
    async with AsyncControlClient(emulator.base_url) as control:
        await control.set_faults(hold=True)
        pid = create(api)
        processing = await control.wait_for_status(pid, ["processing"])
        assert processing["status"] == "processing"
        assert (await control.advance(pid, "succeeded"))["status"] == "succeeded"
        assert [p["id"] for p in await control.predictions()] == [pid]
        await control.reset()
        assert await control.predictions() == []


def test_advance_to_an_unknown_status_is_refused(
    emulator: EmulatorServer, api: httpx.Client
) -> None:
    pid = create(api)
    with pytest.raises(ControlError, match="400"):
        emulator.control.advance(pid, "finished")


def test_outputs_are_kept_on_disk_until_their_data_is_removed(
    emulator: EmulatorServer, api: httpx.Client, wait_until: Callable[..., None]
) -> None:
    # An hour of outputs held in memory grew a long run's emulator by each one's size.
    emulator.control.set_faults(data_retention_seconds=1.5)
    done = emulator.control.wait_for_status(create(api), ["succeeded"])
    pattern = f"replicate-emulator-files-*/{done['id']}"
    [stored] = Path(tempfile.gettempdir()).glob(pattern)
    assert stored.read_bytes() == httpx.get(done["output"]).content
    wait_until(lambda: not stored.exists(), timeout=5)
    assert httpx.get(done["output"]).status_code == 404
