"""The base's NetworkPolicies, evaluated as Kubernetes does, pair of pods by pair of pods.

A flow from pod A to port P of pod B is allowed when some policy selecting B allows
it in (or none selects B for Ingress) AND some policy selecting A allows it out (or
none selects A for Egress). With the default deny in place, the set of allowed flows
between our Deployments must be exactly the README diagram's.
"""

from __future__ import annotations

from itertools import product
from typing import Any

import pytest

from tests.deploy.support import objects

Flow = tuple[str, str, int]  # (from deployment, to deployment, port)

# The README diagram plus the audit (usage -> generation ListJobOutcomes).
EXPECTED: set[Flow] = {
    ("envoy", "edge-api", 8081),
    ("envoy", "webhook-gateway", 8082),
    ("edge-api", "generation", 50051),
    ("webhook-gateway", "generation", 50051),
    ("usage", "generation", 50051),
    ("edge-api", "usage", 50052),
    ("generation", "usage", 50052),
}
METRICS = {
    "generation": 9101,
    "usage": 9102,
    "edge-api": 8081,
    "webhook-gateway": 8082,
    "envoy": 9902,
}
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
# The namespace label kubernetes sets on every namespace (our own one included).
OWN_NAMESPACE = {"kubernetes.io/metadata.name": "interior"}


def _policies() -> list[dict[str, Any]]:
    return list(objects("NetworkPolicy").values())


