"""The model run itself: fetch the inputs, render the output file."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from kit.logging import get_logger
from replicate_emulator.files import OutputFile
from replicate_emulator.images import InputError, fetch_inputs, render

_log = get_logger("replicate_emulator.work")
GENERATING_LOG = "Generating image with Gemini Flash...\n"


@dataclass(frozen=True)
class Outcome:
    """What a run produced: a file, or the error text of a failed prediction."""

    file: OutputFile | None = None
    error: str | None = None


def model_settings(model_input: dict[str, Any]) -> tuple[str, list[str], str, str]:
    """(prompt, image_input, aspect_ratio, output_format) with the model's defaults."""
    return (
        str(model_input.get("prompt", "")),
        list(model_input.get("image_input", [])),
        str(model_input.get("aspect_ratio", "match_input_image")),
        str(model_input.get("output_format", "jpg")),
    )


async def produce(
    client: httpx.AsyncClient, prediction_id: str, model_input: dict[str, Any], max_bytes: int
) -> Outcome:
    """Download the inputs and paint the output; never raises for bad inputs."""
    prompt, urls, aspect_ratio, output_format = model_settings(model_input)
    try:
        inputs = await fetch_inputs(client, urls, max_bytes)
        data = await asyncio.to_thread(render, inputs, prompt, aspect_ratio, output_format)
    except InputError as exc:
        return Outcome(error=str(exc))
    except Exception:
        # A real model run that crashes ends `failed`; the emulator must not die with it.
        _log.exception("prediction.render_failed", predictionId=prediction_id)
        return Outcome(error="Prediction failed: the model could not generate an image")
    if output_format == "png":
        return Outcome(file=OutputFile("output.png", data, "image/png"))
    return Outcome(file=OutputFile("output.jpg", data, "image/jpeg"))
