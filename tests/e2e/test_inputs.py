"""The job's `inputs`: the owner's own photos as short-lived signed links (before/after)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from tests.e2e.harness import Stack, User, jpeg_bytes, signed_base_url


async def test_the_owner_gets_signed_links_to_their_inputs(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    room, reference = jpeg_bytes(64, 48, (10, 20, 30)), jpeg_bytes(32, 32, (200, 10, 10))
    response = await user.submit("compose", images=[room, reference])
    assert response.status_code == 202, response.text
    submitted = response.json()

    job = await user.wait_for(submitted["id"], {"succeeded"})
    listed = (
        await http.get(f"{stack.api}/generations", params={"limit": 1}, headers=user.headers)
    ).json()["items"][0]

    for shown in (submitted, job, listed):
        assert [item["idx"] for item in shown["inputs"]] == [0, 1]
    # S3_SIGNED_BASE_URL names the host callers and the provider reach (localhost here,
    # 127.0.0.1 for the services): the job succeeded, so the provider fetched its
    # inputs through these links, and the caller fetches them below.
    assert stack.s3 is not None
    public = urlsplit(signed_base_url(stack.s3)).netloc
    for item in job["inputs"]:
        url = urlsplit(item["url"])
        assert url.netloc == public
        assert url.path.startswith(f"/private/{user.id}/inputs/")
        assert int(parse_qs(url.query)["X-Amz-Expires"][0]) <= 300
        image = await http.get(item["url"])
        assert image.status_code == 200
        assert image.content.startswith(b"\xff\xd8\xff")
    tampered = job["inputs"][0]["url"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert (await http.get(tampered)).status_code == 403


async def test_a_job_without_images_has_no_inputs(stack: Stack, user: User) -> None:
    response = await user.submit("imagine", prompt="A bright hallway")
    assert response.json()["inputs"] == []
    await user.wait_for(response.json()["id"], {"succeeded"})
