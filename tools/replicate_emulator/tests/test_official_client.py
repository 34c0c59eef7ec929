"""The official ``replicate`` client (1.0.7) drives the emulator like the real API."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import httpx
import pytest
from PIL import Image
from replicate.client import Client
from replicate.exceptions import ReplicateError

from replicate_emulator.tls import client_tls_context
from testkit.emulator import EmulatorServer


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    """Builds clients whose connection pools are closed after the test."""
    transports: list[httpx.HTTPTransport] = []

    def make(emulator: EmulatorServer, token: str | None = None) -> Client:
        transports.append(httpx.HTTPTransport(verify=client_tls_context()))
        client = Client(
            api_token=token or emulator.token, base_url=emulator.base_url, transport=transports[-1]
        )
        client.poll_interval = 0.02
        return client

    yield make
    for transport in transports:
        transport.close()


def test_create_wait_and_download(
    emulator: EmulatorServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(emulator)
    prediction = client.models.predictions.create(
        model="google/nano-banana", input={"prompt": "a calm living room"}
    )
    initial_status: str = prediction.status
    assert initial_status == "starting"
    assert prediction.model == "google/nano-banana"
    assert prediction.version == "hidden"

    prediction.wait()

    assert prediction.status == "succeeded"
    output = prediction.output
    assert isinstance(output, str)
    assert prediction.metrics is not None
    assert prediction.metrics["predict_time"] >= 0
    assert "Generating image with Gemini Flash" in (prediction.logs or "")
    image = httpx.get(output, timeout=5)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"


def test_get_and_reload_follow_the_status(
    emulator: EmulatorServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(emulator)
    emulator.control.set_faults(hold=True)
    created = client.models.predictions.create(
        model="google/nano-banana", input={"prompt": "kitchen"}
    )
    emulator.control.wait_for_status(created.id, ["processing"])

    fetched = client.predictions.get(created.id)
    assert fetched.id == created.id
    assert fetched.status == "processing"
    assert fetched.started_at is not None

    emulator.control.advance(created.id, "succeeded")
    created.reload()
    assert created.status == "succeeded"
    assert created.completed_at is not None


def test_cancel_through_the_client(
    emulator: EmulatorServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(emulator)
    emulator.control.set_faults(hold=True)
    prediction = client.models.predictions.create(
        model="google/nano-banana", input={"prompt": "bedroom"}
    )

    canceled = client.predictions.cancel(prediction.id)
    assert canceled.status == "canceled"
    assert canceled.completed_at is not None

    again = client.predictions.cancel(prediction.id)  # terminal: unchanged
    assert again.status == "canceled"
    assert again.completed_at == canceled.completed_at


def test_create_by_version(emulator: EmulatorServer, make_client: Callable[..., Client]) -> None:
    client = make_client(emulator)
    prediction = client.predictions.create(
        version="google/nano-banana", input={"prompt": "hallway", "output_format": "png"}
    )
    prediction.wait()
    assert prediction.status == "succeeded"
    output = prediction.output
    assert isinstance(output, str)
    assert output.endswith("/output.png")
    response = httpx.get(output, timeout=5)
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).format == "PNG"


def test_wrong_token_raises_the_clients_error(
    emulator: EmulatorServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(emulator, token="r8_wrong")
    with pytest.raises(ReplicateError) as raised:
        client.models.predictions.create(model="google/nano-banana", input={"prompt": "x"})
    assert raised.value.status == 401
    assert raised.value.title == "Unauthenticated"


def test_default_webhook_secret(
    emulator: EmulatorServer, make_client: Callable[..., Client]
) -> None:
    secret = make_client(emulator).webhooks.default.secret()
    assert secret.key == emulator.webhook_secret


def test_a_file_input_sent_as_a_data_uri_is_the_models_input(
    emulator: EmulatorServer, make_client: Callable[..., Client]
) -> None:
    """The client sends a file itself (``file_encoding_strategy="base64"``) as a
    ``data:`` URI, which Replicate takes as the input's URI; the emulator refused it."""
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture, format="PNG")
    client = make_client(emulator)

    prediction = client.models.predictions.create(
        model="google/nano-banana",
        input={"prompt": "a calm room", "image_input": [io.BytesIO(picture.getvalue())]},
        file_encoding_strategy="base64",
    )
    prediction.wait()

    assert prediction.status == "succeeded", prediction.error
    assert isinstance(prediction.output, str)
    output = httpx.get(prediction.output, timeout=5)
    with Image.open(io.BytesIO(output.content)) as image:
        assert image.size[0] * 48 == image.size[1] * 64  # the input's shape: it was used


@pytest.mark.parametrize("uri", ["data:image/png;base64,not*base64", "data:image/png;base64"])
def test_a_data_uri_that_does_not_parse_is_refused(
    emulator: EmulatorServer, make_client: Callable[..., Client], uri: str
) -> None:
    client = make_client(emulator)
    with pytest.raises(ReplicateError) as refused:
        client.models.predictions.create(
            model="google/nano-banana", input={"prompt": "a room", "image_input": [uri]}
        )
    assert refused.value.status == 422


def test_a_data_uri_that_is_no_image_fails_the_run(
    emulator: EmulatorServer, make_client: Callable[..., Client]
) -> None:
    client = make_client(emulator)
    prediction = client.models.predictions.create(
        model="google/nano-banana", input={"prompt": "a room", "image_input": ["data:,"]}
    )
    prediction.wait()
    assert prediction.status == "failed"
