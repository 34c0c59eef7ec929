"""Settings shared by every service: a base class and the common groups.

Each service declares one pydantic-settings class that inherits the groups it
needs. Settings are built once at start and passed down through constructors.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from kit.dev_values import secret_problem
from kit.service_identity import ServiceIdentity
from kit.service_keys import key_file_problem, trust_dir_problem

# Relative to the working directory, so kit never depends on where it is installed:
# the repository root in development, /app in the image; compose and Kubernetes
# set RUNTIME_CONFIG_FILE to the mounted file. The file is product configuration
# owned by the deployment, so it is not shipped inside kit.
DEFAULT_RUNTIME_CONFIG_FILE = Path("config") / "runtime.toml"


LogLevel = Literal["NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}
# A TCP port to listen on (0: any free one). Past 65535 the servers would silently
# listen on the number modulo 65536.
Port = Annotated[int, Field(ge=0, le=65535)]
# A gRPC message cap; -1 would mean "no limit" to gRPC.
MessageBytes = Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)]


class AppEnv(enum.StrEnum):
    """Where a service runs. Production is the default: nothing insecure unless asked."""

    PRODUCTION = "production"
    DEVELOPMENT = "development"


class ServiceSettings(BaseSettings):
    """Fields every service has.

    In production the settings refuse to build (so the service refuses to start)
    when a secret named by :meth:`production_secrets` is missing, published in this
    repository, or a placeholder; the message names the variable.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    app_env: AppEnv = Field(default=AppEnv.PRODUCTION, alias="APP_ENV")
    log_level: LogLevel = Field(default="INFO", alias="LOG_LEVEL")
    runtime_config_file: Path = Field(
        default=DEFAULT_RUNTIME_CONFIG_FILE, alias="RUNTIME_CONFIG_FILE"
    )
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, le=3600, allow_inf_nan=False, alias="SHUTDOWN_GRACE_SECONDS"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        # Any case, and the other names Python's logging knows for these levels.
        if not isinstance(value, str):
            return value
        name = value.strip().upper()
        return _LEVEL_ALIASES.get(name, name)

    @property
    def development(self) -> bool:
        """True only when ``APP_ENV=development`` asked for the local conveniences."""
        return self.app_env is AppEnv.DEVELOPMENT

    def production_secrets(self) -> Iterable[tuple[str, str | None]]:
        """(variable, value) of each secret this service cannot run without in production."""
        return ()

    def production_problems(self) -> Iterable[str]:
        """Other reasons this configuration is unsafe in production (texts name variables)."""
        return ()

    @model_validator(mode="after")
    def _fit_for_production(self) -> ServiceSettings:
        if self.development:
            return self
        problems = [
            f"{variable} {problem}"
            for variable, value in self.production_secrets()
            if (problem := secret_problem(value)) is not None
        ]
        problems += list(self.production_problems())
        if isinstance(self, DatabaseSettings):
            problems += list(self.database_problems())
        if isinstance(self, ServiceIdentitySettings):
            problems += list(self.identity_problems())
        if problems:
            raise ValueError(
                "APP_ENV=production: "
                + "; ".join(problems)
                + " (set APP_ENV=development only for local runs)"
            )
        return self


class ServiceIdentitySettings(BaseSettings):
    """This service's identity on internal gRPC calls (see kit.service_identity).

    ``SERVICE_KEY_FILE``: its Ed25519 private key (PEM), signs its outgoing calls.
    ``SERVICE_TRUST_DIR``: ``<caller>.pub`` files, checked on its incoming calls (servers).
    Both are required in production; in development, unset turns internal auth off
    (one warning at start).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_key_file: Path | None = Field(default=None, alias="SERVICE_KEY_FILE")
    service_trust_dir: Path | None = Field(default=None, alias="SERVICE_TRUST_DIR")
    # How often the trust dir is looked at for rotated keys (0: on every call).
    service_trust_recheck_seconds: float = Field(
        default=1.0, ge=0, le=300, alias="SERVICE_TRUST_RECHECK_SECONDS"
    )

    @field_validator("service_key_file", "service_trust_dir", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def serves_grpc(self) -> bool:
        """True for services that run a gRPC server (they need trust material too)."""
        return False

    def identity_problems(self) -> Iterable[str]:
        """Why the key (and, for servers, trust) material cannot work in production."""
        if (problem := key_file_problem(self.service_key_file)) is not None:
            yield f"SERVICE_KEY_FILE {problem}"
        if self.serves_grpc and (problem := trust_dir_problem(self.service_trust_dir)):
            yield f"SERVICE_TRUST_DIR {problem}"

    def service_identity(self, name: str) -> ServiceIdentity:
        """The signer (and verifier, for servers) of the identity ``name``."""
        return ServiceIdentity.from_files(
            name,
            self.service_key_file,
            self.service_trust_dir,
            serves=self.serves_grpc,
            recheck_seconds=self.service_trust_recheck_seconds,
        )


class GrpcServerSettings(ServiceSettings, ServiceIdentitySettings):
    """A gRPC server: where it listens, how big a message may be, whom it trusts."""

    @property
    def serves_grpc(self) -> bool:
        return True

    grpc_host: str = Field(default="127.0.0.1", pattern=r"^\S+$", alias="GRPC_HOST")
    # The kit's default (usage keeps it); generation and the edge lower it to 4 MiB, since
    # uploads stream in 256 KiB chunks.
    grpc_max_message_bytes: MessageBytes = Field(
        default=24 * 1024 * 1024, alias="GRPC_MAX_MESSAGE_BYTES"
    )


class DatabaseSettings(BaseSettings):
    """PostgreSQL through asyncpg."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: SecretStr = Field(alias="DATABASE_URL")
    # (Zero or less would mean "no limit" to SQLAlchemy and PostgreSQL: refused.)
    db_pool_size: int = Field(default=10, ge=1, le=1000, alias="DB_POOL_SIZE")
    db_max_overflow: int = Field(default=5, ge=0, le=1000, alias="DB_MAX_OVERFLOW")
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, le=600, allow_inf_nan=False, alias="DB_POOL_TIMEOUT_SECONDS"
    )
    # Upper bound for any one statement; keeps a stuck query from holding a request.
    db_statement_timeout_ms: int = Field(
        default=15_000, ge=1, le=3_600_000, alias="DB_STATEMENT_TIMEOUT_MS"
    )

    def database_problems(self) -> Iterable[str]:
        """In production: the URL's password may not be one this repository publishes
        or a template's placeholder (no password at all is left to the server: peer
        authentication, certificates or a passfile). A ``?password=`` is checked too: the
        driver connects with it, over the user info's."""
        url = urlsplit(self.database_url.get_secret_value())
        passwords = [unquote(url.password or ""), *parse_qs(url.query).get("password", [])]
        for password in passwords:
            if password and (problem := secret_problem(password)) is not None:
                yield f"the password in {self._database_url_variables()} {problem}"
                return

    def _database_url_variables(self) -> str:
        field = type(self).model_fields["database_url"]
        alias = field.validation_alias or field.alias or "DATABASE_URL"
        names = alias.choices if isinstance(alias, AliasChoices) else [alias]
        return " or ".join(str(name) for name in names)


