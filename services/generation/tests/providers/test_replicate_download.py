"""Downloading output files: size cap, retries, redirects and no credentials."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from generation.domain.provider import OutputRefused, ProviderRejected, ProviderUnavailable
from generation.providers.replicate_download import MAX_REDIRECTS

OUTPUT_URL = "https://replicate.delivery/xezq/abc123/tmpq1w2e3r4.jpg"
CHUNK = b"x" * 1024


class CountingStream(httpx.AsyncByteStream):
    """A body of ``chunks`` chunks that counts how many were actually pulled."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.yielded = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.yielded += 1
            yield CHUNK

    async def aclose(self) -> None:
        self.closed = True


async def test_small_file_is_returned_whole(make_harness: Any, answers: Any) -> None:
    harness = make_harness(answers.script(httpx.Response(200, content=b"\xff\xd8jpeg-bytes")))

    data = await harness.provider.download_output(OUTPUT_URL, max_bytes=1024)

    assert data == b"\xff\xd8jpeg-bytes"
    [request] = harness.requests
    assert str(request.url) == OUTPUT_URL
    assert "authorization" not in request.headers
    assert answers.token not in str(request.headers)


async def test_a_file_exactly_at_the_cap_is_accepted(make_harness: Any, answers: Any) -> None:
    stream = CountingStream(chunks=4)
    harness = make_harness(answers.script(httpx.Response(200, stream=stream)))

    data = await harness.provider.download_output(OUTPUT_URL, max_bytes=4 * len(CHUNK))

    assert len(data) == 4 * len(CHUNK)


async def test_oversized_stream_is_abandoned_early(make_harness: Any, answers: Any) -> None:
    stream = CountingStream(chunks=10_000)
    harness = make_harness(answers.script(httpx.Response(200, stream=stream)))

    with pytest.raises(OutputRefused, match="larger"):  # for good: the job ends now
        await harness.provider.download_output(OUTPUT_URL, max_bytes=5 * len(CHUNK) + 10)

    assert stream.yielded == 6
    assert stream.closed
    assert len(harness.requests) == 1


async def test_outputs_are_asked_for_uncompressed_and_a_compressed_one_is_refused(
    make_harness: Any, answers: Any
) -> None:
    """A few KB of brotli unpack to gigabytes a network chunk at a time, before any cap
    could see them: the answer must come as is, or not at all."""
    stream = CountingStream(chunks=4)
    packed = httpx.Response(200, stream=stream, headers={"content-encoding": "br"})
    harness = make_harness(answers.script(packed))

    with pytest.raises(OutputRefused, match="compressed"):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=1024 * 1024)

    assert stream.yielded == 0
    [request] = harness.requests
    assert request.headers["accept-encoding"] == "identity"


async def test_declared_oversize_is_refused_before_reading(make_harness: Any, answers: Any) -> None:
    stream = CountingStream(chunks=100)
    response = httpx.Response(200, stream=stream, headers={"content-length": str(100 * 1024)})
    harness = make_harness(answers.script(response))

    with pytest.raises(ProviderRejected):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=1000)

    assert stream.yielded == 0


async def test_transient_failures_are_retried(make_harness: Any, answers: Any) -> None:
    script = answers.script(
        httpx.Response(503),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, content=b"image"),
    )
    harness = make_harness(script, max_attempts=3)

    assert await harness.provider.download_output(OUTPUT_URL, max_bytes=100) == b"image"
    assert len(harness.requests) == 3
    assert len(harness.sleeps) == 2


async def test_persistent_5xx_becomes_unavailable(make_harness: Any, answers: Any) -> None:
    harness = make_harness(answers.script(*[httpx.Response(502) for _ in range(3)]))

    with pytest.raises(ProviderUnavailable):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=100)
    assert len(harness.requests) == 3


async def test_an_empty_file_is_retried_and_never_returned(make_harness: Any, answers: Any) -> None:
    """A 200 with no body is no output: returned, it became a succeeded and charged
    render of 0 bytes. Retried; still empty, the output is unavailable (the job stays
    in flight for the webhook's retries, a refresh or the sweep)."""
    empty = httpx.Response(200, content=b"", headers={"content-type": "image/jpeg"})
    harness = make_harness(answers.script(empty, httpx.Response(200, content=b"image")))

    assert await harness.provider.download_output(OUTPUT_URL, max_bytes=100) == b"image"
    assert len(harness.requests) == 2

    harness = make_harness(answers.script(*[empty for _ in range(3)]))
    with pytest.raises(ProviderUnavailable):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=100)
    assert len(harness.requests) == 3


