"""The usage service's settings: one class, built once at start."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kit.settings import DatabaseSettings, GrpcServerSettings, Port


class UsageSettings(GrpcServerSettings, DatabaseSettings):
    """Environment of ``python -m usage``.

    The database URL is read from ``USAGE_DATABASE_URL`` and falls back to the
    shared ``DATABASE_URL``.
    """

    # Restated: DatabaseSettings' default config (extra="forbid") would win in the MRO.
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    grpc_port: Port = Field(default=50052, alias="USAGE_GRPC_PORT")
    database_url: SecretStr = Field(
        validation_alias=AliasChoices("USAGE_DATABASE_URL", "DATABASE_URL")
    )
    # Migrate at start (in a child process); false where a one-shot step or an init
    # container already did, as deployed.
    run_migrations: bool = Field(default=True, alias="RUN_MIGRATIONS")
    generation_grpc_target: str = Field(default="127.0.0.1:50051", alias="GENERATION_GRPC_TARGET")
    # Deadline of each ListJobOutcomes page call made by the audit.
    audit_call_timeout_seconds: float = Field(
        default=10.0, gt=0, alias="AUDIT_CALL_TIMEOUT_SECONDS"
    )
    audit_page_size: int = Field(default=500, gt=0, le=1000, alias="AUDIT_PAGE_SIZE")
    # Prometheus exporter (GET /metrics) on its own port; 0 turns it off.
    metrics_port: int = Field(
        default=9102,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("USAGE_METRICS_PORT", "METRICS_PORT"),
    )
    metrics_host: str = Field(
        default="127.0.0.1", validation_alias=AliasChoices("USAGE_METRICS_HOST", "METRICS_HOST")
    )
