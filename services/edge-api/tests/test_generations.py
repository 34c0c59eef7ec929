"""GET / PATCH / DELETE /generations/{id} and GET /usage against real gRPC backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from interior.generation.v1 import generation_pb2
from testkit.standins import free_quota

SUCCEEDED_AT = datetime(2026, 11, 5, 9, 32, 10, 250_000, tzinfo=UTC)


def _succeeded_job(backends, owner: str):
    render_id = str(uuid.uuid4())
    return backends.generation.add_job(
        owner,
        prediction_id="pred-123",
        status=generation_pb2.JOB_STATUS_SUCCEEDED,
        settings=generation_pb2.JobSettings(mode="staging", room_type="bedroom", style="japandi"),
        completed_at=SUCCEEDED_AT,
        updated_at=SUCCEEDED_AT,
        render_id=render_id,
        variants=[
            generation_pb2.Variant(idx=1, object_key=f"renders/{render_id}/1.jpg"),
            generation_pb2.Variant(
                idx=0,
                object_key=f"renders/{render_id}/0.jpg",
                thumbnail_object_key=f"renders/{render_id}/0.thumb.jpg",
                width=1024,
                height=768,
            ),
        ],
        inputs=[generation_pb2.InputImage(idx=0, url="http://s3.test/private/in.jpg?X-Sig=1")],
    )


async def test_succeeded_job_has_the_documented_shape(
    client: httpx.AsyncClient, backends, identity
) -> None:
    job = _succeeded_job(backends, identity.owner)

    response = await client.get(f"/api/v1/generations/{job.id}", headers=identity.headers())

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "id": job.id,
        "predictionId": "pred-123",
        "status": "succeeded",
        "settings": {
            "mode": "staging",
            "roomType": "bedroom",
            "style": "japandi",
            "sourceGenerationId": None,
        },
        "error": None,
        "createdAt": "2026-11-05T09:30:00.000Z",
        "updatedAt": "2026-11-05T09:32:10.250Z",
        "completedAt": "2026-11-05T09:32:10.250Z",
        "inputs": [{"idx": 0, "url": "http://s3.test/private/in.jpg?X-Sig=1"}],
        "variants": [
            {
                "idx": 0,
                "url": f"http://edge.test/public/renders/{job.render_id}/0.jpg",
                "thumbnailUrl": f"http://edge.test/public/renders/{job.render_id}/0.thumb.jpg",
                "width": 1024,
                "height": 768,
            },
            {  # stored before thumbnails existed
                "idx": 1,
                "url": f"http://edge.test/public/renders/{job.render_id}/1.jpg",
                "thumbnailUrl": None,
                "width": None,
                "height": None,
            },
        ],
    }
    (call,) = backends.generation.recorder.named("GetGeneration")
    assert (call.request.owner_id, call.request.job_id) == (identity.owner, job.id)


async def test_running_job_has_nulls_and_no_variants(
    client: httpx.AsyncClient, backends, identity
) -> None:
    job = backends.generation.add_job(identity.owner)

    body = (await client.get(f"/api/v1/generations/{job.id}", headers=identity.headers())).json()

    assert body["status"] == "starting"
    assert body["predictionId"] is None
    assert body["settings"] == {
        "mode": "redesign",
        "roomType": None,
        "style": None,
        "sourceGenerationId": None,
    }
    assert body["completedAt"] is None
    assert body["error"] is None
    assert body["variants"] == []


async def test_failed_job_carries_its_error(client: httpx.AsyncClient, backends, identity) -> None:
    job = backends.generation.add_job(
        identity.owner,
        status=generation_pb2.JOB_STATUS_FAILED,
        error=generation_pb2.JobError(code="PROVIDER_FAILED", message="The render failed."),
        completed_at=SUCCEEDED_AT,
    )

    body = (await client.get(f"/api/v1/generations/{job.id}", headers=identity.headers())).json()

    assert body["status"] == "failed"
    assert body["error"] == {"code": "PROVIDER_FAILED", "message": "The render failed."}


async def test_variant_urls_use_the_public_base_url_when_configured(
    edge_clients, backends, identity
) -> None:
    client = await edge_clients.open(
        edge_clients.make_settings(S3_PUBLIC_BASE_URL="https://cdn.example.com/bucket/")
    )
    job = _succeeded_job(backends, identity.owner)

    body = (await client.get(f"/api/v1/generations/{job.id}", headers=identity.headers())).json()

    assert (
        body["variants"][0]["url"]
        == f"https://cdn.example.com/bucket/renders/{job.render_id}/0.jpg"
    )


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        ("127.0.0.1", "https://interior.example.com/public/"),
        ("10.0.0.5, 127.0.0.0/8", "https://interior.example.com/public/"),
        ("*", "https://interior.example.com/public/"),
        ("10.1.2.3", "http://edge.test/public/"),
        ("", "http://edge.test/public/"),
    ],
)
async def test_forwarding_headers_count_only_from_trusted_peers(
    edge_clients, backends, identity, trusted: str, expected: str
) -> None:
    # The in-process client connects from 127.0.0.1.
    client = await edge_clients.open(edge_clients.make_settings(TRUSTED_PROXY_IPS=trusted))
    job = _succeeded_job(backends, identity.owner)
    headers = {
        **identity.headers(),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "interior.example.com",
    }

    body = (await client.get(f"/api/v1/generations/{job.id}", headers=headers)).json()

    assert body["variants"][0]["url"].startswith(expected)


async def test_a_configured_public_base_url_wins_over_the_forwarding_headers(
    edge_clients, backends, identity
) -> None:
    # TLS ended at a load balancer: Envoy forwards plain http, the links stay https.
    client = await edge_clients.open(
        edge_clients.make_settings(
            TRUSTED_PROXY_IPS="*", PUBLIC_BASE_URL="https://API.Interior.example/"
        )
    )
    job = _succeeded_job(backends, identity.owner)
    headers = {**identity.headers(), "X-Forwarded-Proto": "http", "X-Forwarded-Host": "lb:80"}

    body = (await client.get(f"/api/v1/generations/{job.id}", headers=headers)).json()

    variant = body["variants"][0]
    assert variant["url"].startswith("https://api.interior.example/public/renders/")
    assert variant["thumbnailUrl"].startswith("https://api.interior.example/public/renders/")


@pytest.mark.parametrize(
    "value", ["ftp://api.example", "https://api.example/v1", "https://a b", "https://x?y=1"]
)
def test_a_public_base_url_must_be_an_origin(make_settings, value: str) -> None:
    with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
        make_settings(PUBLIC_BASE_URL=value)


@pytest.mark.parametrize(
    ("proto", "host", "expected"),
    [
        ("gopher", "evil.example/path", "http://edge.test/public/"),
        ("https", "a b", "https://edge.test/public/"),
        ("javascript", "x.example:99999999", "http://edge.test/public/"),
        ("HTTPS", "Shop.Example:8443", "https://shop.example:8443/public/"),
    ],
)
async def test_each_forwarding_header_is_used_only_when_plausible(
    client: httpx.AsyncClient, backends, identity, proto: str, host: str, expected: str
) -> None:
    job = _succeeded_job(backends, identity.owner)
    headers = {**identity.headers(), "X-Forwarded-Proto": proto, "X-Forwarded-Host": host}

    body = (await client.get(f"/api/v1/generations/{job.id}", headers=headers)).json()

    assert body["variants"][0]["url"].startswith(expected)


def test_a_bad_trusted_proxy_entry_stops_the_start(make_settings) -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        make_settings(TRUSTED_PROXY_IPS="127.0.0.1, not-an-ip")


async def test_unknown_job_is_a_json_404(client: httpx.AsyncClient, identity) -> None:
    response = await client.get(f"/api/v1/generations/{uuid.uuid4()}", headers=identity.headers())

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_another_users_job_is_not_found(
    client: httpx.AsyncClient, backends, identity
) -> None:
    job = backends.generation.add_job(identity.other_owner)

    for method in ("GET", "DELETE"):
        response = await client.request(
            method, f"/api/v1/generations/{job.id}", headers=identity.headers()
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "bad_id", ["123", "not-a-uuid", "%00", "a" * 300, "7D1B6D3E0B8A4A0E9B7E1F2D3C4B5A69"]
)
async def test_non_uuid_ids_are_404_without_a_backend_call(
    client: httpx.AsyncClient, backends, identity, bad_id: str
) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method, f"/api/v1/generations/{bad_id}", headers=identity.headers(), json={}
        )
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert backends.generation.recorder.calls == []


async def test_cancel_a_running_job(client: httpx.AsyncClient, backends, identity) -> None:
    job = backends.generation.add_job(identity.owner, status=generation_pb2.JOB_STATUS_PROCESSING)

    response = await client.patch(
        f"/api/v1/generations/{job.id}", headers=identity.headers(), json={"action": "cancel"}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert response.json()["error"]["code"] == "CANCELED"
    (call,) = backends.generation.recorder.named("CancelGeneration")
    assert call.request.job_id == job.id


async def test_cancel_a_finished_job_is_409(client: httpx.AsyncClient, backends, identity) -> None:
    job = _succeeded_job(backends, identity.owner)

    response = await client.patch(
        f"/api/v1/generations/{job.id}", headers=identity.headers(), json={"action": "cancel"}
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "JOB_NOT_CANCELLABLE"


@pytest.mark.parametrize(
    "body",
    [
        b'{"action": "delete"}',
        b'{"action": "cancel", "extra": 1}',
        b"{}",
        b"[]",
        b'"cancel"',
        b"{not json",
        b"",
        b"[" * 5000,
    ],
)
async def test_patch_with_anything_but_cancel_is_400(
    client: httpx.AsyncClient, backends, identity, body: bytes
) -> None:
    job = backends.generation.add_job(identity.owner)
    headers = {**identity.headers(), "Content-Type": "application/json"}

    response = await client.patch(f"/api/v1/generations/{job.id}", headers=headers, content=body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.named("CancelGeneration") == []


async def test_patch_needs_a_json_content_type(
    client: httpx.AsyncClient, backends, identity
) -> None:
    job = backends.generation.add_job(identity.owner)
    headers = {**identity.headers(), "Content-Type": "text/plain"}

    response = await client.patch(
        f"/api/v1/generations/{job.id}", headers=headers, content=b'{"action": "cancel"}'
    )

    assert response.status_code == 415
    assert backends.generation.recorder.calls == []


async def test_delete_a_finished_job(client: httpx.AsyncClient, backends, identity) -> None:
    job = _succeeded_job(backends, identity.owner)

    response = await client.delete(f"/api/v1/generations/{job.id}", headers=identity.headers())

    assert response.status_code == 200
    assert response.json()["id"] == job.id
    assert response.json()["variants"] == []


async def test_delete_a_running_job_is_409(client: httpx.AsyncClient, backends, identity) -> None:
    job = backends.generation.add_job(identity.owner)

    response = await client.delete(f"/api/v1/generations/{job.id}", headers=identity.headers())

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "JOB_NOT_FINISHED"


async def test_usage(client: httpx.AsyncClient, backends, identity) -> None:
    response = await client.get("/api/v1/usage", headers=identity.headers())

    assert response.status_code == 200
    assert response.json() == {
        "plan": "free",
        "monthlyGenerations": 10,
        "used": 3,
        "remaining": 7,
        "periodStart": "2026-11-01T00:00:00.000Z",
        "periodEnd": "2026-12-01T00:00:00.000Z",
    }
    (call,) = backends.usage.recorder.named("GetQuota")
    assert call.request.owner_id == identity.owner


async def test_usage_shows_the_remaining_the_usage_service_answers(
    client: httpx.AsyncClient, backends, identity
) -> None:
    """After a mid-month downgrade more is used than the plan now allows: the usage
    service answers 0 left, never a negative number the edge would work out itself."""
    backends.usage.quota = free_quota(monthly_generations=2, used=5, remaining=0)
    try:
        response = await client.get("/api/v1/usage", headers=identity.headers())
    finally:
        backends.usage.quota = None
    assert response.status_code == 200
    assert (response.json()["used"], response.json()["remaining"]) == (5, 0)


@pytest.mark.parametrize("path", ["/api/v1/generations/{job}", "/api/v1/usage"])
async def test_head_answers_as_get_without_the_body(
    client: httpx.AsyncClient, backends, identity, path: str
) -> None:
    """RFC 9110 9.1: HEAD wherever GET (FastAPI's GET routes did not take it: 405)."""
    target = path.format(job=backends.generation.add_job(identity.owner).id)
    get = await client.get(target, headers=identity.headers())
    head = await client.head(target, headers=identity.headers())

    assert (get.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    for name in ("content-type", "content-length", "cache-control"):
        assert head.headers[name] == get.headers[name]


@pytest.mark.parametrize(
    "extra", [{"sourceVariantIdx": 0}, {"sourceGenerationId": None}], ids=["index", "id"]
)
async def test_json_refuses_the_forms_names_for_a_source(
    client: httpx.AsyncClient, backends, identity, extra: dict[str, object]
) -> None:
    """JSON names a refine source "source": {...} (its document forbids any other field);
    the form's flat names started a charged job through JSON."""
    body = {"mode": "imagine", "prompt": "a sunny room", **extra}
    response = await client.post("/api/v1/generations", json=body, headers=identity.headers())

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert backends.generation.recorder.named("SubmitGeneration") == []


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("PATCH", "/{job}", b'{"action": "delete", "action": "cancel"}'),
        ("POST", "", b'{"mode": "sculpt", "mode": "imagine", "prompt": "a sunny room"}'),
    ],
    ids=["cancel", "submit"],
)
async def test_a_repeated_json_member_is_refused(
    client: httpx.AsyncClient, backends, identity, method: str, path: str, raw: bytes
) -> None:
    """A reader that keeps the first of two members (a proxy, a log) would see another
    request than the last one wins: refused, as a repeated form field is."""
    job = backends.generation.add_job(identity.owner)
    response = await client.request(
        method,
        "/api/v1/generations" + path.format(job=job.id),
        content=raw,
        headers={**identity.headers(), "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "A JSON member is repeated.",
    }
    assert backends.generation.recorder.named("SubmitGeneration") == []
    assert backends.generation.recorder.named("CancelGeneration") == []