@pytest.mark.parametrize(
    "media_type",
    ["text/html; charset=utf-8", "application/json", "text/plain", "application/problem+json"],
)
async def test_a_page_instead_of_a_file_is_retried_and_never_returned(
    make_harness: Any, answers: Any, media_type: str
) -> None:
    """A delivery host's 200 that is an error page (HTML or JSON) is no output: returned,
    it was stored as the render's ``<idx>.jpg`` and the job succeeded, charged, with a
    page for a picture. Retried like an empty answer."""
    page = httpx.Response(
        200,
        content=b"<html>Service temporarily unavailable</html>",
        headers={"content-type": media_type},
    )
    harness = make_harness(answers.script(page, httpx.Response(200, content=b"\xff\xd8image")))
    assert await harness.provider.download_output(OUTPUT_URL, max_bytes=1000) == b"\xff\xd8image"
    assert len(harness.requests) == 2

    harness = make_harness(answers.script(*[page for _ in range(3)]))
    with pytest.raises(ProviderUnavailable):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=1000)


@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png", "application/octet-stream", ""])
async def test_an_image_or_untyped_file_is_returned(
    make_harness: Any, answers: Any, media_type: str
) -> None:
    headers = {"content-type": media_type} if media_type else {}
    harness = make_harness(
        answers.script(httpx.Response(200, content=b"\xff\xd8image", headers=headers))
    )
    assert await harness.provider.download_output(OUTPUT_URL, max_bytes=1000) == b"\xff\xd8image"


@pytest.mark.parametrize("status_code", [403, 404, 410])
async def test_4xx_is_rejected_without_retry(
    make_harness: Any, answers: Any, status_code: int
) -> None:
    harness = make_harness(answers.script(httpx.Response(status_code)))

    with pytest.raises(ProviderRejected, match=str(status_code)):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=100)
    assert len(harness.requests) == 1


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://host/x.jpg", "not a url", "https://", "data:,abc"]
)
async def test_only_http_urls_are_fetched(make_harness: Any, answers: Any, url: str) -> None:
    harness = make_harness(answers.script())

    with pytest.raises(ProviderRejected):
        await harness.provider.download_output(url, max_bytes=100)
    assert harness.requests == []


async def test_redirects_are_followed_without_credentials(make_harness: Any, answers: Any) -> None:
    moved = httpx.Response(302, headers={"location": "https://cdn.replicate.delivery/file.jpg"})
    harness = make_harness(answers.script(moved, httpx.Response(200, content=b"image")))

    assert await harness.provider.download_output(OUTPUT_URL, max_bytes=100) == b"image"
    assert [str(r.url) for r in harness.requests] == [
        OUTPUT_URL,
        "https://cdn.replicate.delivery/file.jpg",
    ]
    assert all("authorization" not in r.headers for r in harness.requests)


async def test_a_slow_drip_hits_the_overall_deadline(make_harness: Any, answers: Any) -> None:
    class Drip(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                await asyncio.sleep(0.01)
                yield b"x"

    harness = make_harness(
        answers.script(*[httpx.Response(200, stream=Drip()) for _ in range(2)]),
        max_attempts=2,
        download_deadline_seconds=0.1,
    )

    with pytest.raises(ProviderUnavailable, match="TimeoutError"):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=10_000)
    assert len(harness.requests) == 2


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1/",
        "https://127.0.0.1/x.jpg",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/x.jpg",
        "https://replicate.delivery@127.0.0.1/x.jpg",
        "http://replicate.delivery/x.jpg",
        "https://evil.example/x.jpg",
    ],
)
async def test_a_redirect_off_the_delivery_hosts_is_refused_unfollowed(
    make_harness: Any, answers: Any, location: str
) -> None:
    moved = httpx.Response(302, headers={"location": location})
    harness = make_harness(answers.script(moved, httpx.Response(200, content=b"secret")))

    with pytest.raises(OutputRefused):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=100)
    assert [str(r.url) for r in harness.requests] == [OUTPUT_URL]
    assert harness.sleeps == []


async def test_redirects_stop_after_a_few_hops(make_harness: Any, answers: Any) -> None:
    def moved() -> httpx.Response:
        return httpx.Response(302, headers={"location": "/again.jpg"})

    harness = make_harness(answers.script(*[moved() for _ in range(10)]), max_attempts=1)

    with pytest.raises(ProviderRejected, match="redirects"):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=100)
    assert len(harness.requests) == MAX_REDIRECTS + 1


async def test_a_refused_output_is_logged_with_its_host_only(
    make_harness: Any, answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = make_harness(answers.script())

    with pytest.raises(OutputRefused):
        await harness.provider.download_output(
            "https://evil.example/x.jpg?X-Amz-Signature=s3cr3tsig", max_bytes=100
        )

    logged = capsys.readouterr().out
    assert '"host": "evil.example"' in logged
    assert "provider.output_refused" in logged
    assert "s3cr3tsig" not in logged
    assert harness.requests == []


@pytest.mark.parametrize("location", ["https://exa mple.com/", "http://:99999/", "//:0/x"])
async def test_an_unreadable_redirect_is_refused(
    make_harness: Any, answers: Any, location: str
) -> None:
    moved = httpx.Response(302, headers={"location": location})
    harness = make_harness(answers.script(moved))

    with pytest.raises(OutputRefused):
        await harness.provider.download_output(OUTPUT_URL, max_bytes=100)
    assert len(harness.requests) == 1
