"""The Kubernetes base, parsed and cross-checked against the code, Envoy and compose."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import yaml

from edge_api.settings import EdgeSettings
from generation.settings import GenerationSettings
from kit.db import create_engine
from kit.dev_values import secret_problem
from kit.settings import DatabaseSettings, GrpcServerSettings
from launcher.components import free_port
from launcher.envoy import LOG_FORMAT as ENVOY_LOG_FORMAT
from testkit.envoy import running_envoy
from tests.deploy.support import (
    DEPLOY,
    K8S_BASE,
    MODULES,
    PORTS,
    REPO,
    S3_USER_VARIABLES,
    SETTINGS,
    envoy_config,
    envoy_upstreams,
    known_variables,
    kustomization,
    objects,
    settings_variables,
    with_identity_files,
)

SERVICES = ("generation", "usage", "edge-api", "webhook-gateway", "envoy")
GRPC = ("generation", "usage")
HTTP = ("edge-api", "webhook-gateway")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def _pod(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = objects("Deployment")[name]["spec"]["template"]["spec"]
    return pod


def _container(name: str) -> dict[str, Any]:
    containers = _pod(name)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _all_containers() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for name in objects("Deployment"):
        pod = _pod(name)
        found += [(name, c) for c in pod.get("initContainers", []) + pod["containers"]]
    return found


def _generated(name: str) -> dict[str, Any]:
    generators = {g["name"]: g for g in kustomization()["configMapGenerator"]}
    generator: dict[str, Any] = generators[name]
    return generator


def _config_env() -> dict[str, str]:
    pairs = (literal.split("=", 1) for literal in _generated("interior-env")["literals"])
    return dict(pairs)


def test_kustomization_lists_every_file_of_the_base() -> None:
    files = {p.name for p in K8S_BASE.iterdir()} - {"kustomization.yaml"}
    resources = kustomization()["resources"]
    generated = {f for g in kustomization()["configMapGenerator"] for f in g.get("files", [])}

    assert {r for r in resources if not r.startswith("..")} | generated == files
    assert "../../envoy" in resources
    for resource in resources:
        assert (K8S_BASE / resource).exists(), resource


def test_envoy_writes_its_own_lines_as_json_as_the_launcher_has_it() -> None:
    command = _container("envoy")["command"]
    assert command[command.index("--log-format") + 1] == ENVOY_LOG_FORMAT


def test_the_envoy_configmap_is_generated_from_the_one_envoy_file() -> None:
    envoy_kustomization = yaml.safe_load((DEPLOY / "envoy" / "kustomization.yaml").read_text())
    [generator] = envoy_kustomization["configMapGenerator"]
    assert generator["files"] == ["envoy.yaml"]
    pod = _pod("envoy")
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "envoy-config")
    mount = next(m for m in _container("envoy")["volumeMounts"] if m["name"] == volume["name"])
    command = _container("envoy")["command"]

    assert generator["name"] == "envoy-config"
    assert command[0] == "envoy"
    assert command[command.index("-c") + 1] == f"{mount['mountPath']}/envoy.yaml"


def test_the_runtime_config_copy_is_identical_to_the_repository_file() -> None:
    assert (K8S_BASE / "runtime.toml").read_bytes() == (REPO / "config/runtime.toml").read_bytes()
    assert _generated("interior-runtime-config")["files"] == ["runtime.toml"]
    target = Path(_config_env()["RUNTIME_CONFIG_FILE"])
    for name in SERVICES[:-1]:
        volume = next(v for v in _pod(name)["volumes"] if v["name"] == "runtime-config")
        mount = next(m for m in _container(name)["volumeMounts"] if m["name"] == "runtime-config")
        assert volume["configMap"]["name"] == "interior-runtime-config"
        assert Path(mount["mountPath"]) / "runtime.toml" == target


def test_the_namespace_object_is_the_kustomization_namespace() -> None:
    assert list(objects("Namespace")) == [kustomization()["namespace"]]


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_deployment_a_service_and_probes(name: str) -> None:
    deployment = objects("Deployment")[name]
    service = objects("Service")[name]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = _container(name)

    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The serving port first; a gRPC service's metrics port may follow (for monitors).
    service_port, *others = service["spec"]["ports"]
    assert ports[service_port["targetPort"]] == PORTS[name]
    assert [other["name"] for other in others] in ([], ["metrics"])
    if name != "envoy":
        assert service_port["port"] == PORTS[name]
        assert container["command"] == ["python", "-m", MODULES[name]]
    for probe in PROBES:
        assert probe in container, f"{name}: no {probe}"


@pytest.mark.parametrize("name", GRPC)
def test_grpc_services_are_probed_with_native_grpc_health(name: str) -> None:
    container = _container(name)
    for probe in PROBES:
        assert container[probe]["grpc"] == {"port": PORTS[name]}


# The edge is ready on its own health: on its backends', one backend outage would take
# every edge pod out at once, and Envoy would answer 503 for what the edge still serves
# (the catalog, public renders, settled jobs). The gateway serves nothing without
# generation, so its readiness follows generation's.
READINESS = {"edge-api": "/healthz", "webhook-gateway": "/readyz"}


@pytest.mark.parametrize("name", HTTP)
def test_http_services_are_probed_for_liveness_and_readiness(name: str) -> None:
    container = _container(name)
    assert container["readinessProbe"]["httpGet"] == {"path": READINESS[name], "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_envoy_readiness_asks_the_local_admin_port() -> None:
    container = _container("envoy")
    admin = envoy_config()["admin"]["address"]["socket_address"]
    command = container["readinessProbe"]["exec"]["command"]

    assert admin["address"] == "127.0.0.1"  # never reachable from outside the pod
    assert command == [
        "python",
        "/app/deploy/docker/healthcheck.py",
        "http",
        f"http://127.0.0.1:{admin['port_value']}/ready",
    ]
    listener = envoy_config()["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["port_value"] == PORTS["envoy"]
    assert objects("Service")["envoy"]["spec"]["type"] == "LoadBalancer"


def test_envoys_workers_fit_its_cpu_limit() -> None:
    """Each worker is a thread busy on its own core: more workers than the limit's cores
    share one core's quota and are throttled together."""
    container = _container("envoy")
    command = container["command"]
    workers = int(command[command.index("--concurrency") + 1])
    assert workers <= float(container["resources"]["limits"]["cpu"])


