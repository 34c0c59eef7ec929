"""The image checks (``image_clean``) with the service's domain errors.

``image_clean`` stays free of kit (it runs in the lean decode workers) and raises
``ImageRefused`` with a status; here that becomes PayloadTooLarge (413),
UnsupportedMediaType (415) or ValidationError (400), one message everywhere.
"""

from __future__ import annotations

from typing import IO

from generation.domain import image_clean
from generation.domain.image_clean import CleanImage, ImageRefused, Limits, pixel_limit
from generation.domain.image_structure import prefix_problem
from kit.errors import DomainError, PayloadTooLarge, UnsupportedMediaType, ValidationError

__all__ = [
    "CleanImage",
    "check_before_decoding",
    "domain_error",
    "inspect_and_clean",
    "over_budget",
    "prefix_refusal",
    "too_large",
    "unsupported",
]

_BY_STATUS: dict[int, type[ValidationError]] = {
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    400: ValidationError,
}


def domain_error(refused: ImageRefused) -> DomainError:
    """The domain error a refusal stands for (same message)."""
    return _BY_STATUS.get(refused.status, ValidationError)(refused.message)


def inspect_and_clean(source: IO[bytes], uploads: Limits, field: str) -> CleanImage:
    """``image_clean.inspect_and_clean``, refusals as domain errors (see there)."""
    try:
        return image_clean.inspect_and_clean(source, uploads, field)
    except ImageRefused as refused:
        raise domain_error(refused) from None


def check_before_decoding(source: IO[bytes], uploads: Limits, field: str) -> tuple[str, int, int]:
    """``image_clean.check_before_decoding``, refusals as domain errors (see there)."""
    try:
        return image_clean.check_before_decoding(source, uploads, field)
    except ImageRefused as refused:
        raise domain_error(refused) from None


def prefix_refusal(prefix: IO[bytes], uploads: Limits, field: str) -> DomainError | None:
    """The 415 the whole upload will get, when its first bytes already prove it; else None.

    What ``check_before_decoding`` would answer for the whole file, decided early so
    the rest of a refused upload need not be received (see ``prefix_problem``).
    """
    if prefix_problem(prefix, pixel_limit(uploads)) is None:
        return None
    return unsupported(uploads, field)


def too_large(uploads: Limits, field: str) -> DomainError:
    """The refusal of an upload over ``uploads.max_bytes`` (413, one wording)."""
    return domain_error(image_clean.too_large(uploads, field))


def unsupported(uploads: Limits, field: str) -> DomainError:
    """The refusal of a file that is not an accepted, decodable image (415)."""
    return domain_error(image_clean.unsupported(uploads, field))


def over_budget(field: str) -> DomainError:
    """The refusal of an image whose decode needs more memory than a decode may use (400)."""
    return domain_error(image_clean.over_budget(field))
