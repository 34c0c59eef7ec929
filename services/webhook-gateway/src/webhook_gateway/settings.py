"""The gateway's settings: one pydantic-settings class, built once at start."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from kit.dev_values import PUBLISHED_VALUES, secret_problem
from kit.settings import ServiceIdentitySettings, ServiceSettings

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# A shorter HMAC key could be searched for offline from one signed webhook; 128 bits is
# the usual floor (Standard Webhooks asks for 24 to 64 bytes).
MIN_KEY_BYTES = 16


def decode_webhook_secret(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_<base64>`` secret; ValueError when malformed.

    The error text never contains the secret itself.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with '{SECRET_PREFIX}'")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Standard Webhooks secrets are sometimes published without padding.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"the part after '{SECRET_PREFIX}' must be base64") from None
    if not key:
        raise ValueError("the key must not be empty")
    return key


class GatewaySettings(ServiceSettings, ServiceIdentitySettings):
    """Everything the gateway reads from the environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    http_host: str = Field(default="127.0.0.1", alias="GATEWAY_HTTP_HOST")
    http_port: int = Field(default=8082, ge=0, le=65535, alias="GATEWAY_HTTP_PORT")
    generation_grpc_target: str = Field(
        default="127.0.0.1:50051", min_length=1, alias="GENERATION_GRPC_TARGET"
    )
    # Required in production. Only in development may it be unset: signatures are then
    # not checked (a warning is logged at start).
    replicate_webhook_secret: SecretStr | None = Field(
        default=None, alias="REPLICATE_WEBHOOK_SECRET"
    )
    webhook_max_body_bytes: int = Field(default=1024 * 1024, gt=0, alias="WEBHOOK_MAX_BODY_BYTES")
    # Standard Webhooks: refuse timestamps further than this from our clock.
    webhook_tolerance_seconds: int = Field(default=300, gt=0, alias="WEBHOOK_TOLERANCE_SECONDS")
    # Replicate wants an answer within a few seconds; a slower generation gets a 503.
    grpc_deadline_seconds: float = Field(default=10.0, gt=0, alias="GRPC_DEADLINE_SECONDS")
    ready_check_deadline_seconds: float = Field(
        default=2.0, gt=0, alias="READY_CHECK_DEADLINE_SECONDS"
    )

    @field_validator("replicate_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("replicate_webhook_secret")
    @classmethod
    def _well_formed_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_webhook_secret(value.get_secret_value().strip())
        return value

    def production_secrets(self) -> Iterable[tuple[str, str | None]]:
        yield "REPLICATE_WEBHOOK_SECRET", self.webhook_secret()

    def production_problems(self) -> Iterable[str]:
        # The same key can be written several ways (padding is optional), so what is
        # compared with the published secrets is the key, not its spelling.
        secret = self.webhook_secret()
        if secret is None or secret_problem(secret) is not None:
            return  # refused already, by production_secrets
        key = decode_webhook_secret(secret)
        if key in _published_keys():
            yield "REPLICATE_WEBHOOK_SECRET holds the key of a secret published in this repository"
        elif len(key) < MIN_KEY_BYTES:
            yield (
                f"REPLICATE_WEBHOOK_SECRET holds a {len(key)}-byte key "
                f"(at least {MIN_KEY_BYTES} are needed)"
            )

    def webhook_secret(self) -> str | None:
        """The configured secret in clear, or None when signatures are not checked."""
        if self.replicate_webhook_secret is None:
            return None
        return self.replicate_webhook_secret.get_secret_value().strip()


def _published_keys() -> frozenset[bytes]:
    """The keys of the webhook secrets this repository publishes (dev-only values)."""
    return frozenset(
        decode_webhook_secret(value)
        for value in PUBLISHED_VALUES
        if value.startswith(SECRET_PREFIX)
    )
