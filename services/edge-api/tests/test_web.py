"""The reference web client's routes: which files, content types, and security headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_api.app import create_app
from edge_api.routes.web import WEB_DIR
from edge_api.settings import EdgeSettings
from kit.runtime_config import load_runtime_config
from kit.service_keys import generate_key_pair, write_private_key
from testkit.config import REPO_RUNTIME_CONFIG

# Not used by these routes, but the settings require them (and real ones in production).
BASE_ENV: dict[str, Any] = {
    "S3_ENDPOINT": "127.0.0.1:9",
    "S3_ACCESS_KEY": "web-test-access",
    "S3_SECRET_KEY": "web-test-secret-not-published-0123456789",
    "AUTH_JWT_SECRET": "web-test-jwt-secret-not-published-0123456789",
}


async def _client(**env: str) -> httpx.AsyncClient:
    app = create_app(EdgeSettings(**{**BASE_ENV, **env}), load_runtime_config(REPO_RUNTIME_CONFIG))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(APP_ENV="development") as client:
        yield client


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/app/app.css", "text/css; charset=utf-8"),
        ("/app/main.js", "text/javascript; charset=utf-8"),
        ("/app/api.js", "text/javascript; charset=utf-8"),
    ],
)
async def test_files_have_their_type_and_the_security_headers(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "style-src 'self';" in policy
    assert "default-src 'none'" in policy
    assert "unsafe" not in policy


async def test_head_answers_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/app/main.js")

    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    "path",
    ["/app/index.html", "/app/missing.js", "/app/..%2fapp.py", "/app/../routes/web.py", "/app/"],
)
async def test_nothing_else_is_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_writes_are_not_allowed(client: httpx.AsyncClient) -> None:
    response = await client.post("/", content=b"x")

    assert response.status_code == 405


async def test_production_serves_it_only_when_enabled(tmp_path: Path) -> None:
    private, _ = generate_key_pair()
    write_private_key(tmp_path / "service.key", private)
    production = {"APP_ENV": "production", "SERVICE_KEY_FILE": str(tmp_path / "service.key")}
    async with await _client(**production) as off:
        assert (await off.get("/")).status_code == 404
    async with await _client(**production, WEB_CLIENT_ENABLED="true") as on:
        assert (await on.get("/")).status_code == 200


async def test_images_may_come_from_the_public_render_origin() -> None:
    async with await _client(
        APP_ENV="development", S3_PUBLIC_BASE_URL="https://cdn.example.com/renders"
    ) as client:
        policy = (await client.get("/")).headers["content-security-policy"]

    assert "img-src 'self' blob: https://cdn.example.com http://127.0.0.1:9;" in policy
    assert "connect-src 'self'" in policy


@pytest.mark.parametrize(
    ("endpoint", "secure", "origin"),
    [
        ("127.0.0.1:9", "false", "http://127.0.0.1:9"),
        ("s3.example.com", "true", "https://s3.example.com"),
        ("[::1]:9000", "false", "http://[::1]:9000"),
    ],
)
async def test_images_may_come_from_the_s3_endpoint_and_nowhere_else(
    endpoint: str, secure: str, origin: str
) -> None:
    """The signed "before" photos point at S3_ENDPOINT: its one origin, no wildcard."""
    async with await _client(
        APP_ENV="development", S3_ENDPOINT=endpoint, S3_SECURE=secure
    ) as client:
        policy = (await client.get("/")).headers["content-security-policy"]

    assert f"img-src 'self' blob: {origin};" in policy
    assert "*" not in policy


async def test_images_come_from_the_signed_base_url_when_one_is_set() -> None:
    """With S3_SIGNED_BASE_URL the "before" photos point there, not at the endpoint."""
    async with await _client(
        APP_ENV="development", S3_SIGNED_BASE_URL="https://files.example.com/"
    ) as client:
        policy = (await client.get("/")).headers["content-security-policy"]

    assert "img-src 'self' blob: https://files.example.com;" in policy
    assert "127.0.0.1:9" not in policy


@pytest.mark.parametrize(
    "base",
    [
        "files.example.com",
        "ftp://files.example.com",
        "https://files.example.com/bucket",
        "https://files.example.com?x=1",
        "https://user:pw@files.example.com",
        "https://files.example.com:99999",
        "https://files.example.com; script-src *",
    ],
)
async def test_a_signed_base_url_that_is_not_an_origin_stops_the_start(base: str) -> None:
    with pytest.raises(ValueError, match="S3_SIGNED_BASE_URL"):
        await _client(APP_ENV="development", S3_SIGNED_BASE_URL=base)


@pytest.mark.parametrize("endpoint", ["s3.example.com; script-src *", "s3 example.com", "*:9000"])
async def test_an_endpoint_that_would_bend_the_policy_stops_the_start(endpoint: str) -> None:
    with pytest.raises(ValueError, match="S3_ENDPOINT"):
        await _client(APP_ENV="development", S3_ENDPOINT=endpoint)


def test_the_page_has_no_inline_script_or_style_and_no_html_injection() -> None:
    """No inline code (the policy would block it), and data never goes in as HTML."""
    page = (WEB_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "<style" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    for module in WEB_DIR.glob("*.js"):
        code = module.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{module.name} uses {sink}"
