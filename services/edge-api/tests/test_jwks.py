"""RS256 / ES256 tokens against a REAL JWKS HTTP server (uvicorn in a thread, port 0).

The server counts its hits, rotates keys and goes down; the edge's refetch clock is
a test clock moved forward instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge_api.app import create_app, token_verifier
from edge_api.clients import open_clients
from edge_api.jwks import JwksKeys
from kit.dev_values import DEV_JWT_SECRET
from testkit.servers import ThreadedUvicorn

OWNER = "7d1b6d3e-0b8a-4a0e-9b7e-1f2d3c4b5a69"
ISSUER = "https://project.supabase.co/auth/v1"
REFETCH_SECONDS = 30.0
MAX_AGE_SECONDS = 600.0


@dataclass
class SigningKey:
    """A private key, its kid and the public JWK a JWKS serves for it."""

    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        public = codec.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def token(self, kid: str | None = None, **overrides: Any) -> str:
        return signed(self.private, self.algorithm, kid or self.kid, **overrides)


def signed(key: Any, algorithm: str, kid: str, **overrides: Any) -> str:
    """A user token; keyword claims override (None removes) the defaults."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": OWNER,
        "aud": "authenticated",
        "role": "authenticated",
        "iss": ISSUER,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class JwksServer:
    """Serves ``{"keys": [...]}`` from ``documents`` (JWK dicts) and counts requests."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    server: ThreadedUvicorn | None = None
    # Set: each answer waits for it (a host that is slow or black-holed).
    release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.base_url}/auth/v1/.well-known/jwks.json"

    async def _serve(self, _: Request) -> JSONResponse:
        self.hits += 1
        if self.release is not None:
            await self.release.wait()
        return JSONResponse({"keys": list(self.documents)})

    def start(self) -> JwksServer:
        app = Starlette(routes=[Route("/auth/v1/.well-known/jwks.json", self._serve)])
        self.server = ThreadedUvicorn(app, name="jwks").start()
        return self

    def stop(self) -> None:
        """A real outage: the port stops answering."""
        assert self.server is not None
        self.server.stop()


@dataclass
class Clock:
    """Monotonic seconds that tests move forward."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rs_key() -> SigningKey:
    return rsa_key("rs-1")


@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return ec_key("es-1")


