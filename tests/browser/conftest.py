"""The browser suite: the e2e stack, an edge serving the web client, a real headless Chromium.

The stack fixtures are the e2e ones (imported, not copied). The edge here is
its own (WEB_CLIENT_ENABLED=true, talking to the stack's generation and usage
servers) behind a recorder, so a test can say which requests reached it.
Chromium is Debian's (`make test` installs it when missing); Playwright never
downloads a browser. Screenshots of every step go to one folder, printed at the end.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Route,
    ViewportSize,
    async_playwright,
)

from edge_api.app import create_app
from edge_api.settings import EdgeSettings
from testkit.envoy import Envoy, running_envoy
from testkit.plugin import S3Endpoint
from testkit.servers import ThreadedUvicorn
from testkit.stack import Stack
from tests.e2e.conftest import books_balance_at_the_end, http, reset_emulator, stack
from tests.e2e.harness import make_token, signed_base_url

__all__ = ["books_balance_at_the_end", "http", "reset_emulator", "stack"]

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The narrowest phone the page must work on.
VIEWPORT: ViewportSize = {"width": 375, "height": 812}


def no_designs_left(period_end: str) -> Callable[[Route], Awaitable[None]]:
    """A route handler answering submissions 402 LIMIT_EXCEEDED (its period ending at
    ``period_end``), passing everything else."""

    async def handle(route: Route) -> None:
        if route.request.method != "POST":
            await route.continue_()
            return
        error = {
            "code": "LIMIT_EXCEEDED",
            "message": "No generations left.",
            "periodEnd": period_end,
        }
        await route.fulfill(
            status=402, content_type="application/json", body=json.dumps({"error": error})
        )

    return handle


_SHOTS: list[Path] = []

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Scope]]
Send = Callable[[Scope], Awaitable[None]]


class Recorder:
    """ASGI wrapper noting (method, path) of every HTTP request that reached the edge."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class WebEdge:
    server: ThreadedUvicorn
    recorder: Recorder

    @property
    def url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="session")
def web_edge(stack: Stack, s3_server: S3Endpoint) -> Iterator[WebEdge]:
    settings = EdgeSettings.model_validate(
        dict(
            GENERATION_GRPC_TARGET=f"127.0.0.1:{stack.generation.server.port}",
            USAGE_GRPC_TARGET=stack.usage_target,
            WEB_CLIENT_ENABLED="true",
            **s3_server.env(),
            # As generation signs the input links (tests/e2e/conftest.py): the page's
            # img-src must name the same origin, or the browser blocks the photos.
            S3_SIGNED_BASE_URL=signed_base_url(s3_server),
            **stack.identity_env("edge-api"),
        )
    )
    recorder = Recorder(create_app(settings, stack.generation.context.config))
    server = ThreadedUvicorn(recorder, name="web-edge").start()
    try:
        yield WebEdge(server, recorder)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def envoy(
    web_edge: WebEdge, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Envoy]:
    """The deployed Envoy config in front of the web edge, as `make run` serves the page."""
    with running_envoy(
        tmp_path_factory.mktemp("browser-envoy"), web_edge.server.port, stack.gateway.port
    ) as proxy:
        yield proxy


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        # Never a silent skip: the suite is part of `make test`, which installs it.
        pytest.fail(
            f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium) or "
            "`apt-get install -y chromium`",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("browser") / "screenshots"
    directory.mkdir()
    _SHOTS.append(directory)
    print(f"\nbrowser screenshots: {directory}")
    return directory


@dataclass
class Visitor:
    """One person with their own token, in their own browser context (own sessionStorage)."""

    id: uuid.UUID
    token: str
    page: Page
    edge: WebEdge
    shots: Path
    name: str
    errors: list[str] = field(default_factory=list)
    _step: int = 0

    async def open(self, base_url: str | None = None) -> None:
        await self.page.goto(f"{base_url or self.edge.url}/#token={self.token}")
        await self.page.wait_for_selector("body[data-ready='true']")

    async def shot(self, label: str) -> None:
        """A screenshot of this step; the page must never scroll sideways at 375 px."""
        self._step += 1
        path = self.shots / f"{self.name}-{self._step:02d}-{label}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        width = await self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORT["width"], f"{label}: the page is {width} px wide"


@pytest.fixture
async def visitor(
    browser: Browser,
    web_edge: WebEdge,
    shots_dir: Path,
    reset_emulator: None,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Visitor]:
    web_edge.recorder.seen.clear()  # each test sees only its own requests
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    user_id = uuid.uuid4()
    person = Visitor(user_id, make_token(user_id), page, web_edge, shots_dir, request.node.name)
    # A script error or a CSP refusal in the page fails the test.
    page.on("pageerror", lambda error: person.errors.append(str(error)))
    page.on(
        "console",
        lambda message: person.errors.append(message.text) if _unexpected(message) else None,
    )
    # No request of the page may miss (a 404 is only a console line otherwise).
    page.on(
        "response",
        lambda answer: (
            person.errors.append(f"{answer.status} {answer.url}") if answer.status == 404 else None
        ),
    )
    try:
        yield person
    finally:
        await context.close()
    assert person.errors == []


def _unexpected(message: ConsoleMessage) -> bool:
    # Chromium logs every 4xx answer; the tests check those themselves.
    return message.type == "error" and not message.text.startswith("Failed to load resource")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for directory in _SHOTS:
        terminalreporter.write_line(f"browser screenshots: {directory}")
