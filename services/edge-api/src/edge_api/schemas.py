"""Request and response models of the REST API (camelCase on the wire)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

JobStatusName = Literal["starting", "processing", "succeeded", "failed", "canceled"]
Mode = Literal["redesign", "staging", "compose", "imagine"]
# 1-200 printable ASCII characters, not starting or ending with a space: generation
# trims a key, so "   " would be no key at all and " k " the key "k".
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7E](?:[\x20-\x7E]{0,198}[\x21-\x7E])?$"


def digits_only(value: object) -> object:
    """A whole number sent as text (a query parameter, a multipart field) in plain
    digits: pydantic's lax mode would also read " 5", "+5", "5.0" and "5_0" (fifty).
    A JSON number passes on to the field's own (strict) check."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise ValueError("must be a whole number written in digits")
    return value


DigitsOnly = BeforeValidator(digits_only)


class ApiModel(BaseModel):
    """camelCase aliases on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class SourceIn(ApiModel):
    """Refine: one of the caller's own succeeded jobs and which variant becomes input1."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, frozen=True, extra="forbid"
    )

    generation_id: str = Field(max_length=64)
    variant_idx: int = Field(default=0, ge=0, le=999)


class SubmissionFields(ApiModel):
    """The text fields of a submission (multipart fields or the JSON body)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, frozen=True, extra="forbid"
    )

    mode: Mode
    prompt: str | None = Field(default=None, max_length=8 * 1024)
    room_type: str | None = Field(default=None, max_length=64)
    style: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, pattern=IDEMPOTENCY_KEY_PATTERN)
    # Refine, in JSON: {"generationId", "variantIdx"}; in multipart: the two flat fields.
    source: SourceIn | None = None
    source_generation_id: str | None = Field(default=None, max_length=64)
    source_variant_idx: Annotated[int | None, DigitsOnly] = Field(default=None, ge=0, le=999)

    def source_ref(self) -> SourceIn | None:
        """The refine source, from whichever form the client used (never both)."""
        if self.source is not None and (
            self.source_generation_id is not None or self.source_variant_idx is not None
        ):
            raise ValueError("give source, or sourceGenerationId/sourceVariantIdx, not both")
        if self.source is not None:
            return self.source
        if self.source_generation_id is None:
            # 0 is what clients send by default; another index names a source that is missing.
            if self.source_variant_idx:
                raise ValueError("sourceVariantIdx needs sourceGenerationId")
            return None
        return SourceIn(
            generationId=self.source_generation_id, variantIdx=self.source_variant_idx or 0
        )


class CancelRequest(ApiModel):
    """Body of PATCH /generations/{id}."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["cancel"]


class JobSettingsOut(ApiModel):
    mode: Mode
    room_type: str | None
    style: str | None
    source_generation_id: str | None = Field(
        description="Refine: the caller's earlier job whose result became input1; else null."
    )


class JobErrorOut(ApiModel):
    code: str = Field(examples=["PROVIDER_FAILED"])
    message: str


class VariantOut(ApiModel):
    idx: int
    url: str = Field(description="Public URL of the rendered image (JPEG).")
    thumbnail_url: str | None = Field(
        description="A JPEG of at most 512 px on its long side, for galleries; null for a "
        "render whose thumbnail is not made yet."
    )
    width: int | None = Field(description="The render's width in pixels (null: unknown).")
    height: int | None = Field(description="The render's height in pixels (null: unknown).")


class InputOut(ApiModel):
    idx: int
    url: str = Field(
        description="A short-lived signed URL of the caller's own input image (before/after)."
    )


class JobOut(ApiModel):
    """A generation job as the client sees it."""

    id: str
    prediction_id: str | None
    status: JobStatusName
    settings: JobSettingsOut
    error: JobErrorOut | None
    created_at: str = Field(description="ISO-8601 UTC, e.g. 2025-01-31T12:00:00.000Z")
    updated_at: str
    completed_at: str | None
    inputs: list[InputOut] = Field(
        description="The caller's input images, in order (input1, input2); links expire "
        "after a few minutes: read the job again for fresh ones."
    )
    variants: list[VariantOut] = Field(description="Empty unless the job succeeded.")


class JobPageOut(ApiModel):
    """One page of the caller's history."""

    items: list[JobOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class QuotaOut(ApiModel):
    """The caller's plan and the current month's figures."""

    plan: str
    monthly_generations: int
    used: int
    remaining: int
    period_start: str
    period_end: str = Field(description="Exclusive end of the period (ISO-8601 UTC).")


class CatalogModeOut(ApiModel):
    key: Mode
    images: int = Field(description="How many images the mode takes (input1, input2).")
    prompt_required: bool


class CatalogChoiceOut(ApiModel):
    key: str
    label: str = Field(description="What to show a person.")


class CatalogUploadOut(ApiModel):
    max_bytes: int = Field(description="The largest accepted file, in bytes (each file).")
    types: list[str] = Field(description="Accepted image types (checked from the bytes).")


class CatalogPromptOut(ApiModel):
    max_length: int = Field(description="The longest accepted prompt, in characters.")


class CatalogOut(ApiModel):
    """What a frontend needs to build its form (GET /api/v1/catalog)."""

    modes: list[CatalogModeOut]
    styles: list[CatalogChoiceOut]
    room_types: list[CatalogChoiceOut]
    upload: CatalogUploadOut
    prompt: CatalogPromptOut


class ErrorDetail(BaseModel):
    """The error object; some codes carry extra keys."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["VALIDATION_ERROR"])
    message: str = Field(description="Safe text for the user.")
    periodEnd: str | None = Field(  # noqa: N815 - wire name
        default=None, description="LIMIT_EXCEEDED only: when the quota resets (ISO-8601 UTC)."
    )


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyOut(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="Health status of each backend service.")
