"""The reference web client as a demanding person uses it (real Chromium, real stack):
a running design followed while another is looked at and after a reload, the keyboard
focus when a job ends by itself, account names and reset dates, phones, a catalog that
failed to load, double clicks and markup in server text."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from playwright.async_api import Page, Route, expect

from edge_api.settings import DEV_JWT_SECRET
from generation.persistence.models import GenerationJob
from kit.db import session_scope
from testkit.stack import Stack
from tests.browser.conftest import VIEWPORT, Visitor, no_designs_left
from tests.e2e.harness import insert_failed_jobs, jpeg_bytes, make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DONE = "Done: your design is ready."
WORKING = ("Starting your design…", "Working on your design…")
SETTLE_MS = 20_000


async def _submit_imagine(page: Page, prompt: str) -> None:
    await page.select_option("#mode", "imagine")
    await page.fill("#prompt", prompt)
    await page.click("#submit")


def _unavailable_once() -> Callable[[Route], Awaitable[None]]:
    """A route handler answering the first GET it sees 503 (a restart), then passing."""
    failed = False

    async def handle(route: Route) -> None:
        nonlocal failed
        if failed or route.request.method != "GET":
            await route.continue_()
            return
        failed = True
        await route.fulfill(
            status=503,
            content_type="application/json",
            body='{"error": {"code": "INTERNAL_ERROR", "message": "restarting"}}',
        )

    return handle


async def _prediction_of(stack: Stack, job_id: str) -> str:
    for _ in range(100):
        async with session_scope(stack.ctx.sessions) as session:
            job = await session.get(GenerationJob, uuid.UUID(job_id))
        if job is not None and job.prediction_id is not None:
            return job.prediction_id
        await asyncio.sleep(0.1)
    raise AssertionError("no prediction")


async def test_a_running_job_keeps_being_followed_after_another_is_opened(
    visitor: Visitor, stack: Stack
) -> None:
    """A person starts a design, then opens an older one from the history to look at it
    while waiting. When the running design ends, its history row and the usage line
    must say so; the page stopped following it, so its row says "Working…" for ever."""
    await insert_failed_jobs(stack, visitor.id, 1)
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    await _submit_imagine(page, "A reading nook under a window")
    await expect(page.locator("#cancel")).to_be_visible(timeout=SETTLE_MS)
    running = await page.get_attribute("#job", "data-job-id")
    assert running
    row = page.locator(f"#history li[data-job-id='{running}']")
    await expect(row).to_be_visible()

    # Look at the old (failed) design meanwhile.
    old = page.locator("#history li").nth(1)
    await old.get_by_role("button").click()
    await expect(page.locator("#job-status")).to_have_text("This design failed.")

    await stack.control("advance", await _prediction_of(stack, running), "succeeded")
    await expect(row).to_contain_text(DONE, timeout=SETTLE_MS)
    await expect(page.locator("#usage")).to_contain_text("designs left")
    await visitor.shot("followed-in-the-background")
    await expect(page.locator("#job-status")).to_have_text("This design failed.")  # still


async def test_a_reload_mid_job_brings_the_running_job_back(visitor: Visitor, stack: Stack) -> None:
    """Reloading the tab while a design runs (or coming back to it) loses the job panel:
    no live status, no Cancel. Sending a new one is refused with "Wait for it to finish,
    or cancel it first" while no Cancel button is anywhere on screen."""
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    await _submit_imagine(page, "A reading nook under a window")
    await expect(page.locator("#cancel")).to_be_visible(timeout=SETTLE_MS)

    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await _submit_imagine(page, "A reading nook under a window")
    await expect(page.locator("#form-error")).to_contain_text("cancel it first")
    await visitor.shot("409-no-cancel")
    await expect(page.locator("#cancel")).to_be_visible(timeout=3_000)


