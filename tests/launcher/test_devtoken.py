"""The dev token printed by `make run` is a valid Supabase-style user token."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from launcher.config import DEV_JWT_SECRET
from launcher.devtoken import DEV_USER_ID, make_dev_token


def test_the_dev_token_decodes_with_the_secret_and_has_the_right_claims() -> None:
    now = datetime.now(UTC)
    token = make_dev_token(DEV_JWT_SECRET)

    claims = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated")

    assert claims["sub"] == DEV_USER_ID
    assert uuid.UUID(claims["sub"]).version == 4
    assert claims["aud"] == "authenticated"
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    assert timedelta(days=29, hours=23) < expires - now <= timedelta(days=30, seconds=5)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_the_dev_token_is_rejected_with_another_secret() -> None:
    token = make_dev_token("another-secret-0123456789-0123456789")

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated")


def test_an_expired_dev_token_is_rejected() -> None:
    token = make_dev_token(DEV_JWT_SECRET, now=datetime.now(UTC) - timedelta(days=31))

    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated")
