"""No metric is labelled with an id: every label value comes from a bounded set.

The test makes its own id-bearing calls first, so it holds whatever runs before it;
the conftest checks the registry once more after every metrics test has run, so
the labels the other suites produced are covered too, whatever the order.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import grpc
import httpx
import yaml

from generation import metrics as generation_metrics
from kit.metrics import HTTP_METHODS, UNMATCHED_ROUTE
from launcher.config import REPO_ROOT
from testkit.stack import Stack
from tests.e2e.harness import User
from tests.metrics.helpers import Scrape, http_scrape
from usage import metrics as usage_metrics
from webhook_gateway import metrics as gateway_metrics

UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
SERVICE_PREFIXES = ("grpc_server_", "http_server_", "generation_", "usage_", "edge_", "webhook_")
GRPC_CODES = {code.name for code in grpc.StatusCode}
# Label -> the values it may take, where the set is closed.
CLOSED_SETS: dict[str, set[str]] = {
    "grpc_code": GRPC_CODES | {"OTHER", "NOT_CONNECTED", "OK_WITHOUT_OUTCOME"},
    "method": set(HTTP_METHODS) | {"OTHER"},
    "source": set(generation_metrics.TRANSITION_SOURCES),
    "operation": set(generation_metrics.PROVIDER_OPERATIONS) | {"debit", "refund"},
    "action": set(generation_metrics.SWEEP_ACTIONS),
    "kind": set(usage_metrics.ENTRY_KINDS),
}
ENVOY_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"


async def _id_bearing_calls(stack: Stack, user: User, http: httpx.AsyncClient) -> list[str]:
    """Requests whose paths and bodies carry ids; returns the ids used."""
    job_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert (await user.get(job_id)).status_code == 404
    assert (await http.get(f"{stack.api}/generations/{other}/x")).status_code == 404
    assert (await http.get(f"{stack.edge.base_url}/public/renders/{other}/0.jpg")).status_code in {
        404,
        200,
    }
    prediction_id = "labelcheck" + uuid.uuid4().hex[:12]
    event = json.dumps({"id": prediction_id, "status": "succeeded"}).encode()
    await http.post(f"{stack.gateway.base_url}/api/v1/webhooks/replicate", content=event)
    response = await user.submit("imagine", prompt="A porch swing")
    assert response.status_code == 202, response.text
    body = response.json()
    return [job_id, other, prediction_id, str(user.id), body["id"], body.get("predictionId") or ""]


def _value_allowed(label: str, value: str) -> bool:
    if label in CLOSED_SETS:
        return value in CLOSED_SETS[label]
    if label == "route":
        return value == UNMATCHED_ROUTE or value.startswith("/")
    if label == "status":
        return value.isdigit() or value in generation_metrics.JOB_STATUSES
    return True


async def test_label_values_never_carry_ids(
    stack: Stack, user: User, http: httpx.AsyncClient
) -> None:
    used_ids = [value for value in await _id_bearing_calls(stack, user, http) if value]
    assert_labels_bounded(await http_scrape(http, stack.gateway.base_url), used_ids)


def assert_labels_bounded(scrape: Scrape, used_ids: list[str]) -> None:
    """Every label of our metrics is free of ids and within its closed set."""
    checked = 0
    for sample in scrape.all_samples():
        if not sample.name.startswith(SERVICE_PREFIXES):
            continue
        for label, value in sample.labels.items():
            checked += 1
            assert not UUID.search(value), (sample.name, label, value)
            assert not any(used in value for used in used_ids), (sample.name, label, value)
            assert _value_allowed(label, value), (sample.name, label, value)
    assert checked > 100


def test_documented_reason_and_outcome_sets_are_closed() -> None:
    assert set(gateway_metrics.REJECT_REASONS) >= {
        "missing_signature",
        "bad_signature",
        "stale_timestamp",
        "too_large",
        "not_json",
    }
    assert set(usage_metrics.DEBIT_OUTCOMES) == {"recorded", "replayed", "refused", "voided"}
    assert set(usage_metrics.CREDIT_OUTCOMES) == {"recorded", "replayed", "not_debited"}


def _matches(route: dict[str, object], path: str) -> bool:
    match = route["match"]
    assert isinstance(match, dict)
    if "path" in match:
        return bool(match["path"] == path)
    return "prefix" in match and path.startswith(str(match["prefix"]))


def test_envoy_never_routes_metrics_to_a_service() -> None:
    config = yaml.safe_load(Path(ENVOY_CONFIG).read_text())
    listeners = config["static_resources"]["listeners"]
    routes = [
        route
        for listener in listeners
        for chain in listener["filter_chains"]
        for item in chain["filters"]
        for host in item["typed_config"].get("route_config", {}).get("virtual_hosts", [])
        for route in host["routes"]
    ]
    assert routes
    for path in ("/metrics", "/metrics/"):
        first = next(route for route in routes if _matches(route, path))
        assert "route" not in first, first
        assert first["direct_response"]["status"] == 404
