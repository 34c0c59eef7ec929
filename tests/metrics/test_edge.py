"""The edge's /metrics over real HTTP: per-route counts and latency, rejected uploads."""

from __future__ import annotations

import uuid

import httpx

from testkit.stack import Stack
from tests.e2e.harness import User, jpeg_bytes
from tests.metrics.helpers import Scrape, eventually, http_scrape

REQUESTS = "http_server_requests_total"
JOB_ROUTE = "/api/v1/generations/{job_id}"
REJECTED = "edge_uploads_rejected_total"


def _requests(scrape: Scrape, method: str, route: str, status: str) -> float:
    return scrape.value(REQUESTS, method=method, route=route, status=status)


async def test_routes_are_counted_by_template_with_latency(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    async def scrape() -> Scrape:
        return await http_scrape(http, stack.edge.base_url)

    before = await scrape()
    assert (await user.get(str(uuid.uuid4()))).status_code == 404
    assert (await user.get(str(uuid.uuid4()))).status_code == 404
    assert (await http.get(f"{stack.api}/generations/{uuid.uuid4()}")).status_code == 401
    await user.usage()
    assert (await http.get(f"{stack.api}/no-such-thing/{uuid.uuid4()}")).status_code == 404
    expected = [
        ("GET", JOB_ROUTE, "404", 2),
        ("GET", JOB_ROUTE, "401", 1),
        ("GET", "/api/v1/usage", "200", 1),
        ("GET", "unmatched", "404", 1),
    ]

    def moved(now: Scrape) -> bool:
        return all(
            _requests(now, *labels) - _requests(before, *labels) == n for *labels, n in expected
        )

    after = await eventually(scrape, moved)
    for method, route, status, times in expected:
        assert (
            _requests(after, method, route, status) - _requests(before, method, route, status)
            == times
        ), (method, route, status)
    count = "http_server_request_duration_seconds_count"
    assert (
        after.value(count, method="GET", route=JOB_ROUTE)
        - before.value(count, method="GET", route=JOB_ROUTE)
        == 3
    )
    assert after.families["http_server_request_duration_seconds"] == "histogram"


async def test_rejected_uploads_are_counted_by_reason(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    async def scrape() -> Scrape:
        return await http_scrape(http, stack.edge.base_url)

    before = await scrape()
    too_large = await user.submit("redesign", images=[jpeg_bytes() + b"\0" * (10 * 1024 * 1024)])
    assert too_large.status_code == 413
    # Refused by the generation service's image inspection, and by the edge itself.
    assert (await user.submit("redesign", images=[b"just text, not an image"])).status_code == 415
    wrong_type = await http.post(
        f"{stack.api}/generations",
        content=b"mode=imagine",
        headers={**user.headers, "Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 415
    upload = ("POST", "/api/v1/generations")
    expected = {
        (REJECTED, "too_large"): 1,
        (REJECTED, "unsupported_media_type"): 2,
        (REQUESTS, "413"): 1,
        (REQUESTS, "415"): 2,
    }

    def delta(now: Scrape, name: str, label: str) -> float:
        if name == REJECTED:
            return now.value(name, reason=label) - before.value(name, reason=label)
        return _requests(now, *upload, label) - _requests(before, *upload, label)

    # Both are recorded once the answer has gone out.
    after = await eventually(
        scrape, lambda now: all(delta(now, *key) == count for key, count in expected.items())
    )
    for key, count in expected.items():
        assert delta(after, *key) == count, key
