"""Settings of the generation service (environment; see SPEC.md)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import AliasChoices, Field, SecretStr, field_validator

from kit.dev_values import DEV_REPLICATE_TOKEN, public_url_problem
from kit.settings import (
    DatabaseSettings,
    GrpcServerSettings,
    MessageBytes,
    Port,
    S3Settings,
    is_base_url,
    revealed,
)


class GenerationSettings(GrpcServerSettings, DatabaseSettings, S3Settings):
    grpc_port: Port = Field(default=50051, alias="GENERATION_GRPC_PORT")
    # Uploads arrive in chunks (SubmitGeneration streams, 256 KiB from the edge) and
    # provider events are capped at 1 MiB (gateway and servicer): no message needs more.
    grpc_max_message_bytes: MessageBytes = Field(
        default=4 * 1024 * 1024, alias="GRPC_MAX_MESSAGE_BYTES"
    )
    database_url: SecretStr = Field(
        validation_alias=AliasChoices("GENERATION_DATABASE_URL", "DATABASE_URL")
    )
    usage_grpc_target: str = Field(default="127.0.0.1:50052", alias="USAGE_GRPC_TARGET")
    # Server root without /v1; the default is the local emulator, never the real service.
    replicate_api_base_url: str = Field(
        default="http://127.0.0.1:8090", alias="REPLICATE_API_BASE_URL"
    )
    # Required in production; in development the emulator's published token stands in.
    replicate_api_token: SecretStr | None = Field(default=None, alias="REPLICATE_API_TOKEN")
    # Public base URL that reaches the webhook gateway. Required in production; in
    # development, unset means the submitting request's own base URL.
    webhook_base_url: str | None = Field(default=None, alias="WEBHOOK_BASE_URL")
    # Submissions this instance takes at once (api/slots.py): each spools up to four
    # files of the upload limit on local disk, so this bounds the disk (and decode
    # queue) one instance needs whatever the number of edges. One beyond it waits up
    # to the slot wait, then is refused (429 with Retry-After at the edge).
    max_concurrent_submissions: int = Field(
        default=16, gt=0, le=1024, alias="GENERATION_MAX_CONCURRENT_SUBMISSIONS"
    )
    submission_slot_wait_seconds: float = Field(
        default=5.0, gt=0, le=60, alias="GENERATION_SUBMISSION_SLOT_WAIT_SECONDS"
    )
    # The background sweep (lost webhooks, timeouts, settlement); off only in tests.
    sweep_enabled: bool = Field(default=True, alias="SWEEP_ENABLED")
    run_migrations: bool = Field(default=True, alias="RUN_MIGRATIONS")
    # How often the change feed proves its LISTEN connection and marks WatchJobs streams:
    # an edge answers settled views from memory only while its last mark is recent
    # (FEED_FRESHNESS_SECONDS, 0.24), so a mark must come well within that.
    feed_heartbeat_seconds: float = Field(
        default=0.2, ge=0.02, le=10, alias="FEED_HEARTBEAT_SECONDS"
    )
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

    @field_validator("webhook_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("replicate_api_token", mode="before")
    @classmethod
    def _one_token(cls, value: object) -> object:
        # A token read from a secret file usually ends in a newline: sent as is, every
        # call's Authorization header would be refused before it left the process.
        if not isinstance(value, str):
            return value
        token = value.strip()
        if any(char.isspace() or not char.isprintable() for char in token):
            raise ValueError("must be one token, without spaces or control characters")
        return token or None

    @field_validator("replicate_api_base_url")
    @classmethod
    def _a_server_root(cls, value: str) -> str:
        # Paths are appended to it (/v1/...): a missing scheme or a /v1 of its own would
        # fail every call, not the start.
        if not is_base_url(value) or value.rstrip("/").endswith("/v1"):
            raise ValueError("must be the API's root, scheme://host[:port], without /v1")
        return value

    def replicate_token(self) -> str:
        """The provider's bearer token (the emulator's published one only in development)."""
        if self.replicate_api_token is not None:
            return self.replicate_api_token.get_secret_value()
        return DEV_REPLICATE_TOKEN

    def production_secrets(self) -> Iterable[tuple[str, str | None]]:
        yield "REPLICATE_API_TOKEN", revealed(self.replicate_api_token)
        yield "S3_SECRET_KEY", revealed(self.s3_secret_key)

    def production_problems(self) -> Iterable[str]:
        if "replicate_api_base_url" not in self.model_fields_set:
            # The default is the local emulator: the real token would go there.
            yield "REPLICATE_API_BASE_URL is not set (https://api.replicate.com for Replicate)"
        if self.webhook_base_url is None:
            yield "WEBHOOK_BASE_URL is not set (webhooks would follow the Host header)"
        elif (problem := public_url_problem(self.webhook_base_url)) is not None:
            # The manifests' example (https://api.example.com) would send every webhook
            # away: jobs would end only by polling and the sweep.
            yield f"WEBHOOK_BASE_URL {problem}"