def test_envoy_upstreams_are_headless_services_on_the_right_ports() -> None:
    services = objects("Service")
    for host, port in envoy_upstreams().values():
        spec = services[host]["spec"]
        assert spec["clusterIP"] == "None", "Envoy must see every pod, not one virtual IP"
        assert [p["port"] for p in spec["ports"]] == [port]


def test_grpc_targets_name_headless_services_and_their_ports() -> None:
    env = _config_env()
    services = objects("Service")
    for variable in ("GENERATION_GRPC_TARGET", "USAGE_GRPC_TARGET"):
        host, port = env[variable].rsplit(":", 1)
        grpc_ports = [p["port"] for p in services[host]["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_ports == [int(port)]
        assert int(port) == PORTS[host]
        # One virtual IP would keep each caller's HTTP/2 connection on one pod.
        assert services[host]["spec"]["clusterIP"] == "None", variable


def test_every_container_has_requests_limits_and_a_locked_down_security_context() -> None:
    for name, container in _all_containers():
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]), name
        assert (
            {"cpu", "memory"}
            <= set(resources["requests"])
            <= {
                "cpu",
                "memory",
                "ephemeral-storage",
            }
        ), name
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["image"] == "interior-backend"
    for name in objects("Deployment"):
        pod = _pod(name)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 1000
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # no injected *_PORT variables
    images = [image["name"] for image in kustomization()["images"]]
    assert images == ["interior-backend"]


def test_hpas_and_pdbs_cover_every_deployment() -> None:
    deployments = objects("Deployment")
    hpas = objects("HorizontalPodAutoscaler")
    assert set(hpas) == set(deployments) == set(SERVICES)
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert target["name"] in deployments
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployments[name]["spec"], "the HPA owns the count"
    for name, pdb in objects("PodDisruptionBudget").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert set(objects("PodDisruptionBudget")) == set(SERVICES)


def test_every_variable_name_is_read_by_some_service() -> None:
    names = set(_config_env()) | set(objects("Secret")["interior-secrets"]["stringData"])
    for _, container in _all_containers():
        names |= {variable["name"] for variable in container.get("env", [])}

    assert names <= known_variables(), sorted(names - known_variables())


