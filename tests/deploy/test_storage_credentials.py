"""Least privilege in object storage: one S3 user per service, each with only its policy.

The policy documents of deploy/minio/ are the ones compose's minio-setup loads; the
compose model (as the real binary resolves it) must hand each service its own user,
never MinIO's root user, and refuse to start without the operator's credentials.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from generation.domain.jobs import variant_key
from kit.settings import S3Settings
from tests.deploy.support import (
    DEPLOY,
    DEPLOYER_ENV,
    S3_USER_VARIABLES,
    resolved_compose,
    run_compose,
)

POLICIES = DEPLOY / "minio"
PRIVATE = S3Settings.model_fields["s3_private_bucket"].default
PUBLIC = S3Settings.model_fields["s3_public_bucket"].default
RENDERS = f"arn:aws:s3:::{PUBLIC}/renders/*"
OBJECT_RW = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}

EXPECTED: dict[str, set[tuple[str, str]]] = {
    "edge-api": {("s3:GetObject", RENDERS)},
    "generation": {
        # HeadBucket at start (ObjectStorage.ensure_bucket) needs s3:ListBucket.
        ("s3:ListBucket", f"arn:aws:s3:::{PRIVATE}"),
        ("s3:ListBucket", f"arn:aws:s3:::{PUBLIC}"),
        *{(action, f"arn:aws:s3:::{PRIVATE}/*") for action in OBJECT_RW},
        *{(action, RENDERS) for action in OBJECT_RW},
    },
}


def _policy(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((POLICIES / f"{name}-policy.json").read_text())
    return document


def _grants(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (action, resource) pair the document allows."""
    pairs: set[tuple[str, str]] = set()
    for statement in document["Statement"]:
        actions, resources = statement["Action"], statement["Resource"]
        pairs |= {(action, resource) for action in actions for resource in resources}
    return pairs


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_policies_are_iam_documents_with_allow_statements_only(name: str) -> None:
    document = _policy(name)
    assert set(document) == {"Version", "Statement"}
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}
        assert statement["Effect"] == "Allow"
        assert all(action.startswith("s3:") for action in statement["Action"])
        assert all(resource.startswith("arn:aws:s3:::") for resource in statement["Resource"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_policy_grants_exactly_its_services_needs(name: str) -> None:
    grants = _grants(_policy(name))
    assert grants == EXPECTED[name]
    for action, resource in grants:
        assert "*" not in action, "no wildcard actions"
        assert resource not in {"*", "arn:aws:s3:::*"}


def test_renders_are_written_where_the_policies_point() -> None:
    key = variant_key(uuid.uuid4(), 0)
    assert f"arn:aws:s3:::{PUBLIC}/{key}".startswith(RENDERS.removesuffix("*"))


def _environment(name: str) -> dict[str, str]:
    environment: dict[str, str] = resolved_compose(True)["services"][name]["environment"]
    return environment


@pytest.mark.parametrize("name", sorted(S3_USER_VARIABLES))
def test_compose_gives_each_service_its_own_s3_user(name: str) -> None:
    access, secret = S3_USER_VARIABLES[name]
    environment = _environment(name)

    assert environment["S3_ACCESS_KEY"] == DEPLOYER_ENV[access]
    assert environment["S3_SECRET_KEY"] == DEPLOYER_ENV[secret]
    assert environment["S3_ACCESS_KEY"] != DEPLOYER_ENV["MINIO_ROOT_USER"]
    assert environment["S3_SECRET_KEY"] != DEPLOYER_ENV["MINIO_ROOT_PASSWORD"]


def test_only_generation_and_the_edge_hold_s3_credentials_and_not_the_same() -> None:
    services = resolved_compose(True)["services"]
    holders = {n for n, s in services.items() if "S3_SECRET_KEY" in (s.get("environment") or {})}
    assert holders == {"generation", "edge-api"}
    assert _environment("generation")["S3_ACCESS_KEY"] != _environment("edge-api")["S3_ACCESS_KEY"]


def test_minio_setup_creates_each_user_with_its_policy_file() -> None:
    setup = resolved_compose(True)["services"]["minio-setup"]
    script = setup["command"][0]
    [mount] = setup["volumes"]
    root = _environment("minio")

    assert Path(mount["source"]) == POLICIES
    assert mount["read_only"] is True
    # `config` prints a compose file again: the shell's $ stays escaped as $$.
    assert 'mc admin policy create store "$$1" "/policies/$$1-policy.json"' in script
    assert "mc admin user add store" in script
    assert 'mc admin policy attach store "$$1" --user "$$2"' in script
    for name, (access, secret) in S3_USER_VARIABLES.items():
        assert f'grant {name} "$${access}" "$${secret}"' in script
        assert (POLICIES / f"{name}-policy.json").is_file()
    assert '"$$MINIO_ROOT_USER" "$$MINIO_ROOT_PASSWORD"' in script
    assert root["MINIO_ROOT_USER"] == DEPLOYER_ENV["MINIO_ROOT_USER"]


@pytest.mark.parametrize(
    "variable",
    ["MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"]
    + [name for pair in S3_USER_VARIABLES.values() for name in pair],
)
def test_compose_refuses_to_run_without_each_storage_credential(variable: str) -> None:
    missing = {k: v for k, v in DEPLOYER_ENV.items() if k != variable}
    result = run_compose("config", "-q", env=missing)

    assert result.returncode != 0
    assert f"required variable {variable} is missing" in result.stderr
