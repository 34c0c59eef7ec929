"""Bearer JWT checks: every bad token is the same 401 with WWW-Authenticate."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from edge_api.auth import TokenVerifier

SECRET = "edge-test-secret-0123456789abcdef-0123456789"
OWNER = "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
LATER = timedelta(minutes=10)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(algorithm: str, key: bytes | None, digest: str = "sha256") -> str:
    """A token assembled by hand, for algorithms PyJWT would not produce with our key."""
    now = int(datetime.now(UTC).timestamp())
    header = {"alg": algorithm, "typ": "JWT"}
    claims = {"sub": OWNER, "aud": "authenticated", "role": "authenticated", "exp": now + 300}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


# Each case: how to build the Authorization header from the identity fixture.
BAD_AUTHORIZATION: dict[str, Callable[[Any], str | None]] = {
    "missing": lambda ident: None,
    "not bearer": lambda ident: "Basic dXNlcjpwYXNz",
    "bearer without token": lambda ident: "Bearer ",
    "malformed": lambda ident: "Bearer not.a.jwt",
    "huge": lambda ident: "Bearer " + "x" * 20_000,
    "expired": lambda ident: "Bearer " + ident.token(lifetime=timedelta(minutes=-5)),
    "no exp": lambda ident: "Bearer " + ident.token(exp=None),
    "not yet valid (nbf)": lambda ident: "Bearer " + ident.token(nbf=datetime.now(UTC) + LATER),
    "issued in the future (iat)": lambda ident: (
        "Bearer " + ident.token(iat=datetime.now(UTC) + LATER)
    ),
    "wrong audience": lambda ident: "Bearer " + ident.token(aud="anon"),
    "no audience": lambda ident: "Bearer " + ident.token(aud=None),
    "wrong secret": lambda ident: (
        "Bearer " + ident.token(secret="another-secret-0123456789abcdef-012345")
    ),
    "alg none": lambda ident: "Bearer " + _hand_made("none", None),
    "RS256 header, HMAC with the secret": lambda ident: (
        "Bearer " + _hand_made("RS256", SECRET.encode())
    ),
    "HS512 with the secret": lambda ident: (
        "Bearer " + _hand_made("HS512", SECRET.encode(), "sha512")
    ),
    "non-UUID sub": lambda ident: "Bearer " + ident.token("user-42"),
    "UUID without dashes": lambda ident: "Bearer " + ident.token(OWNER.replace("-", "")),
    "no sub": lambda ident: "Bearer " + ident.token(None),
    "no role": lambda ident: "Bearer " + ident.token(role=None),
    "role anon": lambda ident: "Bearer " + ident.token(role="anon"),
    "role service_role": lambda ident: "Bearer " + ident.token(role="service_role"),
    "anonymous user": lambda ident: "Bearer " + ident.token(is_anonymous=True),
    "is_anonymous not a boolean": lambda ident: "Bearer " + ident.token(is_anonymous="false"),
}


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
async def test_bad_tokens_get_401(client: httpx.AsyncClient, identity, backends, case: str) -> None:
    value = BAD_AUTHORIZATION[case](identity)
    headers = {"Authorization": value} if value is not None else {}

    response = await client.get("/api/v1/usage", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {
        "error": {"code": "UNAUTHORIZED", "message": "Authentication required."}
    }
    assert response.headers["X-Request-ID"]
    assert backends.usage.recorder.calls == []


async def test_every_api_route_requires_a_token(client: httpx.AsyncClient, backends) -> None:
    job_path = f"/api/v1/generations/{OWNER}"
    for method, path in [
        ("POST", "/api/v1/generations"),
        ("GET", job_path),
        ("PATCH", job_path),
        ("DELETE", job_path),
        ("GET", "/api/v1/usage"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, (method, path)
    assert backends.generation.recorder.calls == []


async def test_valid_token_reaches_the_backend_as_owner(
    client: httpx.AsyncClient, identity, backends
) -> None:
    token = identity.token(identity.owner.upper(), nbf=datetime.now(UTC) - timedelta(seconds=5))

    response = await client.get("/api/v1/usage", headers=identity.headers(token))

    assert response.status_code == 200
    (call,) = backends.usage.recorder.calls
    assert call.request.owner_id == identity.owner  # canonical lowercase


async def test_leeway_tolerates_small_clock_skew_only() -> None:
    verifier = TokenVerifier(secret=SECRET, jwks=None, leeway_seconds=30)
    now = datetime.now(UTC)

    def token(exp: datetime) -> str:
        claims = {"sub": OWNER, "aud": "authenticated", "role": "authenticated", "exp": exp}
        return jwt.encode(claims, SECRET, "HS256")

    assert (await verifier.caller(token(now - timedelta(seconds=10)))).owner_id == OWNER
    with pytest.raises(Exception, match="Authentication required"):
        await verifier.caller(token(now - timedelta(seconds=45)))


async def test_the_caller_carries_when_its_token_stops_being_accepted() -> None:
    """``exp`` plus the leeway (what ends an SSE stream); an ``exp`` PyJWT takes as an
    integer but no float holds (10**400) means no expiry, not a 500."""
    verifier = TokenVerifier(secret=SECRET, jwks=None, leeway_seconds=30)
    claims = {"sub": OWNER, "aud": "authenticated", "role": "authenticated"}

    caller = await verifier.caller(jwt.encode({**claims, "exp": 2_000_000_000}, SECRET, "HS256"))
    endless = await verifier.caller(jwt.encode({**claims, "exp": 10**400}, SECRET, "HS256"))

    assert caller.expires_at == 2_000_000_030
    assert endless.expires_at == float("inf")


async def test_a_real_user_with_is_anonymous_false_is_accepted(
    client: httpx.AsyncClient, identity, backends
) -> None:
    response = await client.get(
        "/api/v1/usage", headers=identity.headers(identity.token(is_anonymous=False))
    )

    assert response.status_code == 200
    assert len(backends.usage.recorder.calls) == 1


ISSUER = "https://project.supabase.co/auth/v1"


@pytest.mark.parametrize(
    ("iss", "status"), [(ISSUER, 200), ("https://other.supabase.co/auth/v1", 401), (None, 401)]
)
async def test_issuer_is_pinned_when_configured(
    edge_clients, make_settings, identity, backends, iss: str | None, status: int
) -> None:
    client = await edge_clients.open(make_settings(AUTH_JWT_ISSUER=ISSUER))

    response = await client.get("/api/v1/usage", headers=identity.headers(identity.token(iss=iss)))

    assert response.status_code == status


async def test_zero_plan_anonymous_user_sees_an_empty_plan(
    edge_clients, make_settings, identity, backends
) -> None:
    client = await edge_clients.open(make_settings(AUTH_ANONYMOUS_USERS="zero_plan"))
    headers = identity.headers(identity.token(is_anonymous=True))

    response = await client.get("/api/v1/usage", headers=headers)

    assert response.status_code == 200
    body = response.json()
    assert (body["plan"], body["monthlyGenerations"], body["used"], body["remaining"]) == (
        "anonymous",
        0,
        0,
        0,
    )
    assert body["periodStart"] < body["periodEnd"]
    assert backends.usage.recorder.calls == []


async def test_zero_plan_anonymous_user_cannot_submit(
    edge_clients, make_settings, identity, backends
) -> None:
    client = await edge_clients.open(make_settings(AUTH_ANONYMOUS_USERS="zero_plan"))
    headers = identity.headers(identity.token(is_anonymous=True))

    response = await client.post(
        "/api/v1/generations", headers=headers, json={"mode": "imagine", "prompt": "a calm room"}
    )

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "LIMIT_EXCEEDED"
    usage = await client.get("/api/v1/usage", headers=headers)
    assert response.json()["error"]["periodEnd"] == usage.json()["periodEnd"]
    assert backends.generation.recorder.calls == []
    assert backends.usage.recorder.calls == []


async def test_zero_plan_leaves_real_users_alone(
    edge_clients, make_settings, identity, backends
) -> None:
    client = await edge_clients.open(make_settings(AUTH_ANONYMOUS_USERS="zero_plan"))

    response = await client.get("/api/v1/usage", headers=identity.headers())

    assert response.status_code == 200
    assert response.json()["monthlyGenerations"] == 10  # the usage backend's answer
