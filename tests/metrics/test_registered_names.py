"""Each metrics module registers the documented metrics: name, type and label names."""

from __future__ import annotations

import importlib

import pytest

from tests.metrics.helpers import local_scrape

# The documented list (README): family name -> (type, label names), per module.
DOCUMENTED: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "kit.metrics": {
        "grpc_server_handled": ("counter", ("grpc_service", "grpc_method", "grpc_code")),
        "grpc_server_handling_seconds": ("histogram", ("grpc_service", "grpc_method")),
        "http_server_requests": ("counter", ("method", "route", "status")),
        "http_server_request_duration_seconds": ("histogram", ("method", "route")),
    },
    "generation.metrics": {
        "generation_job_transitions": ("counter", ("status", "source")),
        "generation_provider_calls": ("counter", ("operation", "outcome")),
        "generation_provider_call_duration_seconds": ("histogram", ("operation",)),
        "generation_provider_retries": ("counter", ("operation", "reason")),
        "generation_provider_unavailable": ("counter", ("operation",)),
        "generation_sweep_passes": ("counter", ()),
        "generation_sweep_failures": ("counter", ()),
        "generation_sweep_jobs": ("counter", ("action",)),
        "generation_settlements": ("counter", ("operation", "outcome")),
        "generation_assets": ("counter", ("outcome",)),
    },
    "usage.metrics": {
        "usage_ledger_debits": ("counter", ("outcome",)),
        "usage_ledger_credits": ("counter", ("outcome",)),
        "usage_ledger_key_conflicts": ("counter", ("kind",)),
        "usage_plan_changes": ("counter", ("plan",)),
    },
    "edge_api.metrics": {
        "edge_uploads_rejected": ("counter", ("reason",)),
    },
    "webhook_gateway.metrics": {
        "webhook_gateway_webhooks_received": ("counter", ()),
        "webhook_gateway_webhooks_rejected": ("counter", ("reason",)),
        "webhook_gateway_webhooks_forwarded": ("counter", ("outcome",)),
        "webhook_gateway_forward_failures": ("counter", ("grpc_code",)),
    },
}
# Children that exist from import on (so dashboards see zeros before the first event).
PREINITIALIZED = {
    "generation_job_transitions",
    "generation_provider_calls",
    "generation_provider_retries",
    "generation_sweep_jobs",
    "generation_settlements",
    "generation_assets",
    "usage_ledger_debits",
    "usage_ledger_credits",
    "edge_uploads_rejected",
    "webhook_gateway_webhooks_rejected",
    "webhook_gateway_webhooks_forwarded",
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_module_registers_its_documented_metrics(module: str) -> None:
    importlib.import_module(module)
    scrape = local_scrape()
    for name, (kind, labels) in DOCUMENTED[module].items():
        assert scrape.families.get(name) == kind, name
        samples = [
            sample
            for sample in scrape.all_samples()
            if sample.name.startswith(name) and not sample.name.endswith("_created")
        ]
        if name in PREINITIALIZED or not labels:
            assert samples, f"{name} exports nothing before its first event"
        for sample in samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample.labels)


def test_every_exported_service_metric_is_documented() -> None:
    for module in DOCUMENTED:
        importlib.import_module(module)
    documented = {name for names in DOCUMENTED.values() for name in names}
    prefixes = ("grpc_server_", "http_server_", "generation_", "usage_", "edge_", "webhook_")
    exported = {
        name
        for name in local_scrape().families
        if name.startswith(prefixes) and not name.endswith("_created")
    }
    assert exported - documented == set()
