"""The reference web client in a real Chromium, against the real stack with the emulator."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Dialog, Page, Request, Route, expect

from edge_api.openapi import ERROR_CODES
from generation.persistence.models import GenerationJob
from kit.db import session_scope
from testkit.envoy import Envoy
from testkit.plugin import S3Endpoint
from testkit.stack import Stack
from tests.browser.conftest import VIEWPORT, Visitor, no_designs_left
from tests.e2e.harness import insert_failed_jobs, jpeg_bytes, make_token, signed_base_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DONE = "Done: your design is ready."
SETTLE_MS = 20_000


async def _loaded(page: Page, selector: str) -> None:
    """The image really loaded (decoded with a size), not just an <img> in the page."""
    image = page.locator(selector)
    await expect(image).to_be_visible()
    await page.wait_for_function(
        "(el) => el.complete && el.naturalWidth > 0", arg=await image.element_handle()
    )


async def _submit_imagine(visitor: Visitor, prompt: str) -> None:
    page = visitor.page
    await page.select_option("#mode", "imagine")
    await page.fill("#prompt", prompt)
    await page.click("#submit")


async def test_imagine_is_followed_live_until_it_succeeds(visitor: Visitor) -> None:
    await visitor.open()
    page = visitor.page
    assert "token" not in page.url  # taken out of the address bar
    await expect(page.locator("#refine")).to_be_hidden()  # no refine until one is asked for
    await expect(page.locator("#usage")).to_contain_text("designs left")
    before = await page.text_content("#usage")
    await visitor.shot("form")

    stored = await page.evaluate("[sessionStorage.length, localStorage.length]")
    assert stored == [1, 0]  # the tab's sessionStorage only

    async with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/api/v1/generations")
    ) as submitted:
        await _submit_imagine(visitor, "A bright japandi living room with oak floors")
    key = (await submitted.value).headers.get("idempotency-key", "")
    assert len(key) >= 32  # a fresh random key per submission
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await _loaded(page, "#after img")
    await expect(page.locator("#job-source")).to_be_hidden()  # not a refinement
    await expect(page.locator("#delete")).to_be_visible()
    await expect(page.locator("#cancel")).to_be_hidden()
    await expect(page.locator("#usage")).not_to_have_text(before or "")  # refreshed
    await expect(page.locator("#history li")).to_have_count(1)
    await visitor.shot("succeeded")
    # The page followed the job through its event stream, with the token in the query.
    events = [p for m, p in visitor.edge.recorder.seen if p.endswith("/events") and m == "GET"]
    assert events


async def test_redesign_shows_the_photo_before_and_the_result_after(visitor: Visitor) -> None:
    await visitor.open()
    page = visitor.page
    await page.select_option("#mode", "redesign")
    await page.select_option("#style", index=1)
    await page.set_input_files(
        "#input1",
        {"name": "room.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(320, 240)},
    )
    await visitor.shot("photo-chosen")
    await page.click("#submit")

    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await _loaded(page, "#before-img")
    assert (await page.get_attribute("#before-img", "src") or "").startswith("blob:")
    await _loaded(page, "#after img")
    await visitor.shot("before-after")


async def test_compose_takes_two_photos(visitor: Visitor) -> None:
    await visitor.open()
    page = visitor.page
    await page.select_option("#mode", "compose")
    await expect(page.locator("#input2")).to_be_visible()
    await page.set_input_files(
        "#input1", {"name": "room.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes()}
    )
    await page.click("#submit")  # the reference photo is missing: said, not sent
    await expect(page.locator("#form-error")).to_have_text(
        "Please choose a file for “Reference photo”."
    )
    await expect(page.locator("#input2")).to_be_focused()
    await page.set_input_files(
        "#input2",
        {"name": "ref.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(color=(20, 90, 160))},
    )
    await page.click("#submit")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await _loaded(page, "#after img")
    await visitor.shot("composed")
    assert [p for m, p in visitor.edge.recorder.seen if m == "POST"] == ["/api/v1/generations"]


async def test_a_running_job_can_be_canceled(visitor: Visitor, stack: Stack) -> None:
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    await _submit_imagine(visitor, "A reading nook under a window")
    await expect(page.locator("#cancel")).to_be_visible(timeout=SETTLE_MS)
    await visitor.shot("running")

    await page.click("#cancel")
    await expect(page.locator("#job-status")).to_have_text(
        "This design was canceled.", timeout=SETTLE_MS
    )
    await expect(page.locator("#cancel")).to_be_hidden()
    await expect(page.locator("#job-error")).to_be_hidden()  # said once, not twice
    await expect(page.locator("#delete")).to_be_hidden()  # nothing to delete
    await expect(page.locator("#history li")).to_contain_text("This design was canceled.")
    await visitor.shot("canceled")


_DOWN = '{"error": {"code": "UPSTREAM_ERROR", "message": "down"}}'


async def _prediction_of(stack: Stack, job_id: str) -> str:
    async with session_scope(stack.ctx.sessions) as session:
        job = await session.get(GenerationJob, uuid.UUID(job_id))
    assert job is not None
    assert job.prediction_id is not None
    return job.prediction_id


async def test_a_stream_the_browser_gave_up_on_is_followed_again(
    visitor: Visitor, stack: Stack
) -> None:
    """An answer that is not a stream (a restarting edge's 503) closes an EventSource for
    good; the page reads the job and follows it again, pausing longer each time."""
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    refused = 0

    async def refuse_twice(route: Route) -> None:
        nonlocal refused
        if refused < 2:
            refused += 1
            await route.fulfill(status=503, content_type="application/json", body=_DOWN)
        else:
            await route.continue_()

    await page.route(re.compile(r".*/events\?.*"), refuse_twice)
    await _submit_imagine(visitor, "A quiet loft under a skylight")
    await expect(page.locator("#cancel")).to_be_visible(timeout=SETTLE_MS)
    job_id = await page.get_attribute("#job", "data-job-id")
    assert job_id
    for _ in range(100):  # both refusals answered (the second after a pause of 1 s)
        if refused == 2:
            break
        await asyncio.sleep(0.1)
    assert refused == 2
    # The page follows the job again (2 s later): the stream begins with its state.
    await stack.control("advance", await _prediction_of(stack, job_id), "succeeded")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await expect(page.locator("#job-error")).to_be_hidden()
    # The keyboard focus went to the panel with the submission, and stays there.
    assert await page.evaluate("document.activeElement.id") == "job-heading"
    await visitor.shot("followed-again")


async def test_a_submission_sent_again_after_no_answer_keeps_its_key(visitor: Visitor) -> None:
    """The first answer is lost (a 503 after the job may have been made): sending the same
    form again reuses its key, so the server can answer with that job instead of a
    second one; a changed form is a new submission with a new key."""
    await visitor.open()
    page = visitor.page
    keys: list[str] = []

    async def lose_the_first_answer(route: Route) -> None:
        if route.request.method != "POST":
            await route.continue_()
            return
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:
            await route.fulfill(
                status=429,
                content_type="application/json",
                headers={"Retry-After": "2"},
                body='{"error": {"code": "TOO_MANY_REQUESTS", "message": "later"}}',
            )
        else:
            await route.continue_()

    await page.route(re.compile(r".*/api/v1/generations$"), lose_the_first_answer)
    await _submit_imagine(visitor, "A sunny kitchen with a long table")
    await expect(page.locator("#form-error")).to_contain_text("try again in 2 s")
    await expect(page.locator("#form-error")).to_be_focused()  # not lost with the button
    await expect(page.locator("#submit")).to_be_disabled()  # as long as the server asked
    await expect(page.locator("#submit")).to_be_enabled(timeout=5_000)
    # The wait is over: the message no longer says to wait.
    await expect(page.locator("#form-error")).to_have_text(
        "Too many uploads at once. Wait a few seconds and try again."
    )
    await page.click("#submit")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await page.fill("#prompt", "A sunny kitchen with a round table")
    await page.click("#submit")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    assert len(keys) == 3
    assert keys[0] == keys[1] != keys[2]


async def test_deleting_removes_the_pictures_and_keeps_the_job(visitor: Visitor) -> None:
    await visitor.open()
    page = visitor.page
    await _submit_imagine(visitor, "A calm bedroom in sage green")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await expect(page.locator("#history li img")).to_have_count(1)
    job_id = await page.get_attribute("#history li", "data-job-id")

    # For good, and the button sits under the pictures: asked first. A "no" keeps them.
    questions: list[str] = []

    async def answer(dialog: Dialog, yes: bool) -> None:
        questions.append(dialog.message)
        await (dialog.accept() if yes else dialog.dismiss())

    page.once("dialog", lambda dialog: answer(dialog, yes=False))
    await page.click("#delete")
    await expect(page.locator("#after img")).to_have_count(1)
    assert ("DELETE", f"/api/v1/generations/{job_id}") not in visitor.edge.recorder.seen
    page.once("dialog", lambda dialog: answer(dialog, yes=True))
    await page.click("#delete")
    assert questions == ["Delete the pictures of this design? This cannot be undone."] * 2
    gone = "The pictures of this design were deleted."
    await expect(page.locator("#job-status")).to_have_text(gone)
    await expect(page.locator("#after img")).to_have_count(0)
    await expect(page.locator("#delete")).to_be_hidden()
    await expect(page.locator("#history li")).to_contain_text(gone)
    await expect(page.locator("#history li img")).to_have_count(0)
    await visitor.shot("deleted")
    assert ("DELETE", f"/api/v1/generations/{job_id}") in visitor.edge.recorder.seen
    await page.reload()  # the server says so too (the token survives in sessionStorage)
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#history li")).to_contain_text(gone)


async def test_history_pages_with_load_more(visitor: Visitor, stack: Stack) -> None:
    await insert_failed_jobs(stack, visitor.id, 13)
    await visitor.open()
    page = visitor.page
    rows = page.locator("#history li")
    await expect(rows).to_have_count(10)
    await expect(page.locator("#more")).to_be_visible()
    await visitor.shot("first-page")

    await page.focus("#more")
    await page.keyboard.press("Enter")
    await expect(rows).to_have_count(13)
    await expect(page.locator("#more")).to_be_hidden()
    await expect(rows.nth(10).get_by_role("button")).to_be_focused()  # focus not lost
    await visitor.shot("all-pages")

    await rows.first.get_by_role("button").click()
    await expect(page.locator("#job-status")).to_have_text("This design failed.")

    # A new job joins the list first and takes its place there as it ends: the pages
    # already loaded stay (the list used to be reloaded from its first page).
    await _submit_imagine(visitor, "A hallway with a long runner")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await expect(rows).to_have_count(14)
    await expect(rows.first).to_contain_text(DONE)
    await expect(page.locator("#more")).to_be_hidden()
    await visitor.shot("new-job-first")


async def test_an_oversize_or_foreign_file_is_refused_before_upload(
    visitor: Visitor, stack: Stack
) -> None:
    await visitor.open()
    page = visitor.page
    limit = stack.generation.context.config.uploads.max_bytes
    assert limit == 10 * 1024 * 1024  # the sentence below is written for it
    await page.select_option("#mode", "redesign")
    await expect(page.locator("#upload-hint")).to_have_text(
        "Photos: JPEG, PNG, WebP, up to 10 MB each."
    )
    image = jpeg_bytes()
    oversize = image + b"\0" * (limit + 10_000 - len(image))
    await page.set_input_files(
        "#input1", {"name": "big.jpg", "mimeType": "image/jpeg", "buffer": oversize}
    )
    await page.click("#submit")
    await expect(page.locator("#form-error")).to_contain_text("is 10.01 MB; the limit is 10 MB.")
    await expect(page.locator("#input1")).to_be_focused()
    await visitor.shot("too-large")

    await page.set_input_files(
        "#input1", {"name": "anim.gif", "mimeType": "image/gif", "buffer": b"GIF89a" + b"\0" * 64}
    )
    await page.click("#submit")
    await expect(page.locator("#form-error")).to_contain_text("must be one of: JPEG")
    await visitor.shot("wrong-type")
    assert [p for m, p in visitor.edge.recorder.seen if m == "POST"] == []


async def test_a_refused_prompt_is_a_sentence_and_the_form_works_by_keyboard(
    visitor: Visitor,
) -> None:
    await visitor.open()
    page = visitor.page
    await page.select_option("#mode", "imagine")
    await page.focus("#prompt")
    await page.keyboard.type("Card 4111 1111 1111 1111 on the table")
    for _ in range(10):  # Tab through the file inputs' hidden fields to the button
        if await page.evaluate("document.activeElement.id") == "submit":
            break
        await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "submit"
    await page.keyboard.press("Enter")

    error = page.locator("#form-error")
    await expect(error).to_have_text(
        "Please check the form. This prompt can't be used. "
        "Please describe the room and style you want."
    )
    await expect(error).to_have_attribute("role", "alert")
    await visitor.shot("refused-prompt")
    assert ("POST", "/api/v1/generations") in visitor.edge.recorder.seen


async def test_a_failed_job_says_why_in_a_sentence(visitor: Visitor, stack: Stack) -> None:
    await stack.control("set_faults", fail_next=1)
    await visitor.open()
    page = visitor.page
    await _submit_imagine(visitor, "A wine cellar with stone walls")
    await expect(page.locator("#job-status")).to_have_text("This design failed.", timeout=SETTLE_MS)
    await expect(page.locator("#job-error")).to_have_text(
        "The image service could not make this design. Please try again."
    )
    # Refunded: the line settles to the full allowance without a reload.
    await expect(page.locator("#usage")).to_contain_text("10 of 10", timeout=SETTLE_MS)
    await visitor.shot("failed")


async def test_every_api_error_code_has_its_own_sentence(visitor: Visitor) -> None:
    """The page's table covers the OpenAPI ErrorDetail enum; unknown codes show the server's."""
    await visitor.open()
    sentences = await visitor.page.evaluate(
        """async (codes) => {
            const { sentence } = await import("/app/messages.js");
            return codes.map((code) => sentence(code, "SERVER-MESSAGE"));
        }""",
        [*ERROR_CODES, "PROVIDER_FAILED", "TIMED_OUT", "SOME_FUTURE_CODE"],
    )
    *known, unknown = sentences
    for code, text in zip(ERROR_CODES, known[: len(ERROR_CODES)], strict=True):
        assert text != "SERVER-MESSAGE", f"{code} has no sentence"
        assert text.endswith((".", "SERVER-MESSAGE")), text
    # Only validation errors carry the server's detail (which field, the prompt policy).
    assert [t for t in known if "SERVER-MESSAGE" in t] == ["Please check the form. SERVER-MESSAGE"]
    assert unknown == "SERVER-MESSAGE"


async def test_without_a_token_the_page_says_how_to_sign_in(visitor: Visitor) -> None:
    page = visitor.page
    await page.goto(visitor.edge.url + "/")
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#usage")).to_have_text("Sign in to see your designs left.")
    await expect(page.locator("#history-error")).to_be_hidden()  # said once, by the notice
    await expect(page.locator("#mode option")).not_to_have_count(0)  # the catalog is public
    await visitor.shot("signed-out")


async def test_a_link_with_another_accounts_token_asks_before_switching(
    visitor: Visitor,
) -> None:
    """A link can carry anyone's token: the page says who is signed in and asks before a
    link signs the tab in as someone else."""
    await visitor.open()
    page = visitor.page
    await expect(page.locator("#account")).to_have_text(f"Signed in as {visitor.id}")
    someone = uuid.uuid4()
    questions: list[str] = []

    async def refuse(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.dismiss()

    page.once("dialog", refuse)
    await page.goto(f"{visitor.edge.url}/?link=1#token={make_token(someone)}")
    await page.wait_for_selector("body[data-ready='true']")
    assert len(questions) == 1
    assert f"Sign in as {someone} instead of {visitor.id}?" == questions[0]
    assert "token" not in page.url
    await expect(page.locator("#account")).to_have_text(f"Signed in as {visitor.id}")

    async def agree(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", agree)
    await page.goto(f"{visitor.edge.url}/#token={make_token(someone)}")
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#account")).to_have_text(f"Signed in as {someone}")
    await visitor.shot("switched")


async def test_the_page_works_through_envoy(visitor: Visitor, envoy: Envoy) -> None:
    """As `make run` serves it: page, modules, API, event stream and renders via Envoy."""
    await visitor.open(envoy.url)
    page = visitor.page
    await _submit_imagine(visitor, "A sunlit attic studio with skylights")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await _loaded(page, "#after img")
    src = await page.get_attribute("#after img", "src") or ""
    assert src.startswith(f"{envoy.url}/public/renders/")
    await visitor.shot("via-envoy")
    assert ("GET", "/app/main.js") in visitor.edge.recorder.seen  # the edge served it


async def test_the_policy_stops_inline_script_in_the_browser(visitor: Visitor) -> None:
    """Even if something did put markup in the page, the CSP would refuse to run it."""
    await visitor.open()
    ran = await visitor.page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.append(script);
            return window.injected === true;
        }"""
    )
    assert ran is False
    refusals = [e for e in visitor.errors if "Content Security Policy" in e]
    assert refusals, visitor.errors
    visitor.errors.clear()  # the refusal above is the expected one


