"""Generation modes and the validation of a submission's fields.

A mode decides how many images a submission carries and whether the room's
structure must be kept. :func:`validate_generation_input` turns the raw fields
of a submission into a :class:`GenerationInput` or raises a
:class:`kit.errors.ValidationError` whose message is safe to show (it never
echoes what the user sent).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from generation.domain.moderation import moderate_prompt
from generation.domain.prompts import normalize_prompt
from kit.errors import ValidationError
from kit.modes import MODE_RULES
from kit.runtime_config import RuntimeConfig


class Mode(enum.StrEnum):
    """What the user asks the model to do."""

    REDESIGN = "redesign"
    STAGING = "staging"
    COMPOSE = "compose"
    IMAGINE = "imagine"

    @property
    def image_count(self) -> int:
        """How many input images the mode takes (exactly)."""
        return _RULES[self.value].images

    @property
    def keeps_structure(self) -> bool:
        """True when the output must keep the input room's architecture."""
        return self is not Mode.IMAGINE

    @property
    def requires_prompt(self) -> bool:
        """True when the user's text is the only description of the room."""
        return _RULES[self.value].prompt_required


# The one table of what each mode takes, shared with the edge's catalog.
_RULES = {rule.key: rule for rule in MODE_RULES}

_IMAGE_COUNT_MESSAGES = {
    Mode.REDESIGN: "redesign needs one image of the room (input1)",
    Mode.STAGING: "staging needs one image of the room (input1)",
    Mode.COMPOSE: "compose needs two images: the base room (input1), then the reference (input2)",
    Mode.IMAGINE: "imagine takes no images; describe the room in the prompt",
}
# A refine's source stands in for input1: what is uploaded beside it is input2.
_REFINED_COMPOSE = (
    "compose with a source takes the reference as input2 (the source's variant is input1)"
)
_FIELDS = ("input1", "input2")


def parse_mode(raw: str) -> Mode:
    """The mode named by ``raw`` (surrounding spaces and case are ignored)."""
    try:
        return Mode(raw.strip().lower())
    except ValueError:
        raise ValidationError("mode must be one of redesign, staging, compose, imagine") from None


@dataclass(frozen=True)
class GenerationInput:
    """A submission's fields after validation, normalization and moderation."""

    mode: Mode
    # The user's text, normalized (see normalize_prompt); None when there is none.
    prompt: str | None
    # Keys of RuntimeConfig.room_types / RuntimeConfig.styles; None when not chosen.
    room_type: str | None
    style: str | None


def validate_generation_input(
    mode_raw: str,
    prompt_raw: str | None,
    room_type_raw: str | None,
    style_raw: str | None,
    input_fields: Sequence[str],
    has_source: bool,
    config: RuntimeConfig,
) -> GenerationInput:
    """Check a submission against its mode and the runtime config.

    Checks run cheapest first: the mode, the images (how many, under which names: a
    refine's source is input1), the style and room type, then the prompt (normalized,
    length-checked, moderated). Raises :class:`kit.errors.ValidationError` on the
    first problem.
    """
    mode = parse_mode(mode_raw)
    first = 1 if has_source else 0
    if len(input_fields) + first != mode.image_count:
        raise ValidationError(_IMAGE_COUNT_MESSAGES[mode])
    if tuple(input_fields) != _FIELDS[first : mode.image_count]:
        raise ValidationError(_REFINED_COMPOSE if has_source else _IMAGE_COUNT_MESSAGES[mode])
    style = _choice_key(style_raw, list(config.styles), "style")
    room_type = _choice_key(room_type_raw, list(config.room_types), "roomType")
    prompt = normalize_prompt(prompt_raw, mode, config.prompts)
    if prompt is not None:
        moderate_prompt(prompt)
    return GenerationInput(mode=mode, prompt=prompt, room_type=room_type, style=style)


def _choice_key(raw: str | None, known: list[str], field: str) -> str | None:
    """The config key named by ``raw``; None for an absent or blank value."""
    key = (raw or "").strip().lower()
    if not key:
        return None
    if key not in known:
        # The known keys are product configuration, safe to list; the value sent is not echoed.
        raise ValidationError(f"{field} must be one of {', '.join(known)}")
    return key
