"""In production (the default APP_ENV) every service refuses to start without its secrets.

A secret that is missing, published in this repository or a template placeholder
stops the settings from building, and the message names the variable; the real
``python -m`` entry points exit non-zero with that name and no traceback.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from edge_api.clients import open_clients
from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from kit.dev_values import (
    DEV_JWT_SECRET,
    DEV_POSTGRES_PASSWORD,
    DEV_REPLICATE_TOKEN,
    DEV_S3_SECRET_KEY,
    DEV_WEBHOOK_SECRET,
)
from kit.service_keys import generate_key_pair, write_private_key
from usage.settings import UsageSettings
from webhook_gateway.settings import GatewaySettings

JWKS = "https://project.supabase.co/auth/v1/.well-known/jwks.json"
OWN_JWT_SECRET = "an-operators-own-jwt-secret-5c1e9a7b3d2f4086"
OWN_WEBHOOK_SECRET = "whsec_b3BlcmF0b3JzLW93bi13ZWJob29rLXNlY3JldA=="
S3 = {"S3_ENDPOINT": "s3.example.com", "S3_ACCESS_KEY": "key", "S3_SECRET_KEY": "own-s3-secret-9f"}
GENERATION = S3 | {
    "GENERATION_DATABASE_URL": "postgresql+asyncpg://generation:pw@db.example/generation",
    "REPLICATE_API_TOKEN": "r8_an_operators_own_token",
    "REPLICATE_API_BASE_URL": "https://api.replicate.com",
    "WEBHOOK_BASE_URL": "https://api.interior-designs.app",
}
# Every variable any case sets: cleared first, so the host's environment plays no part.
ALL_VARIABLES = {
    "AUTH_JWT_SECRET",
    "AUTH_JWKS_URL",
    "REPLICATE_WEBHOOK_SECRET",
    "S3_PUBLIC_BASE_URL",
    "PUBLIC_BASE_URL",
    "DATABASE_URL",
    "SERVICE_KEY_FILE",
    "SERVICE_TRUST_DIR",
    "USAGE_DATABASE_URL",
    *GENERATION,
}

# (settings class, environment, variable the refusal must name)
REFUSED: dict[str, tuple[type[BaseSettings], dict[str, str], str]] = {
    "edge without secret or JWKS": (EdgeSettings, S3, "AUTH_JWKS_URL"),
    "edge with the dev secret": (
        EdgeSettings,
        S3 | {"AUTH_JWT_SECRET": DEV_JWT_SECRET},
        "AUTH_JWT_SECRET",
    ),
    "edge with the template's placeholder": (
        EdgeSettings,
        S3 | {"AUTH_JWT_SECRET": "REPLACE_ME_WITH_THE_AUTH_PROVIDERS_JWT_SECRET"},
        "AUTH_JWT_SECRET",
    ),
    "edge with a blank secret": (EdgeSettings, S3 | {"AUTH_JWT_SECRET": "  "}, "AUTH_JWT_SECRET"),
    "edge with a JWKS and the dev secret": (
        EdgeSettings,
        S3 | {"AUTH_JWKS_URL": JWKS, "AUTH_JWT_SECRET": DEV_JWT_SECRET},
        "AUTH_JWT_SECRET",
    ),
    "edge with a plain-http JWKS": (
        EdgeSettings,
        S3 | {"AUTH_JWKS_URL": "http://auth.example/jwks.json"},
        "AUTH_JWKS_URL",
    ),
    # The example in deploy/k8s/base/kustomization.yaml, copied as it is.
    "edge with the template's JWKS URL": (
        EdgeSettings,
        S3 | {"AUTH_JWKS_URL": "https://<project>.supabase.co/auth/v1/.well-known/jwks.json"},
        "AUTH_JWKS_URL",
    ),
    "edge with a placeholder JWKS host": (
        EdgeSettings,
        S3 | {"AUTH_JWKS_URL": "https://REPLACE_ME.supabase.co/auth/v1/.well-known/jwks.json"},
        "AUTH_JWKS_URL",
    ),
    "edge with a JWKS URL without a host": (
        EdgeSettings,
        S3 | {"AUTH_JWKS_URL": "https://"},
        "AUTH_JWKS_URL",
    ),
    # An .env line's quotes kept literally (docker --env-file, systemd).
    "edge with the published S3 secret in quotes": (
        EdgeSettings,
        S3 | {"AUTH_JWT_SECRET": OWN_JWT_SECRET, "S3_SECRET_KEY": f'"{DEV_S3_SECRET_KEY}"'},
        "S3_SECRET_KEY",
    ),
    "generation with a quoted token": (
        GenerationSettings,
        {**GENERATION, "REPLICATE_API_TOKEN": "'r8_an_operators_own_token'"},
        "REPLICATE_API_TOKEN",
    ),
    "generation with the dev database password": (
        GenerationSettings,
        {
            **GENERATION,
            "GENERATION_DATABASE_URL": (
                f"postgresql+asyncpg://interior:{DEV_POSTGRES_PASSWORD}@db.example/generation"
            ),
        },
        "GENERATION_DATABASE_URL",
    ),
    "generation with the template's database password": (
        GenerationSettings,
        {
            **GENERATION,
            "GENERATION_DATABASE_URL": "postgresql+asyncpg://generation:REPLACE_ME@db/generation",
        },
        "GENERATION_DATABASE_URL",
    ),
    "usage with the dev database password, percent-encoded": (
        UsageSettings,
        {
            "USAGE_DATABASE_URL": "postgresql+asyncpg://interior:"
            + DEV_POSTGRES_PASSWORD.replace("-", "%2D")
            + "@db.example/usage"
        },
        "USAGE_DATABASE_URL",
    ),
    # The driver connects with a ?password= (over the user info's): checked too.
    "usage with the dev database password in the query": (
        UsageSettings,
        {
            "USAGE_DATABASE_URL": f"postgresql+asyncpg://interior@db/usage?password={DEV_POSTGRES_PASSWORD}"
        },
        "USAGE_DATABASE_URL",
    ),
    "usage with the dev password in the query over an own one": (
        UsageSettings,
        {
            "USAGE_DATABASE_URL": "postgresql+asyncpg://interior:own-pw-5c1e@db/usage"
            f"?sslmode=require&password={DEV_POSTGRES_PASSWORD}"
        },
        "USAGE_DATABASE_URL",
    ),
    "generation with the template's database password in the query": (
        GenerationSettings,
        {
            **GENERATION,
            "GENERATION_DATABASE_URL": "postgresql+asyncpg://g@db/generation?password=REPLACE_ME",
        },
        "GENERATION_DATABASE_URL",
    ),
    "gateway without a webhook secret": (GatewaySettings, {}, "REPLICATE_WEBHOOK_SECRET"),
    "gateway with the dev webhook secret": (
        GatewaySettings,
        {"REPLICATE_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET},
        "REPLICATE_WEBHOOK_SECRET",
    ),
    "gateway with the dev webhook secret unpadded": (
        GatewaySettings,
        {"REPLICATE_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET.rstrip("=")},
        "REPLICATE_WEBHOOK_SECRET",
    ),
    "gateway with the published test vector padded": (
        GatewaySettings,
        {"REPLICATE_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=="},
        "REPLICATE_WEBHOOK_SECRET",
    ),
    "gateway with a one-byte webhook key": (
        GatewaySettings,
        {"REPLICATE_WEBHOOK_SECRET": "whsec_AA=="},
        "REPLICATE_WEBHOOK_SECRET",
    ),
    "gateway with the template's placeholder": (
        GatewaySettings,
        {"REPLICATE_WEBHOOK_SECRET": "whsec_REPLACE_ME"},
        "REPLICATE_WEBHOOK_SECRET",
    ),
    "generation without WEBHOOK_BASE_URL": (
        GenerationSettings,
        {**GENERATION, "WEBHOOK_BASE_URL": ""},
        "WEBHOOK_BASE_URL",
    ),
    "generation with the manifests' example webhook URL": (
        GenerationSettings,
        {**GENERATION, "WEBHOOK_BASE_URL": "https://api.example.com"},
        "WEBHOOK_BASE_URL",
    ),
    "generation with a placeholder webhook URL": (
        GenerationSettings,
        {**GENERATION, "WEBHOOK_BASE_URL": "https://REPLACE_ME.invalid"},
        "WEBHOOK_BASE_URL",
    ),
    "generation with a webhook URL that is no URL": (
        GenerationSettings,
        {**GENERATION, "WEBHOOK_BASE_URL": "api.interior-designs.app"},
        "WEBHOOK_BASE_URL",
    ),
    "generation without a Replicate token": (
        GenerationSettings,
        {**GENERATION, "REPLICATE_API_TOKEN": ""},
        "REPLICATE_API_TOKEN",
    ),
    "generation with the provider left at its default (the local emulator)": (
        GenerationSettings,
        {k: v for k, v in GENERATION.items() if k != "REPLICATE_API_BASE_URL"},
        "REPLICATE_API_BASE_URL",
    ),
    "generation with the emulator's token": (
        GenerationSettings,
        {**GENERATION, "REPLICATE_API_TOKEN": DEV_REPLICATE_TOKEN},
        "REPLICATE_API_TOKEN",
    ),
}

NO_S3_KEYS = {"S3_ENDPOINT": S3["S3_ENDPOINT"]}
CDN = {"S3_PUBLIC_BASE_URL": "https://renders.cdn.example"}
# Where a service uses S3, its credentials are required (in development too).
REFUSED |= {
    "edge serving renders itself without S3 keys": (
        EdgeSettings,
        NO_S3_KEYS | {"AUTH_JWT_SECRET": OWN_JWT_SECRET},
        "S3_ACCESS_KEY",
    ),
    "edge serving renders itself without the S3 secret": (
        EdgeSettings,
        NO_S3_KEYS | {"S3_ACCESS_KEY": "key", "AUTH_JWT_SECRET": OWN_JWT_SECRET},
        "S3_SECRET_KEY",
    ),
    "edge with a plain-http public base URL": (
        EdgeSettings,
        S3
        | {"AUTH_JWT_SECRET": OWN_JWT_SECRET, "PUBLIC_BASE_URL": "http://api.interior-designs.app"},
        "PUBLIC_BASE_URL",
    ),
    "edge with the template's example public base URL": (
        EdgeSettings,
        S3 | {"AUTH_JWT_SECRET": OWN_JWT_SECRET, "PUBLIC_BASE_URL": "https://api.example.com"},
        "PUBLIC_BASE_URL",
    ),
    "generation without S3 keys": (
        GenerationSettings,
        {k: v for k, v in GENERATION.items() if k not in ("S3_ACCESS_KEY", "S3_SECRET_KEY")},
        "S3_ACCESS_KEY",
    ),
}

ACCEPTED: dict[str, tuple[type[BaseSettings], dict[str, str]]] = {
    # The template's advice: an edge whose renders a CDN serves holds no S3 key at all.
    "edge with a CDN and no S3 keys": (
        EdgeSettings,
        NO_S3_KEYS | CDN | {"AUTH_JWT_SECRET": OWN_JWT_SECRET},
    ),
    "edge with its own secret": (EdgeSettings, S3 | {"AUTH_JWT_SECRET": OWN_JWT_SECRET}),
    "edge with its public base URL": (
        EdgeSettings,
        S3
        | {
            "AUTH_JWT_SECRET": OWN_JWT_SECRET,
            "PUBLIC_BASE_URL": "https://api.interior-designs.app",
        },
    ),
    "edge with a JWKS only": (EdgeSettings, S3 | {"AUTH_JWKS_URL": JWKS}),
    "edge with both": (
        EdgeSettings,
        S3 | {"AUTH_JWKS_URL": JWKS, "AUTH_JWT_SECRET": OWN_JWT_SECRET},
    ),
    "gateway with its own secret": (
        GatewaySettings,
        {"REPLICATE_WEBHOOK_SECRET": OWN_WEBHOOK_SECRET},
    ),
    "generation with everything": (GenerationSettings, GENERATION),
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_ENV", "production")
    return monkeypatch


def build(cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


@pytest.mark.parametrize("case", list(REFUSED))
def test_production_refuses_and_names_the_variable(
    environment: pytest.MonkeyPatch, case: str
) -> None:
    cls, env, variable = REFUSED[case]

    with pytest.raises(ValidationError) as refused:
        build(cls, env, environment)

    messages = " ".join(
        f"{item['loc']} {item['msg']}" for item in refused.value.errors(include_input=False)
    )
    assert variable in messages


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real service key material, which production also requires (kit.service_identity)."""
    root = tmp_path_factory.mktemp("identity")
    private, public = generate_key_pair()
    write_private_key(root / "service.key", private)
    (root / "trust").mkdir()
    (root / "trust" / "edge-api.pub").write_bytes(public)
    return {"SERVICE_KEY_FILE": str(root / "service.key"), "SERVICE_TRUST_DIR": str(root / "trust")}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_production_accepts_real_secrets(
    environment: pytest.MonkeyPatch, identity: dict[str, str], case: str
) -> None:
    cls, env = ACCEPTED[case]

    assert build(cls, env | identity, environment).development is False


