"""Bearer JWT authentication: HS256 user tokens whose ``sub`` is the owner id.

Tokens are Supabase-style: ``aud`` = ``authenticated``, ``exp`` required,
``nbf`` / ``iat`` honoured with a small leeway. Only HS256 is accepted, so
``alg: none`` and RS/HS confusion are refused by construction. Tokens are never
logged; every failure is the same 401.
"""

from __future__ import annotations

import re
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_api.state import State
from kit.errors import Unauthorized
from kit.logging import bind_context

AUDIENCE = "authenticated"
ALGORITHMS = ["HS256"]
# Real tokens are about 1 KB; anything far larger is not one of ours.
MAX_TOKEN_CHARS = 8 * 1024
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="HS256 user token: `sub` = user id (UUID), `aud` = `authenticated`, `exp`.",
)


class TokenVerifier:
    """Checks a token and returns the verified owner id."""

    def __init__(self, secret: str, leeway_seconds: float) -> None:
        self._secret = secret
        self._leeway = leeway_seconds

    def owner_id(self, token: str) -> str:
        """The token's ``sub`` as a canonical lowercase UUID; Unauthorized otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized()
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                leeway=self._leeway,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized() from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not _UUID.fullmatch(subject):
            raise Unauthorized()
        return subject.lower()


async def current_owner(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    """FastAPI dependency: the authenticated owner id (binds it for logs)."""
    if credentials is None:
        raise Unauthorized()
    owner_id = state.token_verifier.owner_id(credentials.credentials)
    request.state.owner_id = owner_id
    bind_context(ownerId=owner_id)
    return owner_id


Owner = Annotated[str, Depends(current_owner)]