def _secret_key_for(deployment: str, variable: str) -> str:
    """The Secret key a variable comes from: its own name, except S3 credentials,
    which are one S3 user per Deployment (tests/deploy/support.py S3_USER_VARIABLES)."""
    if variable in {"S3_ACCESS_KEY", "S3_SECRET_KEY"}:
        access, secret = S3_USER_VARIABLES[deployment]
        return access if variable == "S3_ACCESS_KEY" else secret
    return variable


def test_secret_and_configmap_references_resolve() -> None:
    secret = objects("Secret")["interior-secrets"]["stringData"]
    generated = {g["name"] for g in kustomization()["configMapGenerator"]}
    for name, container in _all_containers():
        for variable in container.get("env", []):
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "interior-secrets"
            assert ref["key"] == _secret_key_for(name, variable["name"]), name
            assert ref["key"] in secret, name
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in generated


@pytest.mark.parametrize("name", GRPC)
def test_migrations_run_in_an_init_container_with_the_service_database(name: str) -> None:
    [init] = _pod(name)["initContainers"]
    variable = f"{name.upper()}_DATABASE_URL"

    assert init["command"] == ["python", "-m", name, "migrate"]
    assert [v["name"] for v in init["env"]] == [variable]
    assert variable in {v["name"] for v in _container(name)["env"]}
    assert _config_env()["RUN_MIGRATIONS"] == "false"


@pytest.mark.parametrize("name", SERVICES[:-1])
def test_each_service_builds_its_settings_from_the_configmap_and_its_secrets(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cls = SETTINGS[name]
    for variable in settings_variables(cls):
        monkeypatch.delenv(variable, raising=False)
    # Well-formed stand-ins for the Secret's placeholders.
    secrets = {
        "GENERATION_DATABASE_URL": "postgresql+asyncpg://g:pw@db:5432/generation",
        "USAGE_DATABASE_URL": "postgresql+asyncpg://u:pw@db:5432/usage",
        "S3_ACCESS_KEY": "key",
        "S3_SECRET_KEY": "an-operators-s3-secret",
        "AUTH_JWT_SECRET": "an-operators-own-jwt-secret-0f3a9c2b7d1e",
        "REPLICATE_API_TOKEN": "r8_an_operators_token",
        "REPLICATE_WEBHOOK_SECRET": "whsec_YW4tb3BlcmF0b3JzLXdlYmhvb2sta2V5",
    }
    given = {v["name"]: secrets[v["name"]] for v in _container(name)["env"]}
    # What an overlay must set: the base's https://api.example.com is refused (below).
    overlay = {"WEBHOOK_BASE_URL": "https://api.interior-designs.app"}
    environment = with_identity_files({**_config_env(), **given, **overlay}, tmp_path)

    values: dict[str, Any] = {k: v for k, v in environment.items() if k in settings_variables(cls)}
    settings = cls(**values)

    assert set(given) <= settings_variables(cls), "a secret the service never reads"
    dumped = settings.model_dump()
    assert PORTS[name] in dumped.values()
    assert "0.0.0.0" in dumped.values()


def test_the_bases_example_webhook_url_is_refused_in_production() -> None:
    """An overlay that forgets WEBHOOK_BASE_URL would send every webhook to example.com
    (jobs then end only by polling and the sweep): generation refuses to start."""
    url = _config_env()["WEBHOOK_BASE_URL"]
    problems = list(GenerationSettings.model_construct(webhook_base_url=url).production_problems())
    assert any("WEBHOOK_BASE_URL" in problem for problem in problems), (url, problems)


def test_every_placeholder_of_the_secret_template_is_refused_in_production() -> None:
    secret = objects("Secret")["interior-secrets"]["stringData"]

    assert secret
    for key, value in secret.items():
        assert secret_problem(value) is not None, f"{key} would be accepted as a real secret"


def test_the_base_runs_in_production_and_documents_the_jwks_option() -> None:
    assert _config_env()["APP_ENV"] == "production"
    documented = (K8S_BASE / "kustomization.yaml").read_text() + (
        K8S_BASE / "secret.yaml"
    ).read_text()
    assert "AUTH_JWKS_URL=https://" in documented


def _s3_keys(name: str) -> set[str]:
    return {
        v["valueFrom"]["secretKeyRef"]["key"]
        for v in _container(name).get("env", [])
        if v["name"] in {"S3_ACCESS_KEY", "S3_SECRET_KEY"}
    }


def test_each_deployment_with_s3_access_has_its_own_credential() -> None:
    holders = {name for name in objects("Deployment") if _s3_keys(name)}
    assert holders == {"generation", "edge-api"}
    assert _s3_keys("generation").isdisjoint(_s3_keys("edge-api"))
    secret = objects("Secret")["interior-secrets"]["stringData"]
    assert "S3_ACCESS_KEY" not in secret, "no shared S3 credential"


@pytest.mark.parametrize("name", GRPC)
def test_database_urls_of_the_template_verify_the_servers_certificate(name: str) -> None:
    url = objects("Secret")["interior-secrets"]["stringData"][f"{name.upper()}_DATABASE_URL"]
    query = dict(parse_qsl(urlsplit(url).query))
    assert query == {"ssl": "verify-full"}
    # kit's engine hands the option to asyncpg as it is.
    engine = create_engine(DatabaseSettings.model_validate({"DATABASE_URL": url}))
    try:
        assert engine.dialect.create_connect_args(engine.url)[1]["ssl"] == "verify-full"
    finally:
        engine.sync_engine.dispose()


def test_the_base_pins_the_image_by_a_digest_placeholder_not_a_tag() -> None:
    [image] = kustomization()["images"]
    assert "newTag" not in image, "a tag moves; an overlay sets `digest:`"
    assert image["digest"].startswith("sha256:")
    # Deliberately not 64 hex digits: an invalid reference the cluster refuses to pull.
    assert not re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"])
    assert "digest:" in (DEPLOY / "README.md").read_text()


@pytest.mark.parametrize("name", SERVICES[:-1])
def test_each_service_mounts_only_its_own_private_key(name: str) -> None:
    volumes = {v["name"]: v for v in _pod(name)["volumes"]}
    mounts = {m["name"]: m for m in _container(name)["volumeMounts"]}
    secrets = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}

    assert volumes["identity"]["secret"]["secretName"] == f"identity-{name}"
    assert secrets == (
        {f"identity-{name}", "service-trust"} if name in GRPC else {f"identity-{name}"}
    )
    env = _config_env()
    assert env["SERVICE_KEY_FILE"].startswith(mounts["identity"]["mountPath"] + "/")
    if name in GRPC:
        assert env["SERVICE_TRUST_DIR"] == mounts["trust"]["mountPath"]
    assert all(m["readOnly"] for m in mounts.values() if m["name"] in {"identity", "trust"})
    # The files are 0440 to the pod's group: the non-root user can read them.
    assert _pod(name)["securityContext"]["fsGroup"] == _pod(name)["securityContext"]["runAsGroup"]


