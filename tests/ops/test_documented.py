"""What the README and the RUNBOOK name against what the services really have: every
exported metric and every setting documented, every health command one that can fail."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import edge_api.metrics
import generation.metrics
import kit.metrics
import usage.metrics
import webhook_gateway.metrics
from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from usage.settings import UsageSettings
from webhook_gateway.settings import GatewaySettings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
DEPLOY_README = (REPO / "deploy" / "README.md").read_text(encoding="utf-8")
RUNBOOK = (REPO / "deploy" / "RUNBOOK.md").read_text(encoding="utf-8")
METRIC_MODULES: tuple[ModuleType, ...] = (
    kit.metrics,
    generation.metrics,
    usage.metrics,
    edge_api.metrics,
    webhook_gateway.metrics,
)
SETTINGS: tuple[type[BaseSettings], ...] = (
    GenerationSettings,
    UsageSettings,
    EdgeSettings,
    GatewaySettings,
)


def _exported_metrics() -> set[str]:
    names = set()
    for module in METRIC_MODULES:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def _metrics_table() -> set[str]:
    section = README.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


def test_every_exported_metric_is_in_the_readme_metrics_table() -> None:
    """The RUNBOOK sends operators there for the names its alerts use."""
    assert sorted(_exported_metrics() - _metrics_table()) == []


def _variables(settings: type[BaseSettings]) -> set[str]:
    names: set[str] = set()
    for field in settings.model_fields.values():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif alias:
            names.add(str(alias))
    return names


def test_every_setting_a_service_reads_is_documented() -> None:
    documented = README + DEPLOY_README
    undocumented = sorted(
        f"{variable} ({settings.__name__})"
        for settings in SETTINGS
        for variable in _variables(settings)
        if not re.search(rf"\b{re.escape(variable)}\b", documented)
    )
    assert undocumented == []


def test_the_runbooks_grpc_health_commands_name_the_service() -> None:
    """Unnamed, the check asks the process's overall status, SERVING for its whole life
    (the liveness probe's): it would say healthy while the database is down."""
    commands = re.findall(r"healthcheck\.py\s+grpc\s+(\S+)\s+(\S+)", RUNBOOK)
    assert commands
    for target, service in commands:
        assert re.match(r"interior\.(generation|usage)\.v1\.\w+Service\b", service), target