class _RawUtf8(json.JSONEncoder):
    """JSON as Supabase's GoTrue (Go's encoding/json) writes it: non-ASCII as UTF-8 bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ensure_ascii"] = False
        super().__init__(*args, **kwargs)


async def test_a_non_ascii_account_name_is_shown_as_written(visitor: Visitor) -> None:
    """accountOf() decodes the JWT payload with atob() (one char per byte) and never as
    UTF-8: "zoë" reads "zoÃ«" in the header and in the switch-account question."""
    page = visitor.page
    email = "zoë.müller@exemple.fr"
    now = int(datetime.now(UTC).timestamp())
    claims = {
        "sub": str(visitor.id),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 3600,
        "email": email,
    }
    token = jwt.encode(claims, DEV_JWT_SECRET, algorithm="HS256", json_encoder=_RawUtf8)
    await page.goto(f"{visitor.edge.url}/#token={token}")
    await page.wait_for_selector("body[data-ready='true']")
    await visitor.shot("mojibake")
    await expect(page.locator("#account")).to_have_text(f"Signed in as {email}")


async def test_a_long_account_email_fits_a_phone(visitor: Visitor) -> None:
    """The header's "Signed in as <e-mail>" never wraps inside the address: a long one
    pushes the page sideways at 375 px."""
    page = visitor.page
    email = "alexandra.konstantinopoulou.whitfield@interiordesignstudio.example.com"
    await page.goto(f"{visitor.edge.url}/#token={make_token(visitor.id, email=email)}")
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#account")).to_have_text(f"Signed in as {email}")
    await visitor.shot("long-email")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORT["width"], f"the page is {width} px wide"


async def test_history_open_buttons_have_distinct_names(visitor: Visitor, stack: Stack) -> None:
    """Each row's button is named only "Open the design of <date, minute>": designs made
    the same minute (a retry, a quick refine) get identical names for a screen reader,
    and the name hides the mode and status the row shows."""
    await insert_failed_jobs(stack, visitor.id, 3, step=timedelta(seconds=5))
    await visitor.open()
    page = visitor.page
    await expect(page.locator("#history li")).to_have_count(3)
    names = await page.locator("#history li button").evaluate_all(
        "(buttons) => buttons.map((b) => b.getAttribute('aria-label'))"
    )
    assert len(set(names)) == len(names), names


async def test_the_two_reset_dates_agree_west_of_utc(visitor: Visitor) -> None:
    """The header says "resets <periodEnd in local time>" while the LIMIT_EXCEEDED
    message says the same instant as its UTC date: in New York one page shows two
    different days for when designs come back."""
    page = visitor.page
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    await visitor.open()
    await expect(page.locator("#usage")).to_contain_text("designs left")
    period_end = await page.evaluate(
        """async () => (await (await import("/app/api.js")).api("/usage")).periodEnd"""
    )

    await page.route(re.compile(r".*/api/v1/generations$"), no_designs_left(period_end))
    await _submit_imagine(page, "A sunny kitchen")
    await expect(page.locator("#form-error")).to_contain_text("More designs on")
    await visitor.shot("two-dates")
    header = await page.text_content("#usage") or ""
    utc_day = await page.evaluate(
        "(end) => new Date(end).toLocaleDateString(undefined, { timeZone: 'UTC' })", period_end
    )
    assert f"resets {utc_day}" in header, (header, await page.text_content("#form-error"))


async def test_a_catalog_that_did_not_load_leaves_no_dead_button(visitor: Visitor) -> None:
    """The catalog read fails once (a restart's 503): the page says "Please try again"
    but offers no way to, and leaves an empty form whose Generate button is live: a
    click tries a real form submission, which the CSP (form-action 'none') refuses
    silently."""
    page = visitor.page
    await page.route(re.compile(r".*/api/v1/catalog$"), _unavailable_once())
    await visitor.open()
    await expect(page.locator("#page-error")).to_contain_text("Trying again")
    await expect(page.locator("#submit")).to_be_disabled()  # no dead form to send
    await visitor.shot("catalog-retrying")
    await expect(page.locator("#page-error")).to_be_hidden(timeout=10_000)
    await expect(page.locator("#submit")).to_be_enabled()
    assert await page.locator("#mode option").count() > 0
    await _submit_imagine(page, "A sunny kitchen")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    assert not [e for e in visitor.errors if "form" in e], visitor.errors


async def test_a_double_click_sends_one_submission(visitor: Visitor) -> None:
    """a double click (or Enter pressed twice) on Generate is one POST."""
    await visitor.open()
    page = visitor.page
    posts: list[str] = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.headers.get("idempotency-key", ""))
            if r.method == "POST" and r.url.endswith("/api/v1/generations")
            else None
        ),
    )
    await page.select_option("#mode", "redesign")
    await page.set_input_files(
        "#input1",
        {"name": "salle à manger — 客厅.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes()},
    )
    await page.fill("#prompt", "Salle à manger lumineuse, 客厅, ✨ chêne clair")
    await page.dblclick("#submit")
    await page.keyboard.press("Enter")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    assert len(posts) == 1, posts


async def test_server_text_is_never_markup(visitor: Visitor, stack: Stack) -> None:
    """catalog labels and a job's error message carrying HTML show as text."""
    page = visitor.page
    attack = '<img src=x onerror="window.pwned=1">'

    async def catalog(route: Route) -> None:
        response = await route.fetch()
        body: dict[str, Any] = await response.json()
        body["styles"][0]["label"] = attack + "Coastal"
        body["roomTypes"][0]["label"] = attack + "Kitchen"
        await route.fulfill(response=response, json=body)

    await page.route(re.compile(r".*/api/v1/catalog$"), catalog)
    await insert_failed_jobs(stack, visitor.id, 1)
    await visitor.open()
    job_id = await page.get_attribute("#history li", "data-job-id")

    async def job(route: Route) -> None:
        response = await route.fetch()
        body: dict[str, Any] = await response.json()
        body["error"] = {"code": "SOME_FUTURE_CODE", "message": attack + "bad"}
        await route.fulfill(response=response, json=body)

    await page.route(re.compile(rf".*/api/v1/generations/{job_id}$"), job)
    await page.locator("#history li button").click()
    await expect(page.locator("#job-error")).to_have_text(attack + "bad")
    await expect(page.locator("#style option").nth(1)).to_have_text(attack + "Coastal")
    assert await page.evaluate("window.pwned === undefined")
    assert await page.locator("main img[src='x']").count() == 0


async def test_the_focus_survives_a_job_ending_on_its_own(visitor: Visitor, stack: Stack) -> None:
    """A keyboard user submits (the focus goes to the panel's heading), tabs to Cancel and
    waits there. The job ends by itself: render() hides Cancel under the focus, which
    drops to <body>; the next Tab starts again at the top of the page."""
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    await _submit_imagine(page, "A reading nook under a window")
    await expect(page.locator("#cancel")).to_be_visible(timeout=SETTLE_MS)
    await expect(page.locator("#job-heading")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.locator("#cancel")).to_be_focused()
    running = await page.get_attribute("#job", "data-job-id")
    assert running
    await stack.control("advance", await _prediction_of(stack, running), "succeeded")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await visitor.shot("focus-lost")
    focused = await page.evaluate("document.activeElement.id || document.activeElement.tagName")
    assert focused != "BODY", "the keyboard focus fell to <body> when Cancel went away"


async def test_the_prompt_hint_counts_and_says_when_a_paste_was_cut(visitor: Visitor) -> None:
    """The browser cuts a paste past the prompt's limit without a word: the hint counts
    what is used and says when the limit cut it."""
    await visitor.open()
    page = visitor.page
    await page.select_option("#mode", "imagine")
    await expect(page.locator("#prompt-hint")).to_have_text("Up to 1000 characters.")
    await page.fill("#prompt", "A sunny kitchen")
    await expect(page.locator("#prompt-hint")).to_have_text("15 of 1000 characters.")
    await page.locator("#prompt").focus()
    await page.keyboard.insert_text("x" * 1200)  # as a paste: cut at the limit
    await expect(page.locator("#prompt-hint")).to_have_text(
        "1000 of 1000 characters: the limit (anything longer was cut)."
    )
    await visitor.shot("prompt-cut")


async def test_a_history_that_did_not_load_can_be_asked_for_again(
    visitor: Visitor, stack: Stack
) -> None:
    """The first page failed (a restart's 503): "Load more" stayed hidden, and only a
    reload brought the list; the page offers to try again."""
    await insert_failed_jobs(stack, visitor.id, 1)
    page = visitor.page
    await page.route(re.compile(r".*/api/v1/generations\?.*"), _unavailable_once())
    await visitor.open()
    await expect(page.locator("#history-error")).to_be_visible()
    await expect(page.locator("#more")).to_have_text("Try again")
    await visitor.shot("history-try-again")
    await page.click("#more")
    await expect(page.locator("#history li")).to_have_count(1)
    await expect(page.locator("#history-error")).to_be_hidden()
    await expect(page.locator("#more")).to_be_hidden()
    visitor.errors.clear()  # the 503 the browser logged