async def _redesign(visitor: Visitor) -> None:
    page = visitor.page
    await page.select_option("#mode", "redesign")
    await page.set_input_files(
        "#input1",
        {"name": "room.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(320, 240)},
    )
    await page.click("#submit")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)


async def test_a_job_opened_from_history_shows_its_stored_before_and_thumbnail(
    visitor: Visitor, s3_server: S3Endpoint
) -> None:
    """The "before" is the job's own signed input, read again on open (links expire)."""
    await visitor.open()
    page = visitor.page
    await _redesign(visitor)
    thumb = page.locator("#history li img")
    await expect(thumb).to_have_attribute("src", re.compile(r"/public/renders/.+/0\.thumb\.jpg$"))
    await _loaded(page, "#history li img")

    await page.reload()  # the photo chosen in this tab is gone: only the API has it now
    await page.wait_for_selector("body[data-ready='true']")
    job_id = await page.get_attribute("#history li", "data-job-id")
    visitor.edge.recorder.seen.clear()
    await page.locator("#history li button").click()
    # The CSP let the links' origin through: S3_SIGNED_BASE_URL's, not the endpoint's.
    await _loaded(page, "#before-img")
    src = await page.get_attribute("#before-img", "src") or ""
    assert src.startswith(f"{signed_base_url(s3_server)}/"), src
    assert ("GET", f"/api/v1/generations/{job_id}") in visitor.edge.recorder.seen
    await _loaded(page, "#after img")
    await visitor.shot("opened-from-history")


