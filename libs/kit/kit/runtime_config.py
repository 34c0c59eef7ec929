"""The runtime config file: the single source of truth for product knobs.

Loaded and validated once at start. A bad file stops the service with a message
naming the bad key (``plans.free.monthly_generations: ...``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Positive = Annotated[int, Field(gt=0)]
# A duration in milliseconds: at most a week (beyond, timedelta arithmetic and the
# sweep's date bounds stop making sense).
Millis = Annotated[int, Field(gt=0, le=7 * 24 * 3600 * 1000)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
# A lower-case DNS name, optionally "*." for its subdomains; never an IP or a port.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
OutputHost = Annotated[str, Field(pattern=rf"^(?:\*\.)?(?:{_LABEL}\.)+[a-z][a-z0-9-]*[a-z0-9]$")]


# The longest wait between two attempts of a provider call (a Retry-After asking for
# more ends the retries): with the attempts' timeouts, the longest a call can take.
PROVIDER_BACKOFF_MAX_SECONDS = 8.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Plan(_Strict):
    name: str = Field(min_length=1)
    # An int32 on the wire (the usage API's Quota): past it every quota answer would fail.
    monthly_generations: Annotated[int, Field(ge=0, le=2**31 - 1)]


class Uploads(_Strict):
    max_bytes: Positive = 10 * 1024 * 1024
    accepted_mime_types: tuple[str, ...] = ("image/jpeg", "image/png", "image/webp")
    # Decompression-bomb guard: images with more pixels are refused before decoding.
    max_pixels: Positive = 25_000_000
    # A file with more pixels per byte is refused before decoding (see runtime.toml).
    max_pixels_per_byte: Positive = 2_000
    # S3 presigned URLs live at most 7 days: a longer TTL fails every signature.
    signed_url_ttl_seconds: Annotated[int, Field(gt=0, le=7 * 24 * 3600)] = 300
    # Decodes run in this many worker processes, each limited to the budgets below;
    # a decode over its budget fails that upload only (415).
    decode_workers: Annotated[int, Field(ge=1, le=16)] = 1
    decode_memory_mib: Annotated[int, Field(ge=128)] = 640
    decode_cpu_seconds: Positive = 2

    @model_validator(mode="after")
    def _known_types(self) -> Uploads:
        unknown = set(self.accepted_mime_types) - {"image/jpeg", "image/png", "image/webp"}
        if unknown:
            raise ValueError(f"unsupported MIME types: {sorted(unknown)}")
        return self


class Timings(_Strict):
    # A non-terminal job whose state is older than this is refreshed on GET.
    stale_after_ms: Millis = 5_000
    # At most one provider poll per prediction within this window (all instances).
    poll_throttle_ms: Millis = 5_000
    # A job not finished after this long is canceled at the provider, failed, refunded.
    overall_timeout_ms: Millis = 10 * 60 * 1000
    sweep_interval_ms: Millis = 15_000
    # The sweep polls jobs whose state has not changed for this long.
    sweep_min_age_ms: Millis = 20_000
    # A job still ``starting`` without a run this long after its insert (its process
    # died before the provider answered) is failed INTERRUPTED by the sweep, which frees
    # its owner's slot. Longer than the longest provider create (checked below), so a
    # submission still waiting on the provider is never ended under it.
    unsubmitted_grace_ms: Millis = 120_000


class Prompts(_Strict):
    max_length: Positive = 1_000
    # Minimum length of the user text for `imagine` (which requires a prompt).
    imagine_min_length: Positive = 3


class Replicate(_Strict):
    model: str = Field(default="google/nano-banana", pattern=r"^[a-z0-9_.-]+/[a-z0-9_.-]+$")
    webhook_path: str = Field(default="/api/v1/webhooks/replicate", pattern=r"^/\S*$")
    webhook_events: tuple[str, ...] = ("start", "output", "logs", "completed")
    output_format: str = Field(default="jpg", pattern=r"^(jpg|png)$")
    # Timeouts and retries for calls to the provider and downloads of its output.
    request_timeout_seconds: Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)] = 10.0
    max_attempts: Positive = 4
    output_max_bytes: Positive = 30 * 1024 * 1024
    # The only hosts output files are fetched from, over HTTPS ("*." = any subdomain).
    # The service adds the API's own host:port when it is not Replicate's (an emulator).
    output_hosts: tuple[OutputHost, ...] = ("replicate.delivery", "*.replicate.delivery")

    @property
    def longest_call_seconds(self) -> float:
        """The longest one provider call takes with its retries: every attempt's timeout
        and the longest wait between two."""
        waits = (self.max_attempts - 1) * PROVIDER_BACKOFF_MAX_SECONDS
        return self.max_attempts * self.request_timeout_seconds + waits

    @model_validator(mode="after")
    def _known_events(self) -> Replicate:
        unknown = set(self.webhook_events) - {"start", "output", "logs", "completed"}
        if unknown or "completed" not in self.webhook_events:
            raise ValueError("webhook_events must include 'completed' and only known events")
        return self


class Choice(_Strict):
    label: str = Field(min_length=1)
    # The text merged into the composed prompt.
    seed: str = Field(min_length=1)


class RuntimeConfig(_Strict):
    plans: dict[str, Plan]
    uploads: Uploads = Uploads()
    timings: Timings = Timings()
    prompts: Prompts = Prompts()
    replicate: Replicate = Replicate()
    styles: dict[Slug, Choice]
    room_types: dict[Slug, Choice]

    @model_validator(mode="after")
    def _free_plan(self) -> RuntimeConfig:
        if "free" not in self.plans:
            raise ValueError("plans must include the 'free' fallback")
        return self

    @model_validator(mode="after")
    def _grace_outlasts_a_create(self) -> RuntimeConfig:
        longest_ms = self.replicate.longest_call_seconds * 1000
        if self.timings.unsubmitted_grace_ms <= longest_ms:
            raise ValueError(
                f"timings.unsubmitted_grace_ms ({self.timings.unsubmitted_grace_ms}) must be"
                f" longer than a provider create can take ({longest_ms:.0f} ms: replicate."
                "max_attempts x request_timeout_seconds plus the waits between attempts)"
            )
        return self


class RuntimeConfigError(Exception):
    """The file is missing, not TOML, or does not validate; the message names the key."""


def load_runtime_config(path: Path) -> RuntimeConfig:
    """Read and validate the runtime config file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        # The absolute path: a relative default is read from the working directory.
        raise RuntimeConfigError(
            f"runtime config {path.absolute()}: cannot read: {exc.strerror}"
            " (set RUNTIME_CONFIG_FILE, or start in the directory holding config/)"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise RuntimeConfigError(f"runtime config {path}: not valid TOML: {exc}") from exc
    try:
        return RuntimeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise RuntimeConfigError(f"runtime config {path}: {problems}") from None