@pytest.fixture
def jwks_server(rs_key: SigningKey, es_key: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer([rs_key.jwk(), es_key.jwk()]).start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


Opener = Callable[..., Any]


@pytest.fixture
def made_keys() -> list[JwksKeys]:
    """The key caches of the edges ``open_edge`` opened, in order."""
    return []


@pytest.fixture
def open_edge(
    edge_clients, make_settings, jwks_server: JwksServer, clock: Clock, made_keys: list[JwksKeys]
) -> Opener:
    """An edge that trusts the JWKS server (and, unless told, no HS256 secret)."""

    async def open_edge(**overrides: Any) -> httpx.AsyncClient:
        values = {"AUTH_JWT_SECRET": None, "AUTH_JWKS_URL": jwks_server.url} | overrides
        settings = make_settings(AUTH_JWT_ISSUER=ISSUER, **values)

        def with_test_clock(app: FastAPI) -> None:
            state = app.state.edge
            state.jwks = JwksKeys(
                jwks_server.url,
                timeout_seconds=2,
                min_refetch_seconds=REFETCH_SECONDS,
                max_age_seconds=MAX_AGE_SECONDS,
                clock=clock,
            )
            made_keys.append(state.jwks)
            state.token_verifier = token_verifier(settings, state.jwks)

        client = await edge_clients.open(settings, prepare=with_test_clock)
        return cast(httpx.AsyncClient, client)

    return open_edge


async def usage(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get("/api/v1/usage", headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 401:
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
    return response.status_code


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_rs256_and_es256_tokens_are_accepted(
    open_edge: Opener, backends, jwks_server: JwksServer, rs_key, es_key, kind: str
) -> None:
    key = rs_key if kind == "RS256" else es_key
    client = await open_edge()

    assert await usage(client, key.token()) == 200
    assert await usage(client, key.token()) == 200

    assert jwks_server.hits == 1  # fetched once, then cached
    (call,) = backends.usage.recorder.calls[:1]
    assert call.request.owner_id == OWNER


async def test_a_rotated_in_key_is_accepted_after_a_refetch(
    open_edge: Opener, backends, jwks_server: JwksServer, rs_key, clock: Clock
) -> None:
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    new_key = rsa_key("rs-2")
    jwks_server.documents.append(new_key.jwk())

    clock.now += REFETCH_SECONDS
    assert await usage(client, new_key.token()) == 200

    assert jwks_server.hits == 2


async def test_unknown_kid_floods_refetch_at_most_once_per_interval(
    open_edge: Opener, backends, jwks_server: JwksServer, rs_key, clock: Clock
) -> None:
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200  # the first fetch

    for _ in range(3):
        clock.now += REFETCH_SECONDS
        for _ in range(20):
            assert await usage(client, rs_key.token(kid=str(uuid.uuid4()))) == 401
        clock.now += REFETCH_SECONDS / 2  # still inside the interval: no fetch
        assert await usage(client, rs_key.token(kid=str(uuid.uuid4()))) == 401

    assert jwks_server.hits == 1 + 3
    assert await usage(client, rs_key.token()) == 200  # the cached key still works


async def test_a_key_removed_from_the_jwks_stops_working_once_the_cache_is_old(
    open_edge: Opener,
    backends,
    jwks_server: JwksServer,
    rs_key,
    es_key,
    clock: Clock,
    made_keys: list[JwksKeys],
) -> None:
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    jwks_server.documents[:] = [es_key.jwk()]  # rs-1 revoked

    clock.now += MAX_AGE_SECONDS - 1
    assert await usage(client, rs_key.token()) == 200  # still fresh: no fetch
    assert jwks_server.hits == 1
    clock.now += 1
    # Old: answered from the cache while the keys are fetched again behind it.
    assert await usage(client, rs_key.token()) == 200
    await made_keys[-1].revalidated()

    assert jwks_server.hits == 2
    assert await usage(client, rs_key.token()) == 401
    assert await usage(client, es_key.token()) == 200


async def test_a_slow_jwks_host_holds_no_request_whose_key_is_cached(
    open_edge: Opener,
    backends,
    jwks_server: JwksServer,
    rs_key,
    es_key,
    clock: Clock,
    made_keys: list[JwksKeys],
) -> None:
    """Keys past their age are fetched again behind the requests: while the host hangs,
    tokens whose keys are cached are answered at once, and one fetch is under way."""
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    jwks_server.release = asyncio.Event()  # the host stops answering (it still accepts)
    clock.now += MAX_AGE_SECONDS

    async with asyncio.timeout(1.5):  # the fetch's own timeout is 2 s
        statuses = await asyncio.gather(
            *(usage(client, key.token()) for key in [rs_key, es_key] * 10)
        )

    assert set(statuses) == {200}
    assert jwks_server.hits == 2
    jwks_server.release.set()
    await made_keys[-1].revalidated()
    assert jwks_server.hits == 2


async def test_an_outage_keeps_even_old_cached_keys(
    open_edge: Opener, backends, jwks_server: JwksServer, rs_key, clock: Clock
) -> None:
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    jwks_server.stop()

    for _ in range(3):
        clock.now += MAX_AGE_SECONDS
        assert await usage(client, rs_key.token()) == 200

    clock.now += 1  # inside the refetch interval: no new attempt, the key still works
    assert await usage(client, rs_key.token()) == 200


async def test_an_outage_keeps_cached_keys_and_refuses_unknown_kids(
    open_edge: Opener, backends, jwks_server: JwksServer, rs_key, es_key, clock: Clock
) -> None:
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    jwks_server.stop()
    clock.now += REFETCH_SECONDS

    assert await usage(client, rogue_key := rsa_key("rs-rogue").token()) == 401
    assert await usage(client, rs_key.token()) == 200
    assert await usage(client, es_key.token()) == 200
    assert await usage(client, rogue_key) == 401


async def test_a_failing_jwks_keeps_cached_keys(
    open_edge: Opener, backends, jwks_server: JwksServer, rs_key, clock: Clock
) -> None:
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    jwks_server.documents[:] = [{"kty": "oct", "k": "c2VjcmV0", "kid": "junk"}]

    clock.now += REFETCH_SECONDS
    assert await usage(client, rs_key.token(kid="junk")) == 401

    assert jwks_server.hits == 2
    assert await usage(client, rs_key.token()) == 200


MALFORMED_KEYS = [
    {"kty": "RSA", "kid": "no-modulus", "e": "AQAB"},
    {"kty": "RSA", "kid": "bad-modulus", "n": "!!", "e": "AQAB"},
    {"kty": "EC", "crv": "P-256", "kid": "no-y", "x": "AAAA"},
]


@pytest.mark.parametrize("bad", MALFORMED_KEYS, ids=[key["kid"] for key in MALFORMED_KEYS])
async def test_a_malformed_key_beside_good_ones_is_skipped(
    open_edge: Opener,
    backends,
    jwks_server: JwksServer,
    rs_key,
    clock: Clock,
    bad: Any,
    made_keys: list[JwksKeys],
) -> None:
    """At start and on every refetch: the good keys still verify, the bad one never."""
    jwks_server.documents.append(bad)
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    assert await usage(client, rs_key.token(kid=bad["kid"])) == 401

    clock.now += MAX_AGE_SECONDS  # stale: the next request refetches the same document
    assert await usage(client, rs_key.token()) == 200
    await made_keys[-1].revalidated()
    assert jwks_server.hits == 2
    assert await usage(client, rs_key.token()) == 200
    assert await usage(client, rs_key.token(kid=bad["kid"])) == 401


def _hs256(secret: bytes | str, kid: str) -> str:
    """Made by hand: PyJWT itself refuses to HMAC with a PEM key."""
    key = secret.encode() if isinstance(secret, str) else secret
    header, claims, _ = signed(ec.generate_private_key(ec.SECP256R1()), "ES256", kid).split(".")
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signature = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_pem(key: SigningKey) -> bytes:
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cast(bytes, pem)  # private is Any (RSA or EC), so mypy cannot see bytes


CONFUSED: dict[str, Callable[[SigningKey, SigningKey], str]] = {
    # The classic: HMAC keyed with the RSA public key a verifier would use for RS256.
    "HS256 keyed with the RSA public PEM": lambda rs, es: _hs256(_public_pem(rs), rs.kid),
    "HS256 keyed with the EC public PEM": lambda rs, es: _hs256(_public_pem(es), es.kid),
    "ES256 header with the RSA key's kid": lambda rs, es: signed(es.private, "ES256", rs.kid),
    "RS256 header with the EC key's kid": lambda rs, es: signed(rs.private, "RS256", es.kid),
    "RS512 with the RSA key": lambda rs, es: signed(rs.private, "RS512", rs.kid),
    "PS256 with the RSA key": lambda rs, es: signed(rs.private, "PS256", rs.kid),
}


@pytest.mark.parametrize("case", list(CONFUSED))
async def test_no_algorithm_confusion(
    open_edge: Opener, backends, rs_key, es_key, case: str
) -> None:
    client = await open_edge()

    assert await usage(client, CONFUSED[case](rs_key, es_key)) == 401
    assert backends.usage.recorder.calls == []


async def test_with_only_a_jwks_no_hs256_token_is_accepted(
    open_edge: Opener, backends, rs_key
) -> None:
    client = await open_edge()

    assert await usage(client, _hs256(DEV_JWT_SECRET, rs_key.kid)) == 401


async def test_secret_and_jwks_work_side_by_side(
    open_edge: Opener, backends, identity, rs_key
) -> None:
    client = await open_edge(AUTH_JWT_SECRET=identity.secret)

    assert await usage(client, identity.token(iss=ISSUER)) == 200
    assert await usage(client, rs_key.token()) == 200
    assert await usage(client, _hs256(_public_pem(rs_key), rs_key.kid)) == 401


BAD_CLAIMS: dict[str, dict[str, Any]] = {
    "wrong issuer": {"iss": "https://evil.example/auth/v1"},
    "no issuer": {"iss": None},
    "no role": {"role": None},
    "role anon": {"role": "anon"},
    "anonymous user": {"is_anonymous": True},
    "expired": {"exp": datetime.now(UTC) - timedelta(minutes=5)},
    "wrong audience": {"aud": "anon"},
    "sub not a UUID": {"sub": "admin"},
}


@pytest.mark.parametrize("case", list(BAD_CLAIMS))
@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_bad_claims_are_refused(
    open_edge: Opener, backends, rs_key, es_key, kind: str, case: str
) -> None:
    key = rs_key if kind == "RS256" else es_key
    client = await open_edge()

    assert await usage(client, key.token(**BAD_CLAIMS[case])) == 401
    assert backends.usage.recorder.calls == []


async def test_the_lifespan_fetches_at_start_and_survives_an_outage(
    make_settings, runtime_config, jwks_server: JwksServer
) -> None:
    settings = make_settings(AUTH_JWKS_URL=jwks_server.url)
    clients = open_clients(settings)
    try:
        app = create_app(settings, runtime_config, clients)
        async with app.router.lifespan_context(app):
            assert jwks_server.hits == 1
            assert app.state.edge.jwks.kids == {"rs-1", "es-1"}
        jwks_server.stop()
        app = create_app(settings, runtime_config, clients)
        async with app.router.lifespan_context(app):  # logs, does not crash
            assert app.state.edge.jwks.kids == frozenset()
    finally:
        await clients.close()


async def test_concurrent_unknown_kids_share_one_refetch(
    open_edge: Opener, backends, jwks_server: JwksServer, rs_key, clock: Clock
) -> None:
    client = await open_edge()
    assert await usage(client, rs_key.token()) == 200
    clock.now += REFETCH_SECONDS

    statuses = await asyncio.gather(
        *(usage(client, rs_key.token(kid=str(uuid.uuid4()))) for _ in range(30))
    )

    assert set(statuses) == {401}
    assert jwks_server.hits == 2