@pytest.mark.parametrize(
    "case", ["edge without secret or JWKS", "gateway without a webhook secret"]
)
def test_development_still_runs_on_the_defaults(environment: pytest.MonkeyPatch, case: str) -> None:
    cls, env, _ = REFUSED[case]
    environment.setenv("APP_ENV", "development")

    assert build(cls, env, environment).development is True


@pytest.mark.parametrize(
    ("module", "env", "variable"),
    [
        ("edge_api", S3, "AUTH_JWT_SECRET"),
        ("edge_api", S3 | {"AUTH_JWT_SECRET": DEV_JWT_SECRET}, "AUTH_JWT_SECRET"),
        (
            "webhook_gateway",
            {"REPLICATE_WEBHOOK_SECRET": "whsec_REPLACE_ME"},
            "REPLICATE_WEBHOOK_SECRET",
        ),
        ("webhook_gateway", {}, "REPLICATE_WEBHOOK_SECRET"),
        ("generation", {**GENERATION, "WEBHOOK_BASE_URL": ""}, "WEBHOOK_BASE_URL"),
    ],
)
def test_the_process_exits_naming_the_variable(
    module: str, env: dict[str, str], variable: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={"PATH": "/usr/bin:/bin", "APP_ENV": "production", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert variable in output
    assert "Traceback" not in output
    for name in ("AUTH_JWT_SECRET", "REPLICATE_WEBHOOK_SECRET", "REPLICATE_API_TOKEN"):
        if env.get(name):
            assert env[name] not in output  # named, never printed


async def test_an_edge_with_a_cdn_opens_no_storage_client(
    environment: pytest.MonkeyPatch, identity: dict[str, str]
) -> None:
    settings = build(
        EdgeSettings, NO_S3_KEYS | CDN | {"AUTH_JWT_SECRET": OWN_JWT_SECRET} | identity, environment
    )
    clients = open_clients(settings)
    try:
        assert clients.storage is None
    finally:
        await clients.close()
