"""The generation modes as every service sees them: a fixed product fact, not a knob.

Generation enforces these rules (``generation.domain.modes``); the edge publishes
them in ``GET /api/v1/catalog`` and the OpenAPI document. One table, so the two
can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModeRule:
    """What a mode takes: how many images (exactly) and whether a prompt is required."""

    key: str
    images: int
    prompt_required: bool


MODE_RULES: tuple[ModeRule, ...] = (
    ModeRule("redesign", images=1, prompt_required=False),
    ModeRule("staging", images=1, prompt_required=False),
    # The base room first, then the style or object reference.
    ModeRule("compose", images=2, prompt_required=False),
    ModeRule("imagine", images=0, prompt_required=True),
)
MODE_KEYS: tuple[str, ...] = tuple(rule.key for rule in MODE_RULES)