# host[:port] of an origin: a DNS name or IPv4 address, or a bracketed IPv6 address.
HOST_PORT = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)


class S3Settings(BaseSettings):
    """S3-compatible object storage through the minio SDK."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    s3_endpoint: str = Field(alias="S3_ENDPOINT")
    # Required where the service talks to S3 at all (storage_needed; every one but an
    # edge whose public renders a CDN serves), checked below.
    s3_access_key: SecretStr | None = Field(default=None, alias="S3_ACCESS_KEY")
    s3_secret_key: SecretStr | None = Field(default=None, alias="S3_SECRET_KEY")
    s3_secure: bool = Field(default=False, alias="S3_SECURE")
    s3_region: str = Field(default="us-east-1", alias="S3_REGION")
    s3_private_bucket: str = Field(default="private", alias="S3_PRIVATE_BUCKET")
    s3_public_bucket: str = Field(default="public", alias="S3_PUBLIC_BUCKET")
    # Base for public render URLs (bucket with anonymous read, or a CDN). Unset:
    # the edge serves `public/...` objects itself.
    s3_public_base_url: str | None = Field(default=None, alias="S3_PUBLIC_BASE_URL")
    # Where the signed input URLs handed to the provider and to callers point:
    # ``scheme://host[:port]`` of the same S3 service under a name they can reach
    # (the services keep talking to S3_ENDPOINT). Unset: S3_ENDPOINT itself.
    s3_signed_base_url: str | None = Field(default=None, alias="S3_SIGNED_BASE_URL")

    def storage_needed(self) -> bool:
        """Whether this service reads or writes objects (then it needs credentials)."""
        return True

    def storage_credentials(self) -> tuple[str, str]:
        """The access key and secret key (the validator below made sure of both)."""
        if self.s3_access_key is None or self.s3_secret_key is None:
            raise ValueError("S3_ACCESS_KEY and S3_SECRET_KEY are not set")
        return self.s3_access_key.get_secret_value(), self.s3_secret_key.get_secret_value()

    @model_validator(mode="after")
    def _credentials_where_needed(self) -> S3Settings:
        if not self.storage_needed():
            return self
        missing = [
            name
            for name, value in (
                ("S3_ACCESS_KEY", self.s3_access_key),
                ("S3_SECRET_KEY", self.s3_secret_key),
            )
            if value is None or not value.get_secret_value()
        ]
        if missing:
            raise ValueError(f"{' and '.join(missing)} required (this service uses S3)")
        return self

    @field_validator("s3_public_base_url", "s3_signed_base_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # An empty variable means "not configured", as everywhere else.
        return value.strip() or None if value is not None else None

    @field_validator("s3_public_base_url")
    @classmethod
    def _a_base_url(cls, value: str | None) -> str | None:
        # Variant URLs are this plus a key, and its origin goes into the web client's CSP.
        if value is not None and not is_base_url(value):
            raise ValueError("must be an http(s) URL: scheme://host[:port][/path], no query")
        return value

    @field_validator("s3_signed_base_url")
    @classmethod
    def _an_origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # A base URL (is_base_url) without a path: an origin.
        if not is_base_url(value) or urlsplit(value).path not in ("", "/"):
            raise ValueError("must be scheme://host[:port] (http or https, a valid port, no path)")
        url = urlsplit(value)
        return f"{url.scheme}://{url.netloc}"


def is_base_url(value: str) -> bool:
    """True for ``scheme://host[:port][/path]`` over http(s), with no query, fragment or
    user info: a base other URLs are made from by appending a path."""
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return False
    return (
        url.scheme in ("http", "https")
        and HOST_PORT.fullmatch(url.netloc) is not None
        and not url.query
        and not url.fragment
        and not any(character.isspace() for character in value)
    )


def revealed(secret: SecretStr | None) -> str | None:
    """A secret's value for the production checks, or None when it is unset."""
    return None if secret is None else secret.get_secret_value()


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build settings from the environment, or exit with a message naming the variable."""
    try:
        return cls()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise SystemExit(f"{cls.__name__}: invalid configuration: {problems}") from None
