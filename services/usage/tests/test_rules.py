"""Pure rules: the UTC month, plan lookup, command validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kit.errors import InternalError, ValidationError
from kit.runtime_config import Plan
from usage.domain.model import LedgerCommand
from usage.domain.periods import month_of
from usage.domain.plans import PlanCatalog

SYDNEY = timezone(timedelta(hours=11))


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 10, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 31, 12, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            datetime(2028, 2, 29, tzinfo=UTC),
            datetime(2028, 2, 1, tzinfo=UTC),
            datetime(2028, 3, 1, tzinfo=UTC),
        ),
        # 1 November, 09:00 in Sydney is still October in UTC.
        (
            datetime(2026, 11, 1, 9, tzinfo=SYDNEY),
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
    ],
)
def test_the_period_is_the_utc_calendar_month(
    moment: datetime, start: datetime, end: datetime
) -> None:
    period = month_of(moment)

    assert (period.start, period.end) == (start, end)
    assert period.contains(moment)
    assert not period.contains(end)


def test_a_naive_time_is_a_bug() -> None:
    with pytest.raises(InternalError):
        month_of(datetime(2026, 10, 1))


CATALOG = PlanCatalog(
    {
        "free": Plan(name="free", monthly_generations=3),
        "price_pro": Plan(name="pro", monthly_generations=9),
    }
)


@pytest.mark.parametrize("stored", [None, "", "free", "price_gone"])
def test_unset_free_or_unknown_prices_resolve_to_free(stored: str | None) -> None:
    plan = CATALOG.resolve(stored)

    assert (plan.name, plan.price_id, plan.monthly_generations) == ("free", "", 3)


def test_a_known_price_resolves_to_its_plan() -> None:
    assert CATALOG.resolve("price_pro").monthly_generations == 9
    assert CATALOG.price_id_to_store(" price_pro ") == "price_pro"
    assert CATALOG.price_id_to_store("") is None
    assert CATALOG.price_id_to_store("free") is None
    with pytest.raises(ValidationError):
        CATALOG.price_id_to_store("price_gone")


def test_a_catalog_needs_the_free_fallback() -> None:
    with pytest.raises(ValueError, match="free"):
        PlanCatalog({"price_pro": Plan(name="pro", monthly_generations=9)})


def test_a_command_gets_a_default_reason_and_keeps_its_key() -> None:
    owner, job = "8A5E3A8C-5C73-4C4B-9E7C-1C3A5C1F2B11", "0b9c6f5e-36a4-4c3e-8f63-2d2f4e1a9b77"

    command = LedgerCommand.parse(owner, job, " key-1", "", "generation")

    # Keys are kept exactly as sent: " key-1" and "key-1" are different keys.
    assert (str(command.owner_id), command.idempotency_key, command.reason) == (
        owner.lower(),
        " key-1",
        "generation",
    )


@pytest.mark.parametrize("reason", ["r" * 101, "bad\nreason"])
def test_a_bad_reason_is_refused(reason: str) -> None:
    with pytest.raises(ValidationError):
        LedgerCommand.parse(
            "8a5e3a8c-5c73-4c4b-9e7c-1c3a5c1f2b11",
            "0b9c6f5e-36a4-4c3e-8f63-2d2f4e1a9b77",
            "key",
            reason,
            "generation",
        )
