"""Settings of the generation service (environment; see SPEC.md)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from kit.settings import DatabaseSettings, GrpcServerSettings, S3Settings


class GenerationSettings(GrpcServerSettings, DatabaseSettings, S3Settings):
    grpc_port: int = Field(default=50051, alias="GENERATION_GRPC_PORT")
    # Uploads arrive in chunks (SubmitGeneration streams, 256 KiB from the edge) and
    # provider events are capped at 1 MiB (gateway and servicer): no message needs more.
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, alias="GRPC_MAX_MESSAGE_BYTES")
    database_url: SecretStr = Field(
        validation_alias=AliasChoices("GENERATION_DATABASE_URL", "DATABASE_URL")
    )
    usage_grpc_target: str = Field(default="127.0.0.1:50052", alias="USAGE_GRPC_TARGET")
    # Server root without /v1; the default is the local emulator, never the real service.
    replicate_api_base_url: str = Field(
        default="http://127.0.0.1:8090", alias="REPLICATE_API_BASE_URL"
    )
    replicate_api_token: SecretStr = Field(
        default=SecretStr("r8_dev_emulator_token"), alias="REPLICATE_API_TOKEN"
    )
    # Public base URL that reaches the webhook gateway; unset: the request's own base URL.
    webhook_base_url: str | None = Field(default=None, alias="WEBHOOK_BASE_URL")
    # The background sweep (lost webhooks, timeouts, settlement); off only in tests.
    sweep_enabled: bool = Field(default=True, alias="SWEEP_ENABLED")
    run_migrations: bool = Field(default=True, alias="RUN_MIGRATIONS")
    # Prometheus exporter (GET /metrics) on its own port; 0 turns it off.
    metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("GENERATION_METRICS_PORT", "METRICS_PORT"),
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("GENERATION_METRICS_HOST", "METRICS_HOST"),
    )
