"""The edge's settings: one pydantic-settings class, built once at start."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from edge_api.base_url import TrustedProxies
from kit.dev_values import DEV_JWT_SECRET
from kit.settings import S3Settings, ServiceIdentitySettings, ServiceSettings

__all__ = ["DEV_JWT_SECRET", "EdgeSettings"]
# Room for the text fields and multipart framing on top of two full-size images.
REQUEST_OVERHEAD_BYTES = 256 * 1024


class EdgeSettings(ServiceSettings, ServiceIdentitySettings, S3Settings):
    """Environment of ``python -m edge_api``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    edge_http_host: str = Field(default="127.0.0.1", alias="EDGE_HTTP_HOST")
    edge_http_port: int = Field(default=8081, alias="EDGE_HTTP_PORT")
    # Peers whose X-Forwarded-Proto / X-Forwarded-Host are believed: comma-separated
    # addresses or CIDR networks (e.g. the compose network of Envoy), or "*".
    trusted_proxy_ips: str = Field(default="127.0.0.1", alias="TRUSTED_PROXY_IPS")

    # Required in production; in development the published DEV_JWT_SECRET stands in.
    auth_jwt_secret: SecretStr | None = Field(default=None, alias="AUTH_JWT_SECRET")
    # Clock skew tolerated for exp / nbf / iat.
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=30, alias="AUTH_LEEWAY_SECONDS")

    generation_grpc_target: str = Field(default="127.0.0.1:50051", alias="GENERATION_GRPC_TARGET")
    usage_grpc_target: str = Field(default="127.0.0.1:50052", alias="USAGE_GRPC_TARGET")
    # Uploads travel in 256 KiB chunks (SubmitGeneration streams); answers are small.
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, alias="GRPC_MAX_MESSAGE_BYTES")
    grpc_deadline_seconds: float = Field(default=10.0, gt=0, alias="GRPC_DEADLINE_SECONDS")
    # Submission uploads inputs and calls the provider: it gets longer.
    grpc_submit_deadline_seconds: float = Field(
        default=30.0, gt=0, alias="GRPC_SUBMIT_DEADLINE_SECONDS"
    )
    # Readiness probes must answer quickly even when a backend hangs.
    readiness_deadline_seconds: float = Field(default=2.0, gt=0, alias="READINESS_DEADLINE_SECONDS")

    # Uploads are spooled and streamed on: bound how many are read and forwarded at once.
    max_concurrent_submissions: int = Field(default=8, gt=0, alias="MAX_CONCURRENT_SUBMISSIONS")
    # A slot is held while an upload streams in: a client this slow is cut off (400).
    upload_read_timeout_seconds: float = Field(
        default=120.0, gt=0, alias="UPLOAD_READ_TIMEOUT_SECONDS"
    )
    # Unset: 2 * uploads.max_bytes + REQUEST_OVERHEAD_BYTES from the runtime config.
    max_request_bytes: int | None = Field(default=None, gt=0, alias="MAX_REQUEST_BYTES")

    @field_validator("auth_jwt_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (32 bytes).
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("AUTH_JWT_SECRET must be at least 32 bytes")
        return value

    def jwt_secret(self) -> str:
        """The HS256 secret of user tokens (the published dev one only in development)."""
        if self.auth_jwt_secret is not None:
            return self.auth_jwt_secret.get_secret_value()
        return DEV_JWT_SECRET

    def production_secrets(self) -> Iterable[tuple[str, str | None]]:
        yield "AUTH_JWT_SECRET", _reveal(self.auth_jwt_secret)
        if self.s3_public_base_url is None:  # the edge reads public renders itself
            yield "S3_SECRET_KEY", self.s3_secret_key.get_secret_value()

    def request_limit(self, upload_max_bytes: int) -> int:
        """The cap on any request body, in bytes."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return 2 * upload_max_bytes + REQUEST_OVERHEAD_BYTES

    @field_validator("trusted_proxy_ips")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        TrustedProxies.parse(value)  # a bad entry stops the start with its name
        return value

    def trusted_proxies(self) -> TrustedProxies:
        """The peers whose forwarding headers are honoured."""
        return TrustedProxies.parse(self.trusted_proxy_ips)


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