def test_the_identity_templates_are_refused_in_production(tmp_path: Path) -> None:
    secrets = objects("Secret")
    key = tmp_path / "service.key"
    key.write_text(secrets["identity-usage"]["stringData"]["service.key"])
    trust = tmp_path / "trust"
    trust.mkdir()
    for file_name, text in secrets["service-trust"]["stringData"].items():
        (trust / file_name).write_text(text)

    with pytest.raises(ValueError, match="SERVICE_KEY_FILE") as refused:
        GrpcServerSettings(
            APP_ENV="production", SERVICE_KEY_FILE=str(key), SERVICE_TRUST_DIR=str(trust)
        )
    assert "SERVICE_TRUST_DIR" in str(refused.value)


@pytest.mark.parametrize("name", ["generation", "usage"])
def test_the_migrations_connect_as_the_service_does(name: str) -> None:
    """The DSNs verify the server's certificate (ssl=verify-full), and asyncpg finds the
    CA only through PGSSLROOTCERT here: the migrate init container gets it from the same
    ConfigMap as the service (an overlay that points it at its database's CA reaches
    both), or the pod never starts."""
    [migrate] = _pod(name)["initContainers"]
    assert {"configMapRef": {"name": "interior-env"}} in migrate.get("envFrom", [])
    assert {"configMapRef": {"name": "interior-env"}} in _container(name)["envFrom"]
    assert _config_env()["PGSSLROOTCERT"].startswith("/")


