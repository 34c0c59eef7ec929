"""Bearer JWT authentication: Supabase-style user tokens whose ``sub`` is the owner id.

Two kinds of key, usable together: HS256 with ``AUTH_JWT_SECRET``, and RS256 / ES256
with the keys of ``AUTH_JWKS_URL`` (picked by ``kid``). The algorithm a token may use
comes from the key, never from the token alone: an HS256 token is checked only
against the secret, an RS/ES token only against a JWKS key of that type, so
``alg: none`` and HS/RS confusion are refused by construction.

Claims: ``exp`` required, ``aud`` = ``authenticated``, ``role`` = ``authenticated``,
``sub`` a UUID, ``iss`` pinned when ``AUTH_JWT_ISSUER`` is set, ``nbf`` / ``iat``
honoured with a small leeway. Anonymous users (``is_anonymous``) are refused unless
``AUTH_ANONYMOUS_USERS=zero_plan``. Tokens are never logged; every failure is the
same 401.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_api.jwks import JwksKeys
from edge_api.state import State
from kit.errors import Unauthorized
from kit.ids import is_canonical_uuid
from kit.logging import bind_context

AUDIENCE = "authenticated"
ROLE = "authenticated"
HMAC_ALGORITHM = "HS256"
# Real tokens are about 1 KB; anything far larger is not one of ours.
MAX_TOKEN_CHARS = 8 * 1024

bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="User token (HS256, or RS256/ES256 from the JWKS): `sub` = user id (UUID), "
    "`aud` = `authenticated`, `role` = `authenticated`, `exp`.",
)


@dataclass(frozen=True)
class Caller:
    """Who a verified token names."""

    owner_id: str
    # Only with AUTH_ANONYMOUS_USERS=zero_plan: a Supabase anonymous user, no generations.
    anonymous: bool = False
    # When the token stops being accepted (its ``exp`` plus the leeway, Unix seconds):
    # what outlives the request, a Server-Sent Events stream, sends nothing after it.
    expires_at: float = math.inf


class TokenVerifier:
    """Checks a token and returns the verified caller."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks: JwksKeys | None,
        leeway_seconds: float,
        issuer: str | None = None,
        allow_anonymous: bool = False,
    ) -> None:
        self._secret = secret
        self._jwks = jwks
        self._leeway = leeway_seconds
        self._issuer = issuer
        self._allow_anonymous = allow_anonymous

    async def caller(self, token: str) -> Caller:
        """The token's caller (``sub`` as a lowercase UUID); Unauthorized otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized()
        try:
            key, algorithm = await self._key_for(jwt.get_unverified_header(token))
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required_claims()},
            )
        except jwt.PyJWTError:
            raise Unauthorized() from None
        return self._caller(claims)

    def _required_claims(self) -> list[str]:
        return ["exp", "aud", "sub", "iss"] if self._issuer else ["exp", "aud", "sub"]

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if algorithm == HMAC_ALGORITHM and self._secret is not None:
            return self._secret, HMAC_ALGORITHM
        kid = header.get("kid")
        if self._jwks is None or not isinstance(kid, str):
            raise Unauthorized()
        key = await self._jwks.key(kid)
        # The key's own type decides the algorithm; the header must agree with it.
        if key is None or key.algorithm_name != algorithm:
            raise Unauthorized()
        return key.key, key.algorithm_name

    def _caller(self, claims: dict[str, Any]) -> Caller:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not is_canonical_uuid(subject):
            raise Unauthorized()
        if claims.get("role") != ROLE:
            raise Unauthorized()
        # Anything but an explicit false counts as anonymous: fail closed.
        anonymous = claims.get("is_anonymous", False) is not False
        if anonymous and not self._allow_anonymous:
            raise Unauthorized()
        return Caller(subject.lower(), anonymous, _expiry(claims["exp"]) + self._leeway)


def _expiry(exp: Any) -> float:
    """``exp`` (required; PyJWT accepted it as an integer) as Unix seconds; an integer past
    what a float holds is no expiry at all."""
    try:
        return float(exp)
    except OverflowError:
        return math.inf


async def current_caller(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    """FastAPI dependency: the authenticated caller (binds the owner id for logs)."""
    if credentials is None:
        raise Unauthorized()
    return await _verified(request, state, credentials.credentials)


async def stream_caller(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    access_token: Annotated[
        str | None,
        Query(description="The bearer token, for EventSource (which cannot send headers)."),
    ] = None,
) -> Caller:
    """:func:`current_caller`, or, for a browser's ``EventSource`` (which cannot send
    headers), the token in the ``access_token`` query parameter (never logged)."""
    token = credentials.credentials if credentials is not None else access_token
    if not token:
        raise Unauthorized()
    return await _verified(request, state, token)


async def _verified(request: Request, state: State, token: str) -> Caller:
    caller = await state.token_verifier.caller(token)
    request.state.owner_id = caller.owner_id
    bind_context(ownerId=caller.owner_id)
    return caller


async def current_owner(caller: Annotated[Caller, Depends(current_caller)]) -> str:
    """FastAPI dependency: the authenticated owner id."""
    return caller.owner_id


Authenticated = Annotated[Caller, Depends(current_caller)]
StreamAuthenticated = Annotated[Caller, Depends(stream_caller)]
Owner = Annotated[str, Depends(current_owner)]
