"""What ``--check-config`` shows of a value: secrets by type or name, URL passwords."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from kit.opscli import MASK, mask_url, masked


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+asyncpg://app:pw@db:5432/x", "postgresql+asyncpg://app:***@db:5432/x"),
        ("postgresql://app:p@ss@db/x", "postgresql://app:***@db/x"),
        (
            "postgresql://app@db/x?password=pw&sslmode=require",
            "postgresql://app@db/x?password=***&sslmode=require",
        ),
        ("https://api.example.com/v1?api_key=k", "https://api.example.com/v1?api_key=***"),
        ("http://127.0.0.1:8090", "http://127.0.0.1:8090"),
        ("not a url", "not a url"),
    ],
)
def test_a_url_keeps_its_shape_and_loses_its_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_secrets_are_masked_by_type_and_by_name() -> None:
    value = {
        "token": "abc",
        "S3_ACCESS_KEY": "ak",
        "db": SecretStr("postgresql://u:pw@h/d"),
        "opaque": SecretStr("r8_xyz"),
        "nested": [{"password": "pw", "port": 1}],
        "absent": None,
    }

    assert masked(value) == {
        "token": MASK,
        "S3_ACCESS_KEY": MASK,
        "db": "postgresql://u:***@h/d",
        "opaque": MASK,
        "nested": [{"password": MASK, "port": 1}],
        "absent": None,
    }