def test_envoy_drains_before_it_stops() -> None:
    """On a rollout or a scale-down, Envoy stops taking connections and lets requests
    under way finish (an upload's answer comes up to 60 s after its body) before
    SIGTERM: a bare sleep left every in-flight upload and stream to be reset."""
    pod = _pod("envoy")
    [envoy] = pod["containers"]
    pre_stop = " ".join(envoy["lifecycle"]["preStop"]["exec"]["command"])
    assert "/drain_listeners?graceful" in pre_stop
    assert "/healthcheck/fail" in pre_stop
    waited = float(re.search(r"time\.sleep\((\d+)\)", pre_stop).group(1))  # type: ignore[union-attr]
    assert waited > 60
    assert pod["terminationGracePeriodSeconds"] > waited
    arguments = envoy["command"]
    assert arguments[arguments.index("--drain-strategy") + 1] == "immediate"


def _envoy_pre_stop(admin_port: int) -> list[str]:
    """The preStop command, with the test's admin port and its wait shown, not slept."""
    command = list(_pod("envoy")["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
    script = command[-1]
    assert "time.sleep(65)" in script
    assert "127.0.0.1:9901" in script
    command[-1] = script.replace("time.sleep(65)", "print('waited', flush=True)").replace(
        "127.0.0.1:9901", f"127.0.0.1:{admin_port}"
    )
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


def test_envoy_prestop_fails_readiness_and_drains_a_real_envoy(tmp_path: Path) -> None:
    """Run the preStop against the real Envoy on deploy/envoy/envoy.yaml: the readiness
    probe's /ready must answer 503 after it (a graceful drain alone leaves it 200
    LIVE, so a terminating endpoint kept taking new connections)."""
    with running_envoy(tmp_path, free_port(), free_port()) as envoy:
        ready = f"http://127.0.0.1:{envoy.admin_port}/ready"
        assert httpx.get(ready).status_code == 200
        done = subprocess.run(
            _envoy_pre_stop(envoy.admin_port), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "waited"
        answer = httpx.get(ready)
        assert answer.status_code == 503
        assert "DRAINING" in answer.text


def test_envoy_prestop_waits_even_when_the_admin_does_not_answer() -> None:
    """A failed admin call must not end the preStop early (SIGTERM would follow at once,
    cutting every request under way): it says so and waits all the same."""
    done = subprocess.run(_envoy_pre_stop(free_port()), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "waited"
    assert [line.split()[1] for line in lines[:-1]] == [
        "/healthcheck/fail",
        "/drain_listeners?graceful",
    ]


_APP_DEPLOYMENTS = ("edge-api", "generation", "usage", "webhook-gateway")


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    return float(command[1]) if command and command[0] == "sleep" else 0.0


@pytest.mark.parametrize("name", _APP_DEPLOYMENTS)
def test_a_stopping_pod_lets_a_submission_under_way_end(name: str) -> None:
    """On a rollout or a scale-down, a submission that already reached generation may
    take up to the edge's submit deadline: the shutdown grace covers it (10 s cut it,
    and the client got Envoy's 503 on a POST it does not retry), and the pod is killed
    only after its preStop, that grace and the exit."""
    grace = float(_config_env()["SHUTDOWN_GRACE_SECONDS"])
    submit = float(
        _config_env().get(
            "GRPC_SUBMIT_DEADLINE_SECONDS",
            EdgeSettings.model_fields["grpc_submit_deadline_seconds"].default,
        )
    )
    assert grace >= submit + 2
    pod = _pod(name)
    pre_stop = _pre_stop_seconds(pod["containers"][0])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 5


@pytest.mark.parametrize("name", _APP_DEPLOYMENTS)
def test_prometheus_can_find_every_exporter(name: str) -> None:
    """The alerts assume Prometheus scrapes each service: the pod annotations of the
    usual kubernetes-pods job name a port the container declares, and the gRPC
    services' Services list their metrics port (for a ServiceMonitor)."""
    deployment = objects("Deployment")[name]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    declared = {port["containerPort"] for port in _container(name)["ports"]}
    assert int(annotations["prometheus.io/port"]) in declared
    if name in ("generation", "usage"):
        service_ports = {p["name"]: p for p in objects("Service")[name]["spec"]["ports"]}
        assert service_ports["metrics"]["targetPort"] == "metrics"
        assert service_ports["metrics"]["port"] == int(annotations["prometheus.io/port"])
