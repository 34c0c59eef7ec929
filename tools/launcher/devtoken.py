"""A ready-to-use user token for the local system (Supabase-style HS256 JWT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

# A fixed id, so the dev user's jobs and usage survive restarts of `make run`.
DEV_USER_ID = "0d5e1f4a-6c2b-4f7e-9a3d-8b1c2e3f4a5b"
AUDIENCE = "authenticated"
DEV_TOKEN_LIFETIME = timedelta(days=30)


def make_dev_token(
    secret: str,
    *,
    user_id: str = DEV_USER_ID,
    lifetime: timedelta = DEV_TOKEN_LIFETIME,
    now: datetime | None = None,
) -> str:
    """An HS256 token for ``user_id`` signed with ``secret``, valid for ``lifetime``."""
    issued = now or datetime.now(UTC)
    claims = {
        "sub": user_id,
        "aud": AUDIENCE,
        "role": AUDIENCE,
        "iat": int(issued.timestamp()),
        "exp": int((issued + lifetime).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")
