"""The dashboard and the alert rules: valid, and naming only metrics the services really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

# Imported for their side effect: each module registers its metrics in REGISTRY.
import edge_api.metrics
import generation.metrics
import kit.metrics
import usage.metrics
import webhook_gateway.metrics
from launcher.components import free_port
from testkit.envoy import running_envoy
from tests.ops.promql import metric_names, selectors

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "dashboard.json"
ALERTS = OBSERVABILITY / "alerts.yml"
ALERTS_TEST = OBSERVABILITY / "alerts.test.yml"
RUNBOOK = REPO / "deploy" / "RUNBOOK.md"
METRICS_MODULES: tuple[ModuleType, ...] = (
    kit.metrics,
    generation.metrics,
    usage.metrics,
    edge_api.metrics,
)
METRICS_MODULES += (webhook_gateway.metrics,)

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


# Series Prometheus makes itself for every target it scrapes.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}


_SERIES_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ")
_LABEL_NAME = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


@cache
def envoy_series() -> dict[str, set[str]]:
    """What a real Envoy on the deployed config serves on its stats listener (GET
    /stats/prometheus): series name -> label names."""
    series: dict[str, set[str]] = {}
    with (
        tempfile.TemporaryDirectory() as directory,
        running_envoy(Path(directory), free_port(), free_port()) as envoy,
    ):
        text = httpx.get(f"http://127.0.0.1:{envoy.stats_port}/stats/prometheus").text
    for line in text.splitlines():
        if (match := _SERIES_LINE.match(line)) is not None:
            labels = set(_LABEL_NAME.findall(match.group(2) or ""))
            series.setdefault(match.group(1), set()).update(labels)
    return series


@cache
def exported() -> dict[str, set[str]]:
    """Every series name our services and Envoy export (and Prometheus' own per
    target) -> the label names it carries."""
    names: dict[str, set[str]] = dict(PROMETHEUS_SERIES) | envoy_series()
    for module in METRICS_MODULES:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    labels = set(value._labelnames)
                    for suffix in _SUFFIXES.get(family.type, ("",)):
                        extra = {"le"} if suffix == "_bucket" else set()
                        names[family.name + suffix] = labels | extra
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def all_exprs() -> list[tuple[str, str]]:
    rules = [(rule["alert"], rule["expr"]) for rule in alert_rules()]
    return [*dashboard_exprs(), *rules]


def test_the_promql_reader_finds_metrics_and_skips_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{route="/x", le!=""}[5m])))'
        " / on (route) sum(b_total) > 0 and c == 0"
    )
    assert selectors(expr) == [("a_bucket", {"route", "le"}), ("b_total", set()), ("c", set())]


def test_the_cross_check_knows_the_services_metrics() -> None:
    names = exported()
    assert names["generation_job_transitions_total"] == {"status", "source"}
    assert names["http_server_request_duration_seconds_bucket"] == {"method", "route", "le"}
    assert "webhook_gateway_webhooks_rejected_total" in names
    assert "usage_ledger_debits_total" in names
    # A name nobody exports is caught: this one has no _total.
    assert "generation_job_transitions" not in names
    # Envoy's, as its stats listener serves them.
    assert {"envoy_cluster_name"} <= names["envoy_cluster_membership_healthy"]
    assert {"envoy_response_code_class", "envoy_http_conn_manager_prefix"} <= names[
        "envoy_http_downstream_rq_xx"
    ]
    # And they are the ones registered in the default registry that /metrics serves.
    registered = {family.name for family in REGISTRY.collect()}
    assert {"generation_job_transitions", "grpc_server_handling_seconds"} <= registered


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_every_expression_names_only_exported_metrics_and_their_labels(
    where: str, expr: str
) -> None:
    names = exported()
    found = selectors(expr)
    assert found, where
    for metric, labels in found:
        assert metric in names, f"{where}: {metric} is not exported by any service"
        assert labels <= names[metric], f"{where}: {metric} has no label {labels - names[metric]}"


def test_the_dashboard_is_an_importable_model_with_a_prometheus_datasource_variable() -> None:
    model = dashboard()
    [variable] = [v for v in model["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    assert isinstance(model["schemaVersion"], int)
    assert model["uid"]
    assert model["title"]
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    for panel in model["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_the_dashboard_covers_each_topic() -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    exprs = " ".join(expr for _, expr in dashboard_exprs())
    for metric in (
        "generation_job_transitions_total",
        "generation_provider_calls_total",
        "generation_provider_retries_total",
        "generation_provider_unavailable_total",
        "webhook_gateway_webhooks_rejected_total",
        "generation_sweep_jobs_total",
        "generation_settlements_total",
        "http_server_request_duration_seconds_bucket",
        "grpc_server_handling_seconds_bucket",
    ):
        assert metric in used, metric
    assert "histogram_quantile(0.95, sum by (le, route)" in exprs
    assert "histogram_quantile(0.95, sum by (le, grpc_service, grpc_method)" in exprs


def _runbook_anchors() -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.M)
    # GitHub's anchors: lower case, punctuation dropped, spaces as hyphens.
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_explains_itself_and_links_an_existing_runbook_section() -> None:
    anchors = _runbook_anchors()
    rules = alert_rules()
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "deploy/RUNBOOK.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no RUNBOOK.md section #{anchor}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
    alerts = {rule["alert"] for rule in rules}
    assert {"GenerationJobsStuck", "ProviderFailureRateHigh", "SettlementBacklog"} <= alerts
    assert {"WebhookSignatureFailures", "Http5xxRateHigh", "GenerationJobsTimingOut"} <= alerts
    assert {"EnvoyUpstreamUnhealthy", "EnvoyErrorRateHigh"} <= alerts


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERTS_TEST)]):
        result = subprocess.run(
            [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    # Grafana fills $__rate_interval in; as recording rules promtool parses the rest.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
