"""What the launcher starts and where: ports, data directory, and each part's settings.

Everything comes from the environment with embedded defaults. A variable from the
product contract (DATABASE_URL, S3_ENDPOINT, REPLICATE_API_BASE_URL, ...) replaces
the embedded part it names; the services receive the resolved values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kit.dev_values import (
    DEV_JWT_SECRET,
    DEV_REPLICATE_TOKEN,
    DEV_S3_ACCESS_KEY,
    DEV_S3_SECRET_KEY,
    DEV_WEBHOOK_SECRET,
    secret_problem,
)
from launcher.components import free_port

__all__ = [
    "DEV_JWT_SECRET",
    "DEV_REPLICATE_TOKEN",
    "DEV_S3_ACCESS_KEY",
    "DEV_S3_SECRET_KEY",
    "DEV_WEBHOOK_SECRET",
    "ConfigError",
    "LauncherConfig",
    "Ports",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

DATABASES = ("generation", "usage")
DEV_CORS_ORIGINS = "http://localhost:3000,http://127.0.0.1:3000,http://localhost:5173"


class ConfigError(Exception):
    """The environment asks for something the launcher cannot do."""


@dataclass(frozen=True)
class Ports:
    """Every TCP port the local system uses; each one has its own variable."""

    public: int = 8080
    envoy_admin: int = 9901
    # Envoy's GET /stats/prometheus (its stats listener, deploy/envoy/envoy.yaml).
    envoy_stats: int = 9902
    generation_grpc: int = 50051
    usage_grpc: int = 50052
    edge_http: int = 8081
    gateway_http: int = 8082
    emulator: int = 8090
    s3: int = 9000
    postgres: int = 54329
    generation_metrics: int = 9101
    usage_metrics: int = 9102

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """Defaults, replaced by any of the port variables that are set."""
        values: dict[str, int] = {}
        for name, variable in PORT_VARIABLES.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
            if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
                raise ConfigError(f"{variable}={raw!r} is not a TCP port")
            values[name] = int(raw)
        ports = cls(**values)
        owners: dict[int, str] = {}
        for name, variable in PORT_VARIABLES.items():
            port = getattr(ports, name)
            if port in owners:
                # Two parts on one port: the second would fail to bind while the first
                # answered its readiness probe for it.
                raise ConfigError(f"{owners[port]} and {variable} are both {port}")
            owners[port] = variable
        return ports

    @classmethod
    def free(cls) -> Ports:
        """Ports that are free right now (for tests that run a whole system)."""
        return cls(**{name: free_port() for name in PORT_VARIABLES})

    def env(self) -> dict[str, str]:
        """The port variables, as passed to every service."""
        return {var: str(getattr(self, name)) for name, var in PORT_VARIABLES.items()}


PORT_VARIABLES = {
    "public": "PUBLIC_PORT",
    "envoy_admin": "ENVOY_ADMIN_PORT",
    "envoy_stats": "ENVOY_STATS_PORT",
    "generation_grpc": "GENERATION_GRPC_PORT",
    "usage_grpc": "USAGE_GRPC_PORT",
    "edge_http": "EDGE_HTTP_PORT",
    "gateway_http": "GATEWAY_HTTP_PORT",
    "emulator": "EMULATOR_PORT",
    "s3": "S3_PORT",
    "postgres": "PG_PORT",
    "generation_metrics": "GENERATION_METRICS_PORT",
    "usage_metrics": "USAGE_METRICS_PORT",
}


@dataclass(frozen=True)
class LauncherConfig:
    """The resolved plan: None for an external part means "start the embedded one"."""

    data_dir: Path
    ports: Ports
    generation_database_url: str | None
    usage_database_url: str | None
    s3_endpoint: str | None
    s3_access_key: str
    s3_secret_key: str
    s3_secure: bool
    replicate_base_url: str | None
    replicate_token: str | None
    replicate_webhook_secret: str | None
    auth_jwt_secret: str
    webhook_base_url: str
    runtime_config_file: Path
    # The caller's whole environment; children inherit it under the resolved values.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    # LAUNCHER_RELOAD: restart a service when its source changes (local iteration only).
    reload: bool = False
    # Where the watched services/*/src and libs/* live (a test points it elsewhere).
    reload_root: Path = REPO_ROOT
    # PUBLIC_HOST: the address Envoy listens on. Loopback unless asked: development
    # accepts tokens signed with the published dev secret.
    public_host: str = "127.0.0.1"
    # ENVOY_RATE_LIMITS=report-only: Envoy's upload limits count without refusing (the
    # bench's load; never a deployment).
    rate_limits_report_only: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LauncherConfig:
        """Resolve the plan from ``env`` (usually ``os.environ``)."""
        ports = Ports.from_env(env)
        public_host = _public_host(env)
        database_url = _get(env, "DATABASE_URL")
        replicate_base = _get(env, "REPLICATE_API_BASE_URL")
        emulated = replicate_base is None
        return cls(
            data_dir=Path(_get(env, "LAUNCHER_DATA_DIR") or REPO_ROOT / ".var").resolve(),
            ports=ports,
            generation_database_url=_get(env, "GENERATION_DATABASE_URL") or database_url,
            usage_database_url=_get(env, "USAGE_DATABASE_URL") or database_url,
            s3_endpoint=_get(env, "S3_ENDPOINT"),
            s3_access_key=_get(env, "S3_ACCESS_KEY") or DEV_S3_ACCESS_KEY,
            s3_secret_key=_get(env, "S3_SECRET_KEY") or DEV_S3_SECRET_KEY,
            s3_secure=(_get(env, "S3_SECURE") or "false").lower() in {"1", "true", "yes"},
            replicate_base_url=replicate_base,
            # Emulator defaults only apply to the emulator; a real provider needs real values.
            replicate_token=_get(env, "REPLICATE_API_TOKEN")
            or (DEV_REPLICATE_TOKEN if emulated else None),
            replicate_webhook_secret=_get(env, "REPLICATE_WEBHOOK_SECRET")
            or (DEV_WEBHOOK_SECRET if emulated else None),
            auth_jwt_secret=_get(env, "AUTH_JWT_SECRET") or DEV_JWT_SECRET,
            webhook_base_url=_get(env, "WEBHOOK_BASE_URL") or _origin(public_host, ports.public),
            runtime_config_file=Path(
                _get(env, "RUNTIME_CONFIG_FILE") or REPO_ROOT / "config" / "runtime.toml"
            ),
            environ=dict(env),
            reload=_flag(env, "LAUNCHER_RELOAD"),
            reload_root=Path(_get(env, "LAUNCHER_RELOAD_ROOT") or REPO_ROOT).resolve(),
            public_host=public_host,
            rate_limits_report_only=_rate_limits_report_only(env),
        )

    def with_ports(self, ports: Ports) -> LauncherConfig:
        """The same plan on other ports (the webhook URL follows the public port)."""
        webhook = self.webhook_base_url
        if webhook == self.public_origin:
            webhook = _origin(self.public_host, ports.public)
        return dataclasses.replace(self, ports=ports, webhook_base_url=webhook)

    @property
    def public_origin(self) -> str:
        """Where Envoy is reached from this machine (its listener, or loopback for 0.0.0.0)."""
        return _origin(self.public_host, self.ports.public)

    @property
    def embedded_postgres(self) -> bool:
        return self.generation_database_url is None or self.usage_database_url is None

    @property
    def embedded_s3(self) -> bool:
        return self.s3_endpoint is None

    @property
    def embedded_emulator(self) -> bool:
        return self.replicate_base_url is None

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def embedded_database_url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.ports.postgres}/{name}"

    def database_url(self, service: str) -> str:
        """The database of ``service`` ("generation" or "usage")."""
        given = self.generation_database_url if service == "generation" else self.usage_database_url
        return given or self.embedded_database_url(service)

    def s3_endpoint_address(self) -> str:
        return self.s3_endpoint or f"127.0.0.1:{self.ports.s3}"

    def replicate_url(self) -> str:
        return self.replicate_base_url or f"http://127.0.0.1:{self.ports.emulator}"

    def grpc_target(self, service: str) -> str:
        """Where clients reach ``service``; GENERATION_/USAGE_GRPC_TARGET win when set."""
        variable = f"{service.upper()}_GRPC_TARGET"
        port = self.ports.generation_grpc if service == "generation" else self.ports.usage_grpc
        return _get(self.environ, variable) or f"127.0.0.1:{port}"

    def cors_origins(self) -> tuple[str, ...]:
        """The browser origins the edge allows (CORS_ALLOWED_ORIGINS, as it reads them)."""
        value = _get(self.environ, "CORS_ALLOWED_ORIGINS") or DEV_CORS_ORIGINS
        return tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())

    def service_env(self) -> dict[str, str]:
        """The variables every service process gets (on top of the inherited ones)."""
        env = {
            # The local system runs on the published dev values: it says so, and only
            # APP_ENV=development lets a service accept them.
            "APP_ENV": _get(self.environ, "APP_ENV") or "development",
            # Local frontends (Next.js, Vite) may call the API from their dev servers.
            "CORS_ALLOWED_ORIGINS": _get(self.environ, "CORS_ALLOWED_ORIGINS") or DEV_CORS_ORIGINS,
            **self.ports.env(),
            "GENERATION_DATABASE_URL": self.database_url("generation"),
            "USAGE_DATABASE_URL": self.database_url("usage"),
            "S3_ENDPOINT": self.s3_endpoint_address(),
            "S3_ACCESS_KEY": self.s3_access_key,
            "S3_SECRET_KEY": self.s3_secret_key,
            "S3_SECURE": "true" if self.s3_secure else "false",
            "REPLICATE_API_BASE_URL": self.replicate_url(),
            "WEBHOOK_BASE_URL": self.webhook_base_url,
            "AUTH_JWT_SECRET": self.auth_jwt_secret,
            "GENERATION_GRPC_TARGET": self.grpc_target("generation"),
            "USAGE_GRPC_TARGET": self.grpc_target("usage"),
            "RUNTIME_CONFIG_FILE": str(self.runtime_config_file),
            # Children write to log files: flush every line so the logs are live.
            "PYTHONUNBUFFERED": "1",
            # Worker threads (storage calls, image work) would each get a glibc arena
            # that keeps freed memory; two arenas bound RSS under upload bursts.
            "MALLOC_ARENA_MAX": self.environ.get("MALLOC_ARENA_MAX", "2"),
        }
        if self.replicate_token is not None:
            env["REPLICATE_API_TOKEN"] = self.replicate_token
        if self.replicate_webhook_secret is not None:
            env["REPLICATE_WEBHOOK_SECRET"] = self.replicate_webhook_secret
        return env

    def emulator_env(self) -> dict[str, str]:
        """The emulator's own variables: it plays Replicate with the same credentials."""
        return {
            "EMULATOR_HOST": "127.0.0.1",
            "EMULATOR_PORT": str(self.ports.emulator),
            "EMULATOR_TOKEN": self.replicate_token or DEV_REPLICATE_TOKEN,
            "EMULATOR_WEBHOOK_SECRET": self.replicate_webhook_secret or DEV_WEBHOOK_SECRET,
            "PYTHONUNBUFFERED": "1",
        }


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A yes/no variable: 1, true or yes (any case) mean yes; anything else no."""
    return (_get(env, name) or "").lower() in {"1", "true", "yes"}


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value; empty counts as unset."""
    value = env.get(name, "").strip()
    return value or None


