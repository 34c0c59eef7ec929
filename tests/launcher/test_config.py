"""How the launcher reads the environment: ports, external parts, service variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config import (
    DEV_JWT_SECRET,
    DEV_REPLICATE_TOKEN,
    DEV_WEBHOOK_SECRET,
    ConfigError,
    LauncherConfig,
    Ports,
)


def test_embedded_defaults() -> None:
    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": "/tmp/launcher-x"})

    assert config.ports == Ports()
    assert (config.embedded_postgres, config.embedded_s3, config.embedded_emulator) == (
        True,
        True,
        True,
    )
    env = config.service_env()
    assert (
        env["GENERATION_DATABASE_URL"] == "postgresql+asyncpg://postgres@127.0.0.1:54329/generation"
    )
    assert env["USAGE_DATABASE_URL"] == "postgresql+asyncpg://postgres@127.0.0.1:54329/usage"
    assert env["S3_ENDPOINT"] == "127.0.0.1:9000"
    assert env["REPLICATE_API_BASE_URL"] == "http://127.0.0.1:8090"
    assert env["REPLICATE_API_TOKEN"] == DEV_REPLICATE_TOKEN
    assert env["REPLICATE_WEBHOOK_SECRET"] == DEV_WEBHOOK_SECRET
    assert env["WEBHOOK_BASE_URL"] == "http://127.0.0.1:8080"
    assert env["AUTH_JWT_SECRET"] == DEV_JWT_SECRET
    assert env["MALLOC_ARENA_MAX"] == "2"  # bounded RSS under upload bursts
    assert env["GENERATION_GRPC_TARGET"] == "127.0.0.1:50051"
    assert env["USAGE_GRPC_TARGET"] == "127.0.0.1:50052"
    assert Path(env["RUNTIME_CONFIG_FILE"]).name == "runtime.toml"
    assert config.data_dir == Path("/tmp/launcher-x")


def test_every_port_has_its_variable() -> None:
    env = {
        "PUBLIC_PORT": "18080",
        "ENVOY_ADMIN_PORT": "19901",
        "ENVOY_STATS_PORT": "19902",
        "GENERATION_GRPC_PORT": "15051",
        "USAGE_GRPC_PORT": "15052",
        "EDGE_HTTP_PORT": "18081",
        "GATEWAY_HTTP_PORT": "18082",
        "EMULATOR_PORT": "18090",
        "S3_PORT": "19000",
        "PG_PORT": "15432",
        "GENERATION_METRICS_PORT": "19101",
        "USAGE_METRICS_PORT": "19102",
    }
    config = LauncherConfig.from_env(env)

    assert config.ports.env() == env
    assert config.service_env()["WEBHOOK_BASE_URL"] == "http://127.0.0.1:18080"
    assert config.service_env()["GENERATION_GRPC_TARGET"] == "127.0.0.1:15051"


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1"])
def test_a_bad_port_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="PG_PORT"):
        LauncherConfig.from_env({"PG_PORT": value})


def test_external_parts_replace_the_embedded_ones_and_pass_through() -> None:
    config = LauncherConfig.from_env(
        {
            "DATABASE_URL": "postgresql+asyncpg://u@db:5432/app",
            "S3_ENDPOINT": "minio:9000",
            "S3_ACCESS_KEY": "ak",
            "S3_SECRET_KEY": "sk",
            "S3_SECURE": "true",
            "REPLICATE_API_BASE_URL": "https://api.replicate.com",
            "REPLICATE_API_TOKEN": "r8_real",
            "WEBHOOK_BASE_URL": "https://example.test",
            "AUTH_JWT_SECRET": "prod-secret",
        }
    )

    assert not config.embedded_postgres
    assert not config.embedded_s3
    assert not config.embedded_emulator
    env = config.service_env()
    assert (
        env["GENERATION_DATABASE_URL"]
        == env["USAGE_DATABASE_URL"]
        == ("postgresql+asyncpg://u@db:5432/app")
    )
    assert (env["S3_ENDPOINT"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"]) == (
        "minio:9000",
        "ak",
        "sk",
    )
    assert env["S3_SECURE"] == "true"
    assert env["REPLICATE_API_BASE_URL"] == "https://api.replicate.com"
    assert env["REPLICATE_API_TOKEN"] == "r8_real"
    # The emulator's secret is not invented for a real provider.
    assert "REPLICATE_WEBHOOK_SECRET" not in env
    assert env["WEBHOOK_BASE_URL"] == "https://example.test"
    assert env["AUTH_JWT_SECRET"] == "prod-secret"


def test_one_external_database_keeps_the_embedded_server_for_the_other() -> None:
    config = LauncherConfig.from_env({"GENERATION_DATABASE_URL": "postgresql+asyncpg://x/gen"})

    assert config.embedded_postgres
    assert config.database_url("generation") == "postgresql+asyncpg://x/gen"
    assert config.database_url("usage").endswith("127.0.0.1:54329/usage")


def test_with_ports_moves_the_default_webhook_url_along() -> None:
    ports = Ports(public=18888)
    moved = LauncherConfig.from_env({}).with_ports(ports)
    kept = LauncherConfig.from_env({"WEBHOOK_BASE_URL": "https://hook.test"}).with_ports(ports)

    assert moved.webhook_base_url == "http://127.0.0.1:18888"
    assert kept.webhook_base_url == "https://hook.test"


def test_the_malloc_arena_cap_can_be_overridden() -> None:
    assert (
        LauncherConfig.from_env({"MALLOC_ARENA_MAX": "8"}).service_env()["MALLOC_ARENA_MAX"] == "8"
    )


def test_envoy_listens_on_loopback_unless_asked() -> None:
    assert LauncherConfig.from_env({}).public_host == "127.0.0.1"
    own = {"AUTH_JWT_SECRET": "s" * 40}
    assert LauncherConfig.from_env({**own, "PUBLIC_HOST": "0.0.0.0"}).public_host == "0.0.0.0"
    # The URLs it prints and the webhook URL the emulator calls follow the listener.
    shared = LauncherConfig.from_env({**own, "PUBLIC_HOST": "192.168.1.4", "PUBLIC_PORT": "18080"})
    assert shared.public_origin == "http://192.168.1.4:18080"
    assert shared.service_env()["WEBHOOK_BASE_URL"] == "http://192.168.1.4:18080"
    assert LauncherConfig.from_env({**own, "PUBLIC_HOST": "0.0.0.0"}).public_origin == (
        "http://127.0.0.1:8080"
    )


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"PUBLIC_HOST": "0.0.0.0"}, "AUTH_JWT_SECRET"),
        ({"PUBLIC_HOST": "192.168.1.4", "AUTH_JWT_SECRET": DEV_JWT_SECRET}, "AUTH_JWT_SECRET"),
        (
            {"PUBLIC_HOST": "0.0.0.0", "AUTH_JWT_SECRET": "change-me-change-me-change-me-change"},
            "AUTH_JWT_SECRET is a template placeholder",
        ),
        ({"PUBLIC_HOST": "example.com"}, "PUBLIC_HOST='example.com' is not an IPv4 address"),
        ({"PUBLIC_HOST": "::1"}, "PUBLIC_HOST='::1' is not an IPv4 address"),
    ],
)
def test_off_loopback_needs_a_jwt_secret_of_ones_own(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LauncherConfig.from_env(env)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"EMULATOR_PORT": "47123", "S3_PORT": "47123"},
            "EMULATOR_PORT and S3_PORT are both 47123",
        ),
        ({"PG_PORT": "8080"}, "PUBLIC_PORT and PG_PORT are both 8080"),
    ],
)
def test_two_parts_on_one_port_are_refused_by_name(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LauncherConfig.from_env(env)


@pytest.mark.parametrize(
    ("value", "report_only"),
    [(None, False), ("enforce", False), ("report-only", True), (" Report_Only ", True)],
)
def test_envoy_rate_limits_is_read_in_any_case(value: str | None, report_only: bool) -> None:
    env = {} if value is None else {"ENVOY_RATE_LIMITS": value}
    assert LauncherConfig.from_env(env).rate_limits_report_only is report_only


def test_an_unknown_envoy_rate_limits_value_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="ENVOY_RATE_LIMITS"):
        LauncherConfig.from_env({"ENVOY_RATE_LIMITS": "off"})


def test_a_port_in_other_digits_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="PG_PORT"):
        LauncherConfig.from_env({"PG_PORT": "²"})