async def test_the_result_keeps_its_shape_while_it_loads(visitor: Visitor) -> None:
    """width/height from the API reserve the picture's box: nothing jumps when it arrives."""
    page = visitor.page
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await page.route(re.compile(r"/public/renders/"), hold)
    await visitor.open()
    await _submit_imagine(visitor, "A music room with a grand piano")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    image = page.locator("#after img")
    assert await image.evaluate("(el) => el.naturalWidth") == 0  # still held back
    width = int(await image.get_attribute("width") or 0)
    height = int(await image.get_attribute("height") or 0)
    assert width > 0
    assert height > 0
    box = await image.bounding_box()
    assert box is not None
    assert abs(box["height"] - box["width"] * height / width) <= 1, box

    release.set()
    await _loaded(page, "#after img")
    natural = await image.evaluate("(el) => [el.naturalWidth, el.naturalHeight]")
    loaded = await image.bounding_box()
    assert loaded is not None
    assert abs(loaded["height"] - box["height"]) <= 1  # no jump
    # The reserved shape is the picture's own (a thumbnail has the same proportions).
    assert abs(natural[1] / natural[0] - height / width) < 0.01, (natural, width, height)
    await page.unroute(re.compile(r"/public/renders/"))
    await visitor.shot("sized-result")


async def test_pictures_fall_back_and_refine_needs_a_server_that_knows_it(
    visitor: Visitor,
) -> None:
    """Old renders (no thumbnail or size) still show; Refine only with sourceGenerationId."""
    await visitor.open()
    checks = await visitor.page.evaluate(
        """async () => {
            const { canRefine, variantSrcset } = await import("/app/job.js");
            const { HistoryView } = await import("/app/history.js");
            const job = (settings, status, variant) => ({
                id: "j", status, settings, variants: variant ? [variant] : [],
                createdAt: "2026-01-01T00:00:00Z", inputs: [],
            });
            const refinable = { mode: "redesign", sourceGenerationId: null };
            const old = { idx: 0, url: "/u.jpg", thumbnailUrl: null, width: null, height: null };
            const row = new HistoryView(() => {}).row(job({ mode: "redesign" }, "succeeded", old));
            return {
                fallback: row.querySelector("img").getAttribute("src"),
                refineOld: canRefine(job({ mode: "redesign" }, "succeeded")),
                refineNew: canRefine(job(refinable, "succeeded")),
                refineFailed: canRefine(job(refinable, "failed")),
                srcset: variantSrcset(
                    { idx: 0, url: "/u.jpg", thumbnailUrl: "/t.jpg", width: 1024, height: 768 }),
                srcsetOld: variantSrcset(old),
                srcsetSmall: variantSrcset(
                    { idx: 0, url: "/u.jpg", thumbnailUrl: "/t.jpg", width: 400, height: 300 }),
            };
        }"""
    )
    assert checks == {
        "fallback": "/u.jpg",
        "refineOld": False,
        "refineNew": True,
        "refineFailed": False,
        "srcset": "/t.jpg 512w, /u.jpg 1024w",
        "srcsetOld": "",
        "srcsetSmall": "",
    }


