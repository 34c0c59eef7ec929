"""Plans from the runtime config, found by a user's ``price_id``.

A user without a profile, without a ``price_id``, or with a ``price_id`` that
the config no longer lists (a retired price) is on the ``free`` plan. Setting a
plan, in contrast, accepts only ``price_id`` values the config lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kit.errors import ValidationError
from kit.runtime_config import Plan, RuntimeConfig

FREE_KEY = "free"
MAX_PRICE_ID_LENGTH = 200


@dataclass(frozen=True)
class ResolvedPlan:
    """The plan a user is on; ``price_id`` is empty for the free fallback."""

    name: str
    price_id: str
    monthly_generations: int


class PlanCatalog:
    """Looks plans up by ``price_id``."""

    def __init__(self, plans: Mapping[str, Plan]) -> None:
        if FREE_KEY not in plans:
            raise ValueError("the plans must include the 'free' fallback")
        self._plans = dict(plans)

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> PlanCatalog:
        """The catalog of the runtime config's ``[plans]``."""
        return cls(config.plans)

    @property
    def free(self) -> ResolvedPlan:
        """The fallback plan."""
        plan = self._plans[FREE_KEY]
        return ResolvedPlan(plan.name, "", plan.monthly_generations)

    def paid_limits(self) -> dict[str, int]:
        """Monthly generations by price_id of every plan but the free fallback."""
        return {
            key: plan.monthly_generations for key, plan in self._plans.items() if key != FREE_KEY
        }

    def resolve(self, price_id: str | None) -> ResolvedPlan:
        """The plan for a stored ``price_id``; free when it is unset or unknown."""
        if not price_id or price_id == FREE_KEY or price_id not in self._plans:
            return self.free
        plan = self._plans[price_id]
        return ResolvedPlan(plan.name, price_id, plan.monthly_generations)

    def price_id_to_store(self, price_id: str) -> str | None:
        """Validates a requested ``price_id``: None means free; unknown ones are refused."""
        cleaned = price_id.strip()
        if not cleaned or cleaned == FREE_KEY:
            return None
        if len(cleaned) > MAX_PRICE_ID_LENGTH or cleaned not in self._plans:
            raise ValidationError("Unknown price_id.", field="price_id")
        return cleaned
