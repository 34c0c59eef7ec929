"""Every token that is not a valid HS256 user token is a 401 with the JSON body.

Forgeries are built by hand (header, payload, signature), so the edge's verifier is
the only thing between them and the API: ``alg: none``, RS256, the HS/RS key
confusion (an HS256 token keyed with the RSA public key PEM), other HMAC sizes,
tampered payloads, wrong secrets and every claim that must be checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from edge_api.settings import DEV_JWT_SECRET
from testkit.stack import Stack
from tests.badinput.checks import assert_error, assert_nothing_left
from tests.e2e.harness import User

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "aud": "authenticated",
        "iat": now,
        "exp": now + 3600,
        "role": "authenticated",
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> bytes:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()


def hmac_token(
    claims: dict[str, Any], key: bytes = DEV_JWT_SECRET.encode(), alg: str = "HS256"
) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = _unsigned({"alg": alg, "typ": "JWT"}, claims)
    return f"{signing_input.decode()}.{_b64(hmac.new(key, signing_input, digest).digest())}"


def rs256_token(claims: dict[str, Any]) -> str:
    signing_input = _unsigned({"alg": "RS256", "typ": "JWT"}, claims)
    signature = RSA_KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{_b64(signature)}"


def none_token(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{_unsigned({'alg': alg, 'typ': 'JWT'}, claims).decode()}."


def tampered(claims: dict[str, Any]) -> str:
    """A valid token for one user whose payload now names another."""
    header, _, signature = hmac_token(claims).split(".")
    forged = {**claims, "sub": str(uuid.uuid4())}
    return f"{header}.{_b64(json.dumps(forged).encode())}.{signature}"


Maker = Callable[[uuid.UUID], str]
BAD_TOKENS: dict[str, Maker] = {
    "alg_none": lambda u: none_token(_claims(u)),
    "alg_None": lambda u: none_token(_claims(u), alg="None"),
    "alg_none_with_hs256_signature": lambda u: (
        none_token(_claims(u)) + hmac_token(_claims(u)).rsplit(".", 1)[1]
    ),
    "rs256_signed_with_private_key": lambda u: rs256_token(_claims(u)),
    "hs256_keyed_with_rsa_public_pem": lambda u: hmac_token(_claims(u), key=PUBLIC_PEM),
    "hs512_right_secret": lambda u: hmac_token(_claims(u), alg="HS512"),
    "hs384_right_secret": lambda u: hmac_token(_claims(u), alg="HS384"),
    "wrong_secret": lambda u: hmac_token(_claims(u), key=b"another-secret-0123456789abcdef-xyz"),
    "empty_secret": lambda u: hmac_token(_claims(u), key=b""),
    "tampered_sub": lambda u: tampered(_claims(u)),
    "expired": lambda u: hmac_token(_claims(u, exp=int(time.time()) - 120)),
    "not_yet_valid": lambda u: hmac_token(_claims(u, nbf=int(time.time()) + 600)),
    "wrong_audience": lambda u: hmac_token(_claims(u, aud="anon")),
    "audience_list_without_ours": lambda u: hmac_token(_claims(u, aud=["service", "admin"])),
    "no_audience": lambda u: hmac_token(_claims(u, aud=None)),
    "no_expiry": lambda u: hmac_token(_claims(u, exp=None)),
    "expiry_not_a_number": lambda u: hmac_token(_claims(u, exp="tomorrow")),
    "no_subject": lambda u: hmac_token(_claims(u, sub=None)),
    "subject_not_uuid": lambda u: hmac_token(_claims(u, sub="admin")),
    "subject_traversal": lambda u: hmac_token(_claims(u, sub="../" + str(u))),
    "subject_braced_uuid": lambda u: hmac_token(_claims(u, sub="{" + str(u) + "}")),
    "subject_number": lambda u: hmac_token(_claims(u, sub=12345)),
    "subject_uuid_with_newline": lambda u: hmac_token(_claims(u, sub=str(u) + "\n")),
    "no_role": lambda u: hmac_token(_claims(u, role=None)),
    "role_anon": lambda u: hmac_token(_claims(u, role="anon")),
    "role_service_role": lambda u: hmac_token(_claims(u, role="service_role")),
    "anonymous_user": lambda u: hmac_token(_claims(u, is_anonymous=True)),
    "two_segments": lambda u: hmac_token(_claims(u)).rsplit(".", 1)[0],
    "garbage": lambda u: "not-a-jwt",
    "huge": lambda u: hmac_token(_claims(u, pad="x" * 20000)),
}


def _requests(api: str, job_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", f"{api}/usage", {}),
        ("POST", f"{api}/generations", {"json": {"mode": "imagine", "prompt": "A sunny room"}}),
        ("GET", f"{api}/generations/{job_id}", {}),
        ("PATCH", f"{api}/generations/{job_id}", {"json": {"action": "cancel"}}),
        ("DELETE", f"{api}/generations/{job_id}", {}),
    ]


def _assert_401(response: httpx.Response) -> None:
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers.get("www-authenticate") == "Bearer"


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_401_everywhere(stack: Stack, user: User, case: str) -> None:
    token = BAD_TOKENS[case](user.id)
    for method, url, kwargs in _requests(stack.api, str(uuid.uuid4())):
        response = await user.client.request(
            method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )
        _assert_401(response)
    await assert_nothing_left(stack, user)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Token abc"},
        {"Cookie": "sb-access-token=abc"},
    ],
)
async def test_missing_or_malformed_credentials_are_401(
    stack: Stack, user: User, headers: dict[str, str]
) -> None:
    for method, url, kwargs in _requests(stack.api, str(uuid.uuid4())):
        _assert_401(await user.client.request(method, url, headers=headers, **kwargs))
    await assert_nothing_left(stack, user)


async def test_a_token_in_the_query_string_is_not_accepted(stack: Stack, user: User) -> None:
    token = user.headers["Authorization"].removeprefix("Bearer ")
    for name in ("access_token", "token", "jwt"):
        _assert_401(await user.client.get(f"{stack.api}/usage", params={name: token}))


async def test_the_genuine_token_works(stack: Stack, user: User) -> None:
    """The hand-made HS256 token is accepted: the refusals above are about the forgeries."""
    token = hmac_token(_claims(user.id))
    response = await user.client.get(
        f"{stack.api}/usage", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