async def _read_job(page: Page, job_id: str) -> dict[str, Any]:
    """The job as the API answers it now, read with the page's own token."""
    job: dict[str, Any] = await page.evaluate(
        """async (id) => {
            const { api } = await import("/app/api.js");
            return api(`/generations/${encodeURIComponent(id)}`);
        }""",
        job_id,
    )
    return job


async def _submitted(page: Page) -> tuple[str, Request]:
    """Click Generate; the id of the job the API accepted, and the request that did it."""
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/api/v1/generations")
    ) as answer:
        await page.click("#submit")
    response = await answer.value
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["id"]
    return job_id, response.request


async def _shows_done(page: Page, job_id: str) -> None:
    """The panel shows this job (not the previous one), succeeded."""
    await expect(page.locator("#job")).to_have_attribute("data-job-id", job_id)
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)


async def test_a_result_is_refined_with_a_new_prompt(
    visitor: Visitor, s3_server: S3Endpoint
) -> None:
    await visitor.open()
    page = visitor.page
    await _redesign(visitor)
    first_id = await page.get_attribute("#history li", "data-job-id")
    assert first_id

    await page.get_by_role("button", name="Refine result 1 with a new prompt").click()
    await expect(page.locator("#refine")).to_be_visible()
    await expect(page.locator("#new-heading")).to_have_text("Refine a design")
    await expect(page.locator("#mode")).to_have_value("redesign")
    await expect(page.locator("#input1-field")).to_be_hidden()  # the result is the photo
    await expect(page.locator("#prompt")).to_be_focused()
    await _loaded(page, "#refine-img")
    await visitor.shot("refine-asked")
    await page.click("#submit")  # a refine without a new prompt is said, not sent
    await expect(page.locator("#form-error")).to_have_text(
        "Please say in the prompt what to change."
    )

    await page.fill("#prompt", "Now make the sofa green")
    refined_id, request = await _submitted(page)
    assert request.post_data_json is not None
    assert request.post_data_json["source"] == {"generationId": first_id, "variantIdx": 0}
    assert refined_id != first_id
    await _shows_done(page, refined_id)
    await expect(page.locator("#history li")).to_have_count(2)
    refined = await _read_job(page, refined_id)
    assert refined["status"] == "succeeded"
    assert refined["settings"]["sourceGenerationId"] == first_id
    await expect(page.locator("#job-source")).to_be_visible()
    # Its "before" is its own input (the earlier result), signed by S3.
    await _loaded(page, "#before-img")
    assert (await page.get_attribute("#before-img", "src") or "").startswith(
        f"{signed_base_url(s3_server)}/"
    )
    await _loaded(page, "#after img")
    await expect(page.locator("#refine")).to_be_hidden()  # the next submission starts afresh
    await expect(page.locator("#input1-field")).to_be_visible()
    await expect(page.locator("#prompt")).to_have_value("")  # the refine's prompt went with it
    await visitor.shot("refined")