def _labels(name: str) -> dict[str, str]:
    labels: dict[str, str] = objects("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
    return labels


def _ports(name: str) -> set[int]:
    [container] = objects("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    return {port["containerPort"] for port in container["ports"]}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is evaluated here"
    selected: bool = selector.get("matchLabels", {}).items() <= labels.items()
    return selected


def _peer_matches(peer: dict[str, Any], labels: dict[str, str], namespace: dict[str, str]) -> bool:
    """Whether a from/to peer names a pod with ``labels`` in a namespace with ``namespace``."""
    if "ipBlock" in peer:
        return False  # outside the cluster: never one of our pods
    if "namespaceSelector" in peer and not _selects(peer["namespaceSelector"], namespace):
        return False
    if "namespaceSelector" not in peer and namespace != OWN_NAMESPACE:
        return False  # a bare podSelector means this namespace only
    return "podSelector" not in peer or _selects(peer["podSelector"], labels)


def _rule_allows(
    rule: dict[str, Any], key: str, peer: dict[str, str], ns: dict[str, str], port: int
) -> bool:
    ports = rule.get("ports")
    if ports is not None and not any(p.get("port") == port for p in ports):
        return False
    peers = rule.get(key)
    return peers is None or any(_peer_matches(p, peer, ns) for p in peers)


def _direction_allows(
    direction: str, pod: dict[str, str], peer: dict[str, str], ns: dict[str, str], port: int
) -> bool:
    key = "from" if direction == "Ingress" else "to"
    rules_key = direction.lower()
    selecting = [
        p
        for p in _policies()
        if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
    ]
    if not selecting:
        return True
    return any(
        _rule_allows(rule, key, peer, ns, port)
        for policy in selecting
        for rule in policy["spec"].get(rules_key, [])
    )


def _allowed(source: str, target: str, port: int) -> bool:
    into = _direction_allows("Ingress", _labels(target), _labels(source), OWN_NAMESPACE, port)
    out = _direction_allows("Egress", _labels(source), _labels(target), OWN_NAMESPACE, port)
    return into and out


def _allowed_from_outside(target: str, port: int, namespace: dict[str, str]) -> bool:
    """A pod of another namespace (no labels of ours) reaching ``target``; its own
    namespace's egress is not ours to decide."""
    return _direction_allows("Ingress", _labels(target), {}, namespace, port)


def test_a_default_deny_selects_every_pod_both_ways() -> None:
    deny = [
        p
        for p in _policies()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(deny) == 1
    for name in objects("Deployment"):
        assert any(_selects(p["spec"]["podSelector"], _labels(name)) for p in _policies())


def test_the_flows_between_our_pods_are_exactly_the_diagrams() -> None:
    deployments = list(objects("Deployment"))
    allowed = {
        (source, target, port)
        for source, target in product(deployments, deployments)
        for port in _ports(target)
        if _allowed(source, target, port)
    }
    assert allowed == EXPECTED


@pytest.mark.parametrize(
    ("source", "target", "port"),
    [
        ("webhook-gateway", "usage", 50052),
        ("envoy", "generation", 50051),
        ("envoy", "usage", 50052),
        ("edge-api", "generation", 9101),
        ("generation", "edge-api", 8081),
        ("usage", "usage", 50052),
    ],
)
def test_flows_the_diagram_does_not_show_are_refused(source: str, target: str, port: int) -> None:
    assert not _allowed(source, target, port)


def test_only_envoy_is_reachable_from_anywhere() -> None:
    elsewhere = {"kubernetes.io/metadata.name": "someone-else"}
    reachable = {
        (name, port)
        for name in objects("Deployment")
        for port in _ports(name)
        if _allowed_from_outside(name, port, elsewhere)
    }
    assert reachable == {("envoy", 8080)}


def test_metrics_ports_are_open_to_the_monitoring_namespace_only() -> None:
    for name, port in METRICS.items():
        assert _allowed_from_outside(name, port, MONITORING), name
    reachable = {
        (name, port)
        for name in objects("Deployment")
        for port in _ports(name)
        if _allowed_from_outside(name, port, MONITORING)
    }
    assert reachable == set(METRICS.items()) | {("envoy", 8080)}


def test_every_pod_may_resolve_names() -> None:
    dns = {"k8s-app": "kube-dns"}
    kube_system = {"kubernetes.io/metadata.name": "kube-system"}
    for name in objects("Deployment"):
        assert _direction_allows("Egress", _labels(name), dns, kube_system, 53), name


@pytest.mark.parametrize(
    ("name", "ports"),
    [("generation", {5432, 443}), ("usage", {5432}), ("edge-api", {443})],
)
def test_only_the_services_with_outside_systems_may_leave_the_cluster(
    name: str, ports: set[int]
) -> None:
    external: dict[str, set[int]] = {}
    for policy in _policies():
        for rule in policy["spec"].get("egress", []):
            if any("ipBlock" in peer for peer in rule.get("to", [])):
                assert rule.get("ports"), "an external rule without ports opens everything"
                for selected in objects("Deployment"):
                    if _selects(policy["spec"]["podSelector"], _labels(selected)):
                        external.setdefault(selected, set()).update(
                            p["port"] for p in rule["ports"]
                        )
    assert external.get(name) == ports
    assert set(external) == {"generation", "usage", "edge-api"}


def test_every_policy_selects_existing_pods_on_their_own_ports() -> None:
    deployments = objects("Deployment")
    for policy in _policies():
        spec = policy["spec"]
        selected = [n for n in deployments if _selects(spec["podSelector"], _labels(n))]
        assert selected, f"{policy['metadata']['name']} selects no pod"
        for rule in spec.get("ingress", []):
            for port in rule.get("ports", []):
                assert all(port["port"] in _ports(n) for n in selected), policy["metadata"]
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert any(_selects(peer["podSelector"], _labels(n)) for n in deployments)
        for rule in spec.get("egress", []):
            for peer in rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    targets = [n for n in deployments if _selects(peer["podSelector"], _labels(n))]
                    assert targets, policy["metadata"]["name"]
                    for port in rule["ports"]:
                        assert all(port["port"] in _ports(t) for t in targets)


def test_a_foreign_pod_in_our_namespace_reaches_nothing() -> None:
    """A pod started by hand (`kubectl run`, no labels of ours) is denied both ways."""
    stranger: dict[str, str] = {"run": "debug"}
    for name in objects("Deployment"):
        for port in _ports(name):
            into = _direction_allows("Ingress", _labels(name), stranger, OWN_NAMESPACE, port)
            out = _direction_allows("Egress", stranger, _labels(name), OWN_NAMESPACE, port)
            assert not (into and out), (name, port)
            assert not out, "the default deny must hold the stranger's egress too"
