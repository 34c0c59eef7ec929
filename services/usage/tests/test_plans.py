"""SetPlan: immediate, keeps the month's debits, refuses unknown prices."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable

import pytest

from usage import cli


async def test_an_upgrade_mid_month_keeps_used_and_frees_the_difference(
    usage, new_id: Callable[[], str], plans
) -> None:
    owner = new_id()
    for _ in range(3):
        await usage.debit(owner, new_id())

    upgraded = await usage.set_plan(owner, "price_basic")

    basic = plans["price_basic"].monthly_generations
    assert (upgraded.plan, upgraded.used, upgraded.remaining) == ("basic", 3, basic - 3)
    assert (await usage.quota(owner)).remaining == basic - 3


async def test_back_to_free_and_a_downgrade_below_used_leaves_nothing(
    usage, new_id: Callable[[], str], plans
) -> None:
    owner, free = new_id(), plans["free"].monthly_generations
    await usage.set_plan(owner, "price_basic")
    for _ in range(free + 1):
        await usage.debit(owner, new_id())

    downgraded = await usage.set_plan(owner, "")

    assert (downgraded.plan, downgraded.price_id) == ("free", "")
    assert (downgraded.used, downgraded.remaining) == (free + 1, 0)
    assert (await usage.error_of(usage.debit(owner, new_id()))).code == "LIMIT_EXCEEDED"


async def test_free_by_name_is_the_free_plan(usage, new_id: Callable[[], str]) -> None:
    owner = new_id()
    await usage.set_plan(owner, "price_basic")

    quota = await usage.set_plan(owner, "free")

    assert (quota.plan, quota.price_id) == ("free", "")


@pytest.mark.parametrize("price_id", ["price_unknown", "x" * 300])
async def test_an_unknown_price_is_refused_and_changes_nothing(
    usage, new_id: Callable[[], str], price_id: str
) -> None:
    owner = new_id()
    await usage.set_plan(owner, "price_basic")

    error = await usage.error_of(usage.set_plan(owner, price_id))

    assert (error.code, error.reason) == ("VALIDATION_ERROR", "VALIDATION_ERROR")
    assert (await usage.quota(owner)).plan == "basic"


async def test_the_cli_sets_a_plan(usage, new_id: Callable[[], str]) -> None:
    owner, out = new_id(), io.StringIO()

    code = await asyncio.to_thread(
        cli.main, ["--target", usage.target, "set-plan", owner, "price_basic"], out
    )

    assert code == 0
    printed = json.loads(out.getvalue())
    assert (printed["plan"], printed["priceId"], printed["used"]) == ("basic", "price_basic", 0)
    assert (await usage.quota(owner)).plan == "basic"


async def test_the_cli_reports_a_refused_plan(usage, new_id: Callable[[], str]) -> None:
    out, err = io.StringIO(), io.StringIO()

    code = await asyncio.to_thread(
        cli.main, ["--target", usage.target, "set-plan", new_id(), "price_unknown"], out, err
    )

    assert (code, out.getvalue()) == (2, "")
    assert json.loads(err.getvalue())["error"]["code"] == "VALIDATION_ERROR"


async def test_an_empty_target_variable_means_the_default_target(
    usage, new_id: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``USAGE_GRPC_TARGET=`` in an env file is unset, as an empty OPERATOR_KEY_FILE is."""
    monkeypatch.setattr(cli, "DEFAULT_TARGET", usage.target)
    monkeypatch.setenv("USAGE_GRPC_TARGET", "")
    out, err = io.StringIO(), io.StringIO()

    code = await asyncio.to_thread(cli.main, ["set-plan", new_id(), "price_basic"], out, err)

    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue())["plan"] == "basic"


def test_an_empty_target_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--target", " ", "audit"])
    assert exited.value.code == 2
    assert "an address is needed" in capsys.readouterr().err
