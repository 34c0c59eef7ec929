"""Quota through the whole stack: the limit, the period end, plan changes."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.e2e.harness import Stack, User


async def test_nothing_left_is_402_with_the_period_end(stack: Stack, user: User) -> None:
    await stack.set_plan(user.id, "price_test_one")
    usage = await user.usage()
    assert (usage["plan"], usage["monthlyGenerations"], usage["remaining"]) == ("one", 1, 1)
    first = await user.submit("imagine", prompt="A breezy veranda")
    assert first.status_code == 202
    await user.wait_for(first.json()["id"], {"succeeded"})
    refused = await user.submit("imagine", prompt="Another breezy veranda")
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "LIMIT_EXCEEDED"
    period_end = datetime.fromisoformat(error["periodEnd"].replace("Z", "+00:00"))
    now = datetime.now(UTC)
    assert period_end > now
    assert (period_end.day, period_end.hour) == (1, 0)
    assert usage["periodEnd"] == error["periodEnd"]

    await stack.set_plan(user.id, "price_pro_monthly")  # an upgrade takes effect at once
    upgraded = await user.usage()
    assert (upgraded["plan"], upgraded["used"], upgraded["remaining"]) == ("pro", 1, 199)
    again = await user.submit("imagine", prompt="Another breezy veranda")
    assert again.status_code == 202
    await user.wait_for(again.json()["id"], {"succeeded"})


async def test_an_exhausted_quota_is_reported_before_any_image_is_decoded(
    stack: Stack, user: User
) -> None:
    """The one-in-flight rule and the quota are checked before any decode, so a user
    who may not submit costs no decoding: with nothing left, even a bad image is a 402.
    The request's own fields are still checked first (400)."""
    await stack.set_plan(user.id, "price_test_one")
    first = await user.submit("imagine", prompt="A sunlit attic")
    assert first.status_code == 202
    await user.wait_for(first.json()["id"], {"succeeded"})

    not_an_image = await user.submit("redesign", images=[b"GIF89a" + b"\x00" * 64])
    assert not_an_image.status_code == 402
    assert not_an_image.json()["error"]["code"] == "LIMIT_EXCEEDED"
    bad_field = await user.submit("redesign", images=[b"GIF89a" + b"\x00" * 64], style="nope")
    assert bad_field.status_code == 400
    assert (await user.usage())["used"] == 1
