"""The base built by kustomize itself (``kubectl kustomize``: offline, no cluster needed).

kubectl is not part of requirements.lock; where it is missing these checks are skipped
and the parsed-manifest checks of test_k8s.py still run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_api.settings import EdgeSettings
from kit.runtime_config import load_runtime_config
from tests.deploy.support import ENVOY_CONFIG, K8S_BASE, REPO

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def _build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _configmap_refs(document: dict[str, Any]) -> set[str]:
    """Names of the ConfigMaps a workload mounts or reads env from."""
    pod = document["spec"]["template"]["spec"]
    names = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    for container in pod.get("initContainers", []) + pod["containers"]:
        names |= {s["configMapRef"]["name"] for s in container.get("envFrom", [])}
    return names


def test_the_base_builds_and_every_configmap_reference_resolves() -> None:
    built = _build(K8S_BASE)
    configmaps = {d["metadata"]["name"]: d for d in built if d["kind"] == "ConfigMap"}

    for document in built:
        if document["kind"] == "Namespace":
            continue
        assert document["metadata"]["namespace"] == "interior"
        if document["kind"] == "Deployment":
            refs = _configmap_refs(document)
            assert refs, document["metadata"]["name"]
            assert refs <= set(configmaps), "a reference kustomize did not rewrite"
    envoy = next(d for name, d in configmaps.items() if name.startswith("envoy-config-"))
    assert envoy["data"]["envoy.yaml"] == ENVOY_CONFIG.read_text()
    runtime = next(d for n, d in configmaps.items() if n.startswith("interior-runtime-config-"))
    assert runtime["data"]["runtime.toml"] == (REPO / "config" / "runtime.toml").read_text()


def test_an_overlay_like_the_readme_sets_image_environment_and_secrets(tmp_path: Path) -> None:
    overlay = tmp_path / "prod"
    overlay.mkdir()
    (overlay / "secrets.env").write_text("AUTH_JWT_SECRET=from-the-overlay\n")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize accepts relative roots only.
        "resources": [os.path.relpath(K8S_BASE, overlay)],
        "images": [{"name": "interior-backend", "newName": "example.com/i", "newTag": "7"}],
        "configMapGenerator": [
            {"name": "interior-env", "behavior": "merge", "literals": ["S3_ENDPOINT=s3.example"]}
        ],
        "secretGenerator": [
            {"name": "interior-secrets", "behavior": "replace", "envs": ["secrets.env"]}
        ],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    built = _build(overlay)

    env = next(d for d in built if d["metadata"]["name"].startswith("interior-env-"))
    assert env["data"]["S3_ENDPOINT"] == "s3.example"
    assert env["data"]["GRPC_HOST"] == "0.0.0.0"  # merged, not replaced
    [secret] = [d for d in built if d["metadata"]["name"].startswith("interior-secrets")]
    assert set(secret["data"]) == {"AUTH_JWT_SECRET"}
    images = {
        c["image"]
        for d in built
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"example.com/i:7"}


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _quantity(text: str) -> int:
    return int(text[:-2]) * _UNITS[text[-2:]]


@pytest.mark.parametrize("name", ["edge-api", "generation"])
def test_tmp_holds_the_spools_of_a_full_set_of_uploads(name: str) -> None:
    """Each of the edge's concurrent submissions may spool two files at the upload cap
    (generation keeps a cleaned copy of each as well): /tmp must not evict the pod."""
    uploads = load_runtime_config(REPO / "config" / "runtime.toml").uploads
    concurrent = EdgeSettings.model_fields["max_concurrent_submissions"].default
    copies = 2 if name == "generation" else 1
    needed = concurrent * 2 * uploads.max_bytes * copies
    deployment = next(
        d for d in _build(K8S_BASE) if d["kind"] == "Deployment" and d["metadata"]["name"] == name
    )
    tmp = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert _quantity(tmp["emptyDir"]["sizeLimit"]) >= needed
