"""The edge's settings: one pydantic-settings class, built once at start."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from edge_api.base_url import TrustedProxies
from kit.dev_values import DEV_JWT_SECRET, public_url_problem
from kit.settings import (
    MessageBytes,
    Port,
    S3Settings,
    ServiceIdentitySettings,
    ServiceSettings,
    is_base_url,
    revealed,
)

__all__ = ["DEV_JWT_SECRET", "EdgeSettings"]
# Room for the text fields and multipart framing on top of two full-size images.
REQUEST_OVERHEAD_BYTES = 256 * 1024


class EdgeSettings(ServiceSettings, ServiceIdentitySettings, S3Settings):
    """Environment of ``python -m edge_api``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    edge_http_host: str = Field(default="127.0.0.1", alias="EDGE_HTTP_HOST")
    edge_http_port: Port = Field(default=8081, alias="EDGE_HTTP_PORT")
    # Peers whose X-Forwarded-Proto / X-Forwarded-Host are believed: comma-separated
    # addresses or CIDR networks (e.g. the compose network of Envoy), or "*".
    trusted_proxy_ips: str = Field(default="127.0.0.1", alias="TRUSTED_PROXY_IPS")
    # The origin clients reach the API at (https://api.example.com). Set, it is the base
    # of the links the edge builds (render URLs while it serves them itself, and the
    # submission's own base), whatever the forwarding headers say: where TLS ends at a
    # load balancer in front of Envoy, Envoy sees (and forwards) plain http, and render
    # URLs would come out http:// on an https page. Unset: the forwarding headers.
    public_base_url: str | None = Field(default=None, alias="PUBLIC_BASE_URL")

    # HS256 tokens. In production this or AUTH_JWKS_URL (or both) is required; in
    # development, with neither set, the published DEV_JWT_SECRET stands in.
    auth_jwt_secret: SecretStr | None = Field(default=None, alias="AUTH_JWT_SECRET")
    # Server-Sent Events: a comment line at least this often keeps idle streams open.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0, alias="SSE_HEARTBEAT_SECONDS")
    # A watched running job is read again this often (unset: the runtime config's stale
    # threshold), so generation's stale refresh applies while a client watches.
    sse_refresh_seconds: float | None = Field(default=None, gt=0, alias="SSE_REFRESH_SECONDS")
    # The change feed from generation is given up (settled views stop being answered
    # from memory, the stream is resumed) when nothing, not even generation's heartbeat
    # mark, arrived for this long, nor for 1.5 times the longest gap between marks
    # generation announces (its heartbeat plus its probe's timeout: 4.2 s by default).
    feed_silence_seconds: float = Field(default=8.0, gt=0, alias="FEED_SILENCE_SECONDS")
    # Settled views are answered from memory only while generation's last mark on the
    # feed was taken this recently (it marks every 0.2 s by default): another instance's
    # change is never hidden for longer than this and the mark's travel, even if the
    # feed stalls while it stays open (a healthy feed passes a change on in
    # milliseconds). The SPEC's bound is 250 ms. Larger: fewer reads go to generation
    # when marks run late; smaller: a tighter bound.
    feed_freshness_seconds: float = Field(default=0.24, gt=0, le=60, alias="FEED_FRESHNESS_SECONDS")
    # Serve the reference web client at / and /app/ (always on with APP_ENV=development).
    web_client_enabled: bool = Field(default=False, alias="WEB_CLIENT_ENABLED")
    # Browser origins allowed to call the API (comma-separated scheme://host[:port]);
    # empty: no CORS headers for anyone.
    cors_allowed_origins: str = Field(default="", alias="CORS_ALLOWED_ORIGINS")
    # RS256 / ES256 tokens: the auth provider's JWKS (https in production).
    auth_jwks_url: str | None = Field(default=None, alias="AUTH_JWKS_URL")
    # A token naming a kid the cache lacks refetches the JWKS at most this often.
    auth_jwks_min_refetch_seconds: float = Field(
        default=30.0, gt=0, alias="AUTH_JWKS_MIN_REFETCH_SECONDS"
    )
    # Cached keys are refetched on their first use after this long (revoked keys go away).
    auth_jwks_max_age_seconds: float = Field(default=600.0, gt=0, alias="AUTH_JWKS_MAX_AGE_SECONDS")
    auth_jwks_timeout_seconds: float = Field(default=5.0, gt=0, alias="AUTH_JWKS_TIMEOUT_SECONDS")
    # When set, a token's `iss` must equal it (e.g. https://<project>.supabase.co/auth/v1).
    auth_jwt_issuer: str | None = Field(default=None, alias="AUTH_JWT_ISSUER")
    # Supabase anonymous users: refused (401), or accepted with a plan of zero generations.
    auth_anonymous_users: Literal["refuse", "zero_plan"] = Field(
        default="refuse", alias="AUTH_ANONYMOUS_USERS"
    )
    # Clock skew tolerated for exp / nbf / iat.
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=30, alias="AUTH_LEEWAY_SECONDS")

    generation_grpc_target: str = Field(default="127.0.0.1:50051", alias="GENERATION_GRPC_TARGET")
    usage_grpc_target: str = Field(default="127.0.0.1:50052", alias="USAGE_GRPC_TARGET")
    # Uploads travel in 256 KiB chunks (SubmitGeneration streams); answers are small.
    grpc_max_message_bytes: MessageBytes = Field(
        default=4 * 1024 * 1024, alias="GRPC_MAX_MESSAGE_BYTES"
    )
    grpc_deadline_seconds: float = Field(default=10.0, gt=0, alias="GRPC_DEADLINE_SECONDS")
    # Submission uploads inputs and calls the provider: it gets longer.
    grpc_submit_deadline_seconds: float = Field(
        default=30.0, gt=0, alias="GRPC_SUBMIT_DEADLINE_SECONDS"
    )
    # Readiness probes must answer quickly even when a backend hangs.
    readiness_deadline_seconds: float = Field(default=2.0, gt=0, alias="READINESS_DEADLINE_SECONDS")

    # Uploads are spooled and streamed on: bound how many are read and forwarded at once.
    max_concurrent_submissions: int = Field(default=8, gt=0, alias="MAX_CONCURRENT_SUBMISSIONS")
    # Fair uploads: a user's uploads in progress at once; the excess is refused (429)
    # before a slot is asked for, so one user can never hold every slot.
    max_uploads_per_user: int = Field(default=2, gt=0, alias="MAX_UPLOADS_PER_USER")
    # How long a submission may wait for a free slot before it is refused (429): long
    # enough to absorb a burst of honest submissions (a slot turns over in about a
    # second), short next to the read ceiling, so the queue stays bounded.
    upload_slot_wait_seconds: float = Field(default=5.0, gt=0, alias="UPLOAD_SLOT_WAIT_SECONDS")
    # The Retry-After of those 429s.
    upload_retry_after_seconds: int = Field(default=5, gt=0, alias="UPLOAD_RETRY_AFTER_SECONDS")
    # A submission body slower than this over any window (the first window is grace)
    # is cut off with 408; 0 turns the rule off.
    upload_min_bytes_per_second: int = Field(
        default=16 * 1024, ge=0, alias="UPLOAD_MIN_BYTES_PER_SECOND"
    )
    upload_rate_window_seconds: float = Field(
        default=10.0, gt=0, alias="UPLOAD_RATE_WINDOW_SECONDS"
    )
    # The ceiling on reading a whole body, however fast it trickles in (408).
    upload_read_timeout_seconds: float = Field(
        default=120.0, gt=0, alias="UPLOAD_READ_TIMEOUT_SECONDS"
    )
    # Views of settled jobs answered from memory while the change feed is live (0: off).
    settled_cache_entries: int = Field(default=10_000, ge=0, alias="SETTLED_CACHE_ENTRIES")
    # Unset: 2 * uploads.max_bytes + REQUEST_OVERHEAD_BYTES from the runtime config.
    max_request_bytes: int | None = Field(default=None, gt=0, alias="MAX_REQUEST_BYTES")

    @field_validator("auth_jwt_secret", "auth_jwks_url", "auth_jwt_issuer", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (32 bytes).
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("AUTH_JWT_SECRET must be at least 32 bytes")
        return value

    @field_validator("auth_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("AUTH_JWKS_URL must be an http(s) URL")
        return value

    def jwt_secret(self) -> str | None:
        """The HS256 secret of user tokens, or None when only JWKS tokens are accepted.

        The published dev secret stands in only in development with neither set
        (production refuses to build without one of them).
        """
        if self.auth_jwt_secret is not None:
            return self.auth_jwt_secret.get_secret_value()
        return DEV_JWT_SECRET if self.auth_jwks_url is None else None

    def storage_needed(self) -> bool:
        """The edge reads S3 only to serve public renders itself: with a CDN (or a
        published bucket) at S3_PUBLIC_BASE_URL it needs no credentials at all."""
        return self.s3_public_base_url is None

    def production_secrets(self) -> Iterable[tuple[str, str | None]]:
        if self.auth_jwks_url is None:
            yield "AUTH_JWT_SECRET (or AUTH_JWKS_URL)", revealed(self.auth_jwt_secret)
        elif self.auth_jwt_secret is not None:  # with a JWKS too, a secret must still be real
            yield "AUTH_JWT_SECRET", revealed(self.auth_jwt_secret)
        if self.storage_needed():
            yield "S3_SECRET_KEY", revealed(self.s3_secret_key)

    def production_problems(self) -> Iterable[str]:
        if self.public_base_url is not None:
            if (problem := public_url_problem(self.public_base_url)) is not None:
                yield f"PUBLIC_BASE_URL {problem}"
            elif not self.public_base_url.startswith("https://"):
                yield "PUBLIC_BASE_URL must be https (render links are shown on https pages)"
        if self.auth_jwks_url is None:
            return
        if (problem := public_url_problem(self.auth_jwks_url)) is not None:
            yield f"AUTH_JWKS_URL {problem}"
        elif not self.auth_jwks_url.startswith("https://"):
            yield "AUTH_JWKS_URL must be https (the keys decide who is authenticated)"

    def request_limit(self, upload_max_bytes: int) -> int:
        """The cap on any request body, in bytes."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return 2 * upload_max_bytes + REQUEST_OVERHEAD_BYTES

    @field_validator("public_base_url")
    @classmethod
    # Not _an_origin: a method of that name would replace S3Settings' own validator.
    def _public_base_is_an_origin(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = urlsplit(value.strip())
        if not is_base_url(value.strip()) or url.path not in ("", "/"):
            raise ValueError("must be scheme://host[:port] (http or https, no path)")
        return f"{url.scheme}://{url.netloc.lower()}"

    @field_validator("trusted_proxy_ips")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        TrustedProxies.parse(value)  # a bad entry stops the start with its name
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _valid_origins(cls, value: str) -> str:
        for origin in _origins(value):
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no '*')")
        return value

    def cors_origins(self) -> tuple[str, ...]:
        """The browser origins allowed to call the API."""
        return _origins(self.cors_allowed_origins)

    def trusted_proxies(self) -> TrustedProxies:
        """The peers whose forwarding headers are honoured."""
        return TrustedProxies.parse(self.trusted_proxy_ips)


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _origins(value: str) -> tuple[str, ...]:
    """Each origin as a browser writes it in ``Origin`` (RFC 6454 6.1: scheme and host
    in lowercase, no default port), since the middleware compares strings."""
    return tuple(
        _serialized(origin.strip().rstrip("/")) for origin in value.split(",") if origin.strip()
    )


def _serialized(origin: str) -> str:
    origin = origin.lower()
    scheme = origin.partition("://")[0]
    return origin.removesuffix(_DEFAULT_PORTS.get(scheme, "\0"))