async def test_a_compose_refine_uploads_only_the_reference_photo(visitor: Visitor) -> None:
    await visitor.open()
    page = visitor.page
    await _redesign(visitor)
    first_id = await page.get_attribute("#history li", "data-job-id")
    assert first_id

    await page.get_by_role("button", name="Refine result 1 with a new prompt").click()
    await page.select_option("#mode", "compose")
    await expect(page.locator("#input1-field")).to_be_hidden()
    await expect(page.locator("#input2-field")).to_be_visible()
    await page.fill("#prompt", "Use the armchair of the reference photo")
    await page.set_input_files(
        "#input2",
        {"name": "ref.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(color=(20, 90, 160))},
    )
    refined_id, request = await _submitted(page)
    # Multipart (a file goes up); Chromium does not hand its body to the test, so the
    # job below proves the source fields went with it.
    assert request.headers["content-type"].startswith("multipart/form-data")
    await _shows_done(page, refined_id)
    refined = await _read_job(page, refined_id)
    assert refined["status"] == "succeeded"
    assert refined["settings"]["mode"] == "compose"
    assert refined["settings"]["sourceGenerationId"] == first_id
    assert len(refined["inputs"]) == 2
    await visitor.shot("compose-refined")


async def test_leaving_a_refine_brings_the_photo_back(visitor: Visitor) -> None:
    await visitor.open()
    page = visitor.page
    await _redesign(visitor)
    await page.get_by_role("button", name="Refine result 1 with a new prompt").click()
    await page.click("#refine-stop")
    await expect(page.locator("#refine")).to_be_hidden()
    await expect(page.locator("#input1")).to_be_focused()
    await page.get_by_role("button", name="Refine result 1 with a new prompt").click()
    await page.select_option("#mode", "imagine")  # no photo to stand in for
    await expect(page.locator("#refine")).to_be_hidden()
    await expect(page.locator("#new-heading")).to_have_text("New design")

    await page.get_by_role("button", name="Refine result 1 with a new prompt").click()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#delete")  # the result to refine is gone: so is the refine
    await expect(page.locator("#job-status")).to_have_text(
        "The pictures of this design were deleted."
    )
    await expect(page.locator("#refine")).to_be_hidden()
    await expect(
        page.get_by_role("button", name="Refine result 1 with a new prompt")
    ).to_have_count(0)


async def _shots_at_widths(visitor: Visitor, label: str) -> None:
    """Screenshots of this state on a phone (390 px) and a laptop (1280 px)."""
    page = visitor.page
    for width, height in ((390, 844), (1280, 900)):
        await page.set_viewport_size({"width": width, "height": height})
        path = visitor.shots / f"{visitor.name}-{label}-{width}.png"
        await page.screenshot(path=str(path), full_page=True)
        scroll = await page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"{label}: the page is {scroll} px wide at {width} px"
    await page.set_viewport_size(VIEWPORT)


async def _focus_ring(page: Page) -> str:
    """The outline of the focused element (the page's focus ring is 3px solid)."""
    ring: str = await page.evaluate(
        """() => {
            const style = getComputedStyle(document.activeElement);
            return `${style.outlineStyle} ${style.outlineWidth}`;
        }"""
    )
    return ring


async def test_a_token_link_opened_in_a_tab_already_on_the_page_signs_it_in(
    visitor: Visitor,
) -> None:
    """Opening the link in a tab already on the page changes only the fragment (no
    reload): the page signs in from it all the same, and asks before switching."""
    page = visitor.page
    await page.goto(visitor.edge.url + "/")
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#history-signin")).to_be_visible()  # not a blank card

    await page.goto(f"{visitor.edge.url}/#token={visitor.token}")  # the same document
    await expect(page.locator("#account")).to_have_text(f"Signed in as {visitor.id}")
    assert "token" not in page.url
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(page.locator("#usage")).to_contain_text("designs left")
    await expect(page.locator("#history-empty")).to_be_visible()
    await expect(page.locator("#history-signin")).to_be_hidden()

    someone = uuid.uuid4()
    questions: list[str] = []

    async def refuse(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.dismiss()

    page.once("dialog", refuse)
    await page.goto(f"{visitor.edge.url}/#token={make_token(someone)}")
    for _ in range(50):
        if questions:
            break
        await asyncio.sleep(0.1)
    assert questions == [f"Sign in as {someone} instead of {visitor.id}?"]
    assert "token" not in page.url
    await expect(page.locator("#account")).to_have_text(f"Signed in as {visitor.id}")

    async def agree(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.once("dialog", agree)
    await page.goto(f"{visitor.edge.url}/#token={make_token(someone)}")
    await expect(page.locator("#account")).to_have_text(f"Signed in as {someone}")
    await page.wait_for_selector("body[data-ready='true']")
    assert "token" not in page.url
    assert len(questions) == 2
    await _shots_at_widths(visitor, "switched-by-fragment")


async def test_an_expired_sign_in_names_no_account_and_says_why_history_is_empty(
    visitor: Visitor,
) -> None:
    page = visitor.page
    long_ago = datetime.now(UTC) - timedelta(hours=3)
    expired = make_token(
        visitor.id,
        iat=int(long_ago.timestamp()),
        exp=int((long_ago + timedelta(hours=1)).timestamp()),
    )
    await page.goto(f"{visitor.edge.url}/#token={expired}")
    await page.wait_for_selector("body[data-ready='true']")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#account")).to_be_hidden()  # no "Signed in as" above it
    await expect(page.locator("#history-signin")).to_be_visible()  # not a blank card
    await expect(page.locator("#history-signin")).to_have_text("Sign in to see your designs.")
    await expect(page.locator("#history-empty")).to_be_hidden()
    await expect(page.locator("#history-error")).to_be_hidden()
    await _shots_at_widths(visitor, "expired")

    # A fresh link for the same account, opened in this tab: signed in again in place.
    await page.goto(f"{visitor.edge.url}/#token={visitor.token}")
    await expect(page.locator("#account")).to_have_text(f"Signed in as {visitor.id}")
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(page.locator("#history-empty")).to_be_visible()
    await expect(page.locator("#history-signin")).to_be_hidden()


async def test_after_an_upstream_error_the_next_attempt_is_a_new_submission(
    visitor: Visitor,
) -> None:
    """No answer at all may hide a job: the same key goes again. A 502 UPSTREAM_ERROR
    says the job failed: sent again with its key, the server would only replay that
    failure, so the next attempt is a new submission. Each refusal keeps the focus."""
    await visitor.open()
    page = visitor.page
    keys: list[str] = []

    async def answer(route: Route) -> None:
        if route.request.method != "POST":
            await route.continue_()
            return
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:
            await route.abort("connectionreset")
        elif len(keys) == 2:
            await route.fulfill(
                status=502,
                content_type="application/json",
                body='{"error": {"code": "UPSTREAM_ERROR", "message": "down"}}',
            )
        else:
            await route.continue_()

    await page.route(re.compile(r".*/api/v1/generations$"), answer)
    await _submit_imagine(visitor, "A sunny kitchen with a long table")
    error = page.locator("#form-error")
    await expect(error).to_have_text(
        "The server could not be reached. Check your connection and try again."
    )
    await expect(error).to_be_focused()  # not dropped to <body> with the disabled button
    assert await _focus_ring(page) == "solid 3px"
    await page.click("#submit")
    await expect(error).to_have_text(
        "The image service is unavailable right now. Please try again in a moment."
    )
    await expect(error).to_be_focused()
    assert await _focus_ring(page) == "solid 3px"
    await _shots_at_widths(visitor, "upstream-error-focused")
    await page.click("#submit")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    assert len(keys) == 3
    assert keys[0] == keys[1]  # the outcome of the first was unknown
    assert keys[2] != keys[1]  # the second is known to have failed


async def test_a_refused_file_is_named_by_its_label_and_gets_the_focus(visitor: Visitor) -> None:
    """The server's message names the wire field (input1): the page says the form's own
    label and puts the focus on that file field."""
    await visitor.open()
    page = visitor.page
    await page.select_option("#mode", "redesign")
    await page.set_input_files(
        "#input1",
        {"name": "room.jpg", "mimeType": "image/jpeg", "buffer": b"not an image at all" * 20},
    )
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/api/v1/generations")
    ) as answer:
        await page.click("#submit")
    assert (await answer.value).status == 415
    error = page.locator("#form-error")
    await expect(error).to_contain_text("“Photo of the room”")
    await expect(error).not_to_contain_text("input1")
    await expect(page.locator("#input1")).to_be_focused()
    assert await _focus_ring(page) == "solid 3px"
    await _shots_at_widths(visitor, "refused-file-focused")


async def test_no_designs_left_says_when_they_come_back(visitor: Visitor) -> None:
    await visitor.open()
    page = visitor.page

    await page.route(re.compile(r".*/api/v1/generations$"), no_designs_left("2027-01-01T00:00:00Z"))
    await _submit_imagine(visitor, "A sunny kitchen with a long table")
    error = page.locator("#form-error")
    await expect(error).to_have_text(
        "You have used all your designs for this month. More designs on January 1, 2027."
    )
    await expect(error).to_be_focused()
    await _shots_at_widths(visitor, "limit-exceeded")


async def test_a_lost_connection_is_said_and_the_history_keeps_up(
    visitor: Visitor, stack: Stack
) -> None:
    """A stopped backend refuses the stream's connections: EventSource retries for ever
    without giving up, so the page says it is reconnecting until one opens. The
    job's history row follows the panel, and "Open" with the server out of reach keeps
    the panel's fresher state rather than the list's."""
    await stack.control("set_faults", hold=True)
    await visitor.open()
    page = visitor.page
    down = True

    async def events(route: Route) -> None:
        if down:
            await route.abort("connectionrefused")
        else:
            await route.continue_()

    await page.route(re.compile(r".*/events\?.*"), events)
    await _submit_imagine(visitor, "A reading nook under a window")
    notice = page.locator("#job-notice")
    await expect(notice).to_have_text("Connection lost, reconnecting…", timeout=SETTLE_MS)
    await expect(page.locator("#job-status")).to_have_text("Starting your design…")
    job_id = await page.get_attribute("#job", "data-job-id")
    assert job_id
    await _shots_at_widths(visitor, "reconnecting")
    for _ in range(100):  # the held job starts on the server meanwhile
        if (await _read_job(page, job_id))["status"] == "processing":
            break
        await asyncio.sleep(0.1)

    down = False  # back: the browser's next try gets the stream and its first message
    working = "Working on your design…"
    await expect(page.locator("#job-status")).to_have_text(working, timeout=SETTLE_MS)
    await expect(notice).to_be_hidden()
    row = page.locator(f"#history li[data-job-id='{job_id}']")
    await expect(row).to_contain_text(working)  # the row keeps up with the panel

    # A list read before the change (here: a history reload after a 409 that serves the
    # job as it was), then "Open" while the server cannot be reached.
    async def stale_list(route: Route) -> None:
        response = await route.fetch()
        page_of_jobs = await response.json()
        for item in page_of_jobs["items"]:
            item["status"] = "starting"
        await route.fulfill(response=response, json=page_of_jobs)

    await page.route(re.compile(r".*/api/v1/generations\?limit=.*"), stale_list)
    await _submit_imagine(visitor, "A second room while the first one runs")
    await expect(page.locator("#form-error")).to_contain_text("already have a design")
    await expect(page.locator("#form-error")).to_be_focused()
    await expect(row).to_contain_text("Starting your design…")

    async def unreachable(route: Route) -> None:
        await route.abort("connectionrefused")

    down = True  # the live stream stays open; a new one could not be made
    await page.route(re.compile(rf".*/api/v1/generations/{job_id}$"), unreachable)
    await row.get_by_role("button").click()
    await expect(page.locator("#job-error")).to_have_text(
        "The server could not be reached. Check your connection and try again."
    )
    await expect(page.locator("#job-status")).to_have_text(working)  # not the list's
    await expect(notice).to_be_hidden()  # that stream was never lost
    await page.unroute(re.compile(rf".*/api/v1/generations/{job_id}$"))
    down = False

    # Still followed live: the end shows in the panel and in the row.
    await stack.control("advance", await _prediction_of(stack, job_id), "succeeded")
    await expect(page.locator("#job-status")).to_have_text(DONE, timeout=SETTLE_MS)
    await expect(row).to_contain_text(DONE)
