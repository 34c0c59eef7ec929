"""``python -m <service> --check-config`` as subprocesses: masked configuration, or the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.dev_values import DEV_S3_SECRET_KEY
from tests.ops.support import identity_env, run_service

# Secret values nobody publishes: the production checks accept them, and none may be printed.
DB_PASSWORD = "pg-Secret-7f3a9c"
S3_ACCESS = "AKIA-ops-test-4b1e"
S3_SECRET = "s3-Secret-0d8e2f6a91"
REPLICATE_TOKEN = "r8_ops_test_token_5c7b2e"
WEBHOOK_SECRET = "whsec_b3BzLXRlc3Qtd2ViaG9vay1zZWNyZXQtOGQyZg=="
JWT_SECRET = "ops-test-jwt-secret-9a8b7c6d5e4f3a2b1c0d"
SECRETS = (DB_PASSWORD, S3_ACCESS, S3_SECRET, REPLICATE_TOKEN, WEBHOOK_SECRET, JWT_SECRET)

S3 = {"S3_ENDPOINT": "s3.internal:9000", "S3_ACCESS_KEY": S3_ACCESS, "S3_SECRET_KEY": S3_SECRET}
PRODUCTION = {
    "generation": {
        **S3,
        "GENERATION_DATABASE_URL": f"postgresql+asyncpg://app:{DB_PASSWORD}@db:5432/generation",
        "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
        "REPLICATE_API_BASE_URL": "https://api.replicate.com",
        "WEBHOOK_BASE_URL": "https://api.interior-designs.app",
        **identity_env(serves=True),
    },
    "usage": {
        "USAGE_DATABASE_URL": f"postgresql+asyncpg://app:{DB_PASSWORD}@db:5432/usage",
        **identity_env(serves=True),
    },
    "edge_api": {**S3, "AUTH_JWT_SECRET": JWT_SECRET, **identity_env(serves=False)},
    "webhook_gateway": {"REPLICATE_WEBHOOK_SECRET": WEBHOOK_SECRET, **identity_env(serves=False)},
}
MASKED = {
    "generation": ("S3_ACCESS_KEY", "S3_SECRET_KEY", "REPLICATE_API_TOKEN"),
    "usage": (),
    "edge_api": ("S3_ACCESS_KEY", "S3_SECRET_KEY", "AUTH_JWT_SECRET"),
    "webhook_gateway": ("REPLICATE_WEBHOOK_SECRET",),
}


def _assert_no_secret(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output


@pytest.mark.parametrize("service", list(PRODUCTION))
def test_a_production_configuration_is_printed_with_every_secret_masked(service: str) -> None:
    result = run_service(service, "--check-config", env=PRODUCTION[service])

    assert result.returncode == 0, result.stderr
    _assert_no_secret(result.stdout + result.stderr)
    report = json.loads(result.stdout)
    assert report["service"] == service
    assert report["appEnv"] == "production"
    settings = report["settings"]
    for variable in MASKED[service]:
        assert settings[variable] == "***", variable
    assert report["runtimeConfig"]["plans"]["free"]["monthly_generations"] > 0


@pytest.mark.parametrize("service", ["generation", "usage"])
def test_the_database_url_keeps_its_host_and_loses_its_password(service: str) -> None:
    result = run_service(service, "--check-config", env=PRODUCTION[service])

    variable = f"{service.upper()}_DATABASE_URL"
    shown = json.loads(result.stdout)["settings"][variable]
    assert shown == f"postgresql+asyncpg://app:***@db:5432/{service}"


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("generation", "REPLICATE_API_TOKEN"),
        ("generation", "WEBHOOK_BASE_URL"),
        ("edge_api", "AUTH_JWT_SECRET"),
        ("webhook_gateway", "REPLICATE_WEBHOOK_SECRET"),
    ],
)
def test_production_refuses_a_missing_secret_and_names_it(service: str, variable: str) -> None:
    env = {k: v for k, v in PRODUCTION[service].items() if k != variable}

    result = run_service(service, "--check-config", env=env)

    assert result.returncode == 2
    assert variable in result.stderr
    assert result.stdout == ""
    _assert_no_secret(result.stdout + result.stderr)


def test_production_refuses_a_published_secret_without_printing_it() -> None:
    env = {**PRODUCTION["edge_api"], "S3_SECRET_KEY": DEV_S3_SECRET_KEY}

    result = run_service("edge_api", "--check-config", env=env)

    assert result.returncode == 2
    assert "S3_SECRET_KEY" in result.stderr
    assert DEV_S3_SECRET_KEY not in result.stderr + result.stdout
    _assert_no_secret(result.stdout + result.stderr)


def test_development_accepts_what_production_refuses() -> None:
    result = run_service("webhook_gateway", "--check-config", env={"APP_ENV": "development"})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["REPLICATE_WEBHOOK_SECRET"] is None


def test_a_bad_value_is_named_without_echoing_the_input() -> None:
    env = {**PRODUCTION["usage"], "USAGE_GRPC_PORT": "not-a-port", "DB_POOL_SIZE": "lots"}

    result = run_service("usage", "--check-config", env=env)

    assert result.returncode == 2
    assert "USAGE_GRPC_PORT" in result.stderr
    assert "DB_POOL_SIZE" in result.stderr
    assert "not-a-port" not in result.stderr
    _assert_no_secret(result.stderr)


def test_a_missing_required_variable_is_named() -> None:
    result = run_service("generation", "--check-config", env={"APP_ENV": "development"})

    assert result.returncode == 2
    assert "GENERATION_DATABASE_URL" in result.stderr
    assert "S3_ENDPOINT" in result.stderr


@pytest.mark.parametrize("service", ["usage", "webhook_gateway"])
def test_a_bad_runtime_config_file_is_named_by_its_key(service: str, tmp_path: Path) -> None:
    bad = tmp_path / "runtime.toml"
    bad.write_text("[plans.free]\nname = 'free'\nmonthly_generations = -1\n", encoding="utf-8")
    env = {**PRODUCTION[service], "RUNTIME_CONFIG_FILE": str(bad)}

    result = run_service(service, "--check-config", env=env)

    assert result.returncode == 2
    assert "plans.free.monthly_generations" in result.stderr
    _assert_no_secret(result.stdout + result.stderr)


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        # Each was accepted, then crashed the start with a traceback or silently changed
        # what the service does (a port past 65535 listens on its value modulo 65536;
        # -1 or 0 turns a limit off).
        ("webhook_gateway", "LOG_LEVEL", "verbose"),
        ("edge_api", "SHUTDOWN_GRACE_SECONDS", "nan"),
        ("edge_api", "SHUTDOWN_GRACE_SECONDS", "-1"),
        ("edge_api", "EDGE_HTTP_PORT", "99999"),
        ("usage", "USAGE_GRPC_PORT", "70000"),
        ("generation", "GENERATION_GRPC_PORT", "65536"),
        ("usage", "GRPC_HOST", ""),
        ("usage", "GRPC_MAX_MESSAGE_BYTES", "-1"),
        ("generation", "GRPC_MAX_MESSAGE_BYTES", "0"),
        ("usage", "DB_POOL_SIZE", "-1"),
        ("usage", "DB_STATEMENT_TIMEOUT_MS", "0"),
        ("generation", "DB_POOL_TIMEOUT_SECONDS", "inf"),
        # Accepted, then every provider call or variant URL failed.
        ("generation", "REPLICATE_API_BASE_URL", "api.replicate.com"),
        ("generation", "REPLICATE_API_BASE_URL", "https://api.replicate.com/v1"),
        ("edge_api", "S3_PUBLIC_BASE_URL", "not a url"),
        ("edge_api", "S3_PUBLIC_BASE_URL", "javascript:alert(1)"),
        ("edge_api", "S3_PUBLIC_BASE_URL", "https://cdn.interior-designs.app/?x=1"),
    ],
)
def test_a_value_out_of_range_is_named(service: str, variable: str, value: str) -> None:
    result = run_service(service, "--check-config", env={**PRODUCTION[service], variable: value})

    assert result.returncode == 2, f"{variable}={value!r} accepted"
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("value", "level"),
    [(" warning ", "WARNING"), ("warn", "WARNING"), ("FATAL", "CRITICAL"), ("notset", "NOTSET")],
)
def test_the_log_level_is_read_in_any_case_and_by_any_name_python_knows(
    value: str, level: str
) -> None:
    env = {**PRODUCTION["webhook_gateway"], "LOG_LEVEL": value}

    result = run_service("webhook_gateway", "--check-config", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["LOG_LEVEL"] == level
