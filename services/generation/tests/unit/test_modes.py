"""Modes and the validation of a submission's fields against the runtime config."""

from __future__ import annotations

from pathlib import Path

import pytest

from generation.domain.moderation import REJECTION_MESSAGE
from generation.domain.modes import GenerationInput, Mode, parse_mode, validate_generation_input
from kit.errors import ValidationError
from kit.runtime_config import RuntimeConfig, load_runtime_config

CONFIG_FILE = Path(__file__).resolve().parents[4] / "config" / "runtime.toml"


@pytest.fixture(scope="module")
def config() -> RuntimeConfig:
    return load_runtime_config(CONFIG_FILE)


@pytest.mark.parametrize(
    ("mode", "images", "keeps_structure", "requires_prompt"),
    [
        (Mode.REDESIGN, 1, True, False),
        (Mode.STAGING, 1, True, False),
        (Mode.COMPOSE, 2, True, False),
        (Mode.IMAGINE, 0, False, True),
    ],
)
def test_mode_properties(
    mode: Mode, images: int, keeps_structure: bool, requires_prompt: bool
) -> None:
    assert mode.image_count == images
    assert mode.keeps_structure is keeps_structure
    assert mode.requires_prompt is requires_prompt


@pytest.mark.parametrize(
    ("raw", "mode"),
    [("redesign", Mode.REDESIGN), (" Staging ", Mode.STAGING), ("COMPOSE", Mode.COMPOSE)],
)
def test_parse_mode(raw: str, mode: Mode) -> None:
    assert parse_mode(raw) is mode


@pytest.mark.parametrize("raw", ["", "paint", "redesign2", "imagin", "redesign staging"])
def test_parse_mode_refuses_unknown_modes(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_mode(raw)
    assert caught.value.message == "mode must be one of redesign, staging, compose, imagine"
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.reason == "VALIDATION_ERROR"


def _named(count: int) -> list[str]:
    """``count`` uploads named as the edge names them."""
    return ["input1", "input2"][:count]


def test_valid_submission_is_normalized(config: RuntimeConfig) -> None:
    result = validate_generation_input(
        " Redesign ",
        "  Add   a\tjute rug ",
        "Living_Room ",
        " coastal_au",
        ["input1"],
        False,
        config,
    )
    assert result == GenerationInput(
        mode=Mode.REDESIGN, prompt="Add a jute rug", room_type="living_room", style="coastal_au"
    )


def test_blank_choices_and_prompt_mean_none(config: RuntimeConfig) -> None:
    result = validate_generation_input("compose", "  ", "", None, _named(2), False, config)
    assert result == GenerationInput(mode=Mode.COMPOSE, prompt=None, room_type=None, style=None)


def test_imagine_takes_no_images_and_needs_a_prompt(config: RuntimeConfig) -> None:
    result = validate_generation_input(
        "imagine", "A calm reading nook", None, "japandi", _named(0), False, config
    )
    assert result.prompt == "A calm reading nook"
    with pytest.raises(ValidationError, match=r"^imagine needs a prompt"):
        validate_generation_input("imagine", None, None, "japandi", _named(0), False, config)


@pytest.mark.parametrize(
    ("mode", "count", "message"),
    [
        ("redesign", 0, "redesign needs one image of the room (input1)"),
        ("redesign", 2, "redesign needs one image of the room (input1)"),
        ("staging", 0, "staging needs one image of the room (input1)"),
        (
            "compose",
            1,
            "compose needs two images: the base room (input1), then the reference (input2)",
        ),
        (
            "compose",
            0,
            "compose needs two images: the base room (input1), then the reference (input2)",
        ),
        ("imagine", 1, "imagine takes no images; describe the room in the prompt"),
    ],
)
def test_wrong_image_count_names_what_the_mode_needs(
    config: RuntimeConfig, mode: str, count: int, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_generation_input(mode, "A room", None, None, _named(count), False, config)
    assert caught.value.message == message


def test_unknown_style_lists_the_styles_without_echoing_the_value(config: RuntimeConfig) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_generation_input("redesign", None, None, "<script>evil", _named(1), False, config)
    message = caught.value.message
    assert message.startswith("style must be one of coastal_au, contemporary_au, japandi")
    assert "evil" not in message
    assert "script" not in message


def test_unknown_room_type_is_refused(config: RuntimeConfig) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_generation_input("staging", None, "garage", "japandi", _named(1), False, config)
    assert caught.value.message == (
        "roomType must be one of living_room, bedroom, kitchen, dining, bathroom, "
        "home_office, kids_room, outdoor"
    )


def test_image_count_is_checked_before_the_prompt(config: RuntimeConfig) -> None:
    with pytest.raises(ValidationError, match=r"^compose needs two images"):
        validate_generation_input("compose", "x" * 5000, "nowhere", None, _named(1), False, config)


def test_prompt_too_long_is_refused(config: RuntimeConfig) -> None:
    with pytest.raises(ValidationError, match=r"^prompt must be at most 1000 characters$"):
        validate_generation_input("redesign", "x" * 1001, None, None, _named(1), False, config)


def test_moderated_prompt_gets_the_generic_message(config: RuntimeConfig) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_generation_input(
            "redesign", "call me on 0412 345 678", None, None, _named(1), False, config
        )
    assert caught.value.message == REJECTION_MESSAGE
    assert "0412" not in str(caught.value)


def test_moderation_sees_the_normalized_prompt(config: RuntimeConfig) -> None:
    # Zero-width characters are removed before moderation, so they cannot hide a word.
    with pytest.raises(ValidationError, match=r"^This prompt can't be used"):
        validate_generation_input(
            "redesign", "p\u200bo\u200br\u200bn", None, None, _named(1), False, config
        )


def test_the_modes_are_the_shared_table_the_catalog_publishes() -> None:
    from kit.modes import MODE_RULES

    assert [mode.value for mode in Mode] == [rule.key for rule in MODE_RULES]
    for rule in MODE_RULES:
        assert Mode(rule.key).image_count == rule.images
        assert Mode(rule.key).requires_prompt is rule.prompt_required


@pytest.mark.parametrize(
    ("mode", "fields", "has_source", "message"),
    [
        # A refine's source is input1: what comes beside it is the reference, input2.
        (
            "compose",
            ["input1"],
            True,
            "compose with a source takes the reference as input2 (the source's variant is input1)",
        ),
        ("redesign", ["input2"], False, "redesign needs one image of the room (input1)"),
        ("staging", ["input2"], False, "staging needs one image of the room (input1)"),
        (
            "compose",
            ["input2", "input2"],
            False,
            "compose needs two images: the base room (input1), then the reference (input2)",
        ),
        ("redesign", ["input1"], True, "redesign needs one image of the room (input1)"),
    ],
)
def test_images_must_come_under_the_names_the_mode_gives_them(
    config: RuntimeConfig, mode: str, fields: list[str], has_source: bool, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_generation_input(mode, "A room", None, None, fields, has_source, config)
    assert caught.value.message == message


def test_a_refine_takes_its_uploads_after_the_source(config: RuntimeConfig) -> None:
    compose = validate_generation_input("compose", None, None, None, ["input2"], True, config)
    redesign = validate_generation_input("redesign", None, None, None, [], True, config)
    assert (compose.mode, redesign.mode) == (Mode.COMPOSE, Mode.REDESIGN)
