"""Signed GET URLs against the real S3 server: which host they name, and that they work."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import ValidationError

from kit.settings import S3Settings
from kit.storage import ObjectStorage
from testkit.plugin import S3Endpoint

BUCKET = "kit-signing"
DATA = b"a caller's photo"


async def _stored(storage: ObjectStorage) -> str:
    await storage.ensure_bucket(BUCKET)
    key = f"inputs/{uuid.uuid4()}.jpg"
    await storage.put_bytes(BUCKET, key, DATA, "image/jpeg")
    return key


async def test_without_a_signed_base_url_urls_name_the_endpoint(s3_server: S3Endpoint) -> None:
    settings = S3Settings.model_validate(s3_server.env())
    storage = ObjectStorage(settings)
    key = await _stored(storage)

    url = storage.sign_get_url(BUCKET, key, 60)

    assert urlsplit(url).netloc == settings.s3_endpoint
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == DATA


async def test_urls_name_the_signed_base_url_and_are_signed_for_it(s3_server: S3Endpoint) -> None:
    """The services reach S3 as 127.0.0.1 while callers reach it as localhost: the URL
    names localhost and its signature holds for that host only (SigV4 signs the Host)."""
    settings = S3Settings.model_validate(s3_server.env())
    port = settings.s3_endpoint.rpartition(":")[2]
    public = S3Settings.model_validate(
        {**s3_server.env(), "S3_SIGNED_BASE_URL": f"http://localhost:{port}/"}
    )
    storage = ObjectStorage(public)
    key = await _stored(storage)

    for url in (
        storage.sign_get_url(BUCKET, key, 60),
        await storage.presigned_get_url(BUCKET, key, 60),
    ):
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("http", f"localhost:{port}")
        async with httpx.AsyncClient() as client:
            fetched = await client.get(url)
            assert (fetched.status_code, fetched.content) == (200, DATA)
            # The same URL sent with the endpoint's own host: the signature does not hold.
            swapped = await client.get(url, headers={"Host": settings.s3_endpoint})
            assert swapped.status_code == 403


def _settings(signed_base_url: str) -> S3Settings:
    return S3Settings.model_validate(
        {
            "S3_ENDPOINT": "s3:9000",
            "S3_ACCESS_KEY": "a",
            "S3_SECRET_KEY": "b",
            "S3_SIGNED_BASE_URL": signed_base_url,
        }
    )


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://files.example.com", "https://files.example.com"),
        ("https://files.example.com/", "https://files.example.com"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        (" ", None),
    ],
)
def test_a_signed_base_url_is_kept_as_its_origin(given: str, kept: str | None) -> None:
    settings = _settings(given)
    assert settings.s3_signed_base_url == kept


@pytest.mark.parametrize(
    "given",
    ["files.example.com", "https://files.example.com/private", "https://a@files.example.com"],
)
def test_a_signed_base_url_with_more_than_an_origin_is_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="S3_SIGNED_BASE_URL"):
        _settings(given)