def _rate_limits_report_only(env: Mapping[str, str]) -> bool:
    """ENVOY_RATE_LIMITS: ``enforce`` (the default) or ``report-only``, any case; anything
    else is refused by name rather than quietly keeping the limits on."""
    value = (_get(env, "ENVOY_RATE_LIMITS") or "enforce").strip().lower().replace("_", "-")
    if value not in {"enforce", "report-only"}:
        raise ConfigError("ENVOY_RATE_LIMITS must be enforce or report-only")
    return value == "report-only"


def _origin(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"


def _public_host(env: Mapping[str, str]) -> str:
    """PUBLIC_HOST, an IPv4 address; off loopback only with a JWT secret of one's own."""
    raw = _get(env, "PUBLIC_HOST") or "127.0.0.1"
    try:
        address = ipaddress.IPv4Address(raw)
    except ValueError:
        raise ConfigError(f"PUBLIC_HOST={raw!r} is not an IPv4 address") from None
    secret = _get(env, "AUTH_JWT_SECRET")
    if not address.is_loopback and (problem := secret_problem(secret)) is not None:
        raise ConfigError(
            f"PUBLIC_HOST={raw} would let anyone who can reach this machine mint tokens"
            f" (AUTH_JWT_SECRET {problem}): set AUTH_JWT_SECRET to a secret of your own"
        )
    return str(address)
