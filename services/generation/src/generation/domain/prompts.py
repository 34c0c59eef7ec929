"""The prompt system: normalizing the user's text and composing the model prompt.

The composed prompt follows the generation engine seed's order exactly: the
mode's template (which names the style and room type), the structure guardrails
for modes that keep the room and the Australian booster, then the style's seed
text from the runtime config, then the user's text last (so the template sets the
frame and the user refines it).

Wording decisions where the seed is silent:
- a style appears by its label where the seed's examples show it, followed by its
  seed text as a sentence of its own;
- a room type appears by its label in the "Room type: ..." headers and by its seed
  text inside sentences ("for an outdoor living area"), which reads as English
  where the label would not ("for a Outdoor");
- a missing style or room type drops its part; staging without a style asks for
  "a style that suits the space".
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

from generation.domain.moderation_skeleton import visible
from kit.errors import ValidationError
from kit.runtime_config import Choice, Prompts

if TYPE_CHECKING:
    # modes imports this module for validation, so Mode is only needed as a type here.
    from generation.domain.modes import Mode

GUARDRAILS = (
    "Photoreal interior render, correct perspective, realistic lighting. Keep existing room "
    "architecture unchanged; do not alter structural layout, view direction, or window positions."
)
AU_BOOSTER = "Use materials and furnishings common in Australian homes; bright, airy daylight."

# Control and format characters (zero-width spaces, bidi overrides, ...) and lone
# surrogates carry no meaning for the model and can hide text from moderation.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
# A raw prompt this many times over the limit is refused before any per-character work.
_RAW_LENGTH_FACTOR = 10


def normalize_prompt(raw: str | None, mode: Mode, prompts: Prompts) -> str | None:
    """The user's text in canonical form, or None when there is none.

    NFC, control and format characters removed, whitespace runs collapsed to one
    space, trimmed. Raises :class:`ValidationError` when it is longer than
    ``prompts.max_length`` characters, or when ``mode`` requires a prompt and the
    text is missing or shorter than ``prompts.imagine_min_length``.
    """
    if raw is not None and len(raw) > prompts.max_length * _RAW_LENGTH_FACTOR:
        raise _too_long(prompts)
    counted, text = _clean(raw) if raw is not None else ("", "")
    # Counted as the catalog's maxLength is (what was typed, control characters and
    # extra spaces aside): NFC may lengthen a text (U+0958 becomes two code points).
    if len(counted) > prompts.max_length:
        raise _too_long(prompts)
    # Characters that show nothing (Hangul fillers, variation selectors) are no prompt.
    if mode.requires_prompt and len(visible(text).strip()) < prompts.imagine_min_length:
        raise ValidationError(
            f"{mode} needs a prompt describing the room "
            f"(at least {prompts.imagine_min_length} characters)"
        )
    return text or None


def compose_prompt(
    mode: Mode, user_text: str | None, style: Choice | None, room_type: Choice | None
) -> str:
    """The prompt sent to the model for ``mode``; deterministic for equal inputs."""
    parts = _TEMPLATES[mode](style, room_type)
    if mode.keeps_structure:
        parts.append(GUARDRAILS)
    parts.append(AU_BOOSTER)
    parts.append(_style_seed(style))
    if user_text:
        parts.append(user_text)
    sentences = (_sentence(part) for part in parts)
    return " ".join(sentence for sentence in sentences if sentence)


def _redesign(style: Choice | None, room: Choice | None) -> list[str]:
    return [
        _header(None, style, room),
        "Restyle the furnishings, decor and colour palette of this room "
        "without changing its architecture",
    ]


def _staging(style: Choice | None, room: Choice | None) -> list[str]:
    look = f"appropriate for {style.label}" if style else "in a style that suits the space"
    target = f"for {_with_article(room.seed)}" if room else "for this room"
    return [
        f"Add tasteful furniture and decor {look}, {target} in an Australian home",
        "Do not move walls/doors/windows",
    ]


def _compose(style: Choice | None, room: Choice | None) -> list[str]:
    return [
        _header("Base room + reference", style, room),
        "The first image is the base room; keep its structure",
        "The second image is the style and object reference; bring its look and pieces "
        "into the base room, harmonising lighting and perspective",
    ]


def _imagine(style: Choice | None, room: Choice | None) -> list[str]:
    concept = "Generate a photoreal interior concept"
    if room:
        concept += f" for {_with_article(room.seed)}"
    if style:
        concept += f" in {style.label}"
    return [
        f"{concept}; balanced composition, realistic materials, natural light",
    ]


# Keyed by the mode's value: Mode cannot be imported at run time here (see above).
_TEMPLATES: dict[str, Callable[[Choice | None, Choice | None], list[str]]] = {
    "redesign": _redesign,
    "staging": _staging,
    "compose": _compose,
    "imagine": _imagine,
}


def _header(lead: str | None, style: Choice | None, room: Choice | None) -> str:
    """``lead; Style: <label>; Room type: <label>`` without the absent parts."""
    parts = [lead] if lead else []
    if style:
        parts.append(f"Style: {style.label}")
    if room:
        parts.append(f"Room type: {room.label}")
    return "; ".join(parts)


def _style_seed(style: Choice | None) -> str:
    return style.seed if style else ""


def _with_article(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front, unless it already starts with an article."""
    first_word = phrase.split(" ", 1)[0].lower()
    if first_word in {"a", "an", "the"}:
        return phrase
    return f"{'an' if first_word[:1] in set('aeiou') else 'a'} {phrase}"


def _sentence(text: str) -> str:
    """``text`` on one line, ending with exactly one terminal mark; "" when nothing is left."""
    text = " ".join(text.split()).rstrip(" .,;:")
    if not text or text.endswith(("!", "?")):
        return text
    return f"{text}."


def _clean(raw: str) -> tuple[str, str]:
    """The text as counted against the length limit (control and format characters
    dropped, whitespace collapsed), and the same in NFC, as stored and composed."""
    kept = "".join(
        " " if char.isspace() else char
        for char in raw
        if char.isspace() or unicodedata.category(char) not in _DROPPED_CATEGORIES
    )
    # NFC after the removal: a dropped character may have separated a letter from its accent.
    return " ".join(kept.split()), " ".join(unicodedata.normalize("NFC", kept).split())


def _too_long(prompts: Prompts) -> ValidationError:
    return ValidationError(f"prompt must be at most {prompts.max_length} characters")
