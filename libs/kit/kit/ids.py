"""Ids in requests: a UUID is its 36-character text form, nothing else.

``uuid.UUID(text)`` is lenient: it drops hyphens and braces, accepts a ``urn:uuid:``
prefix, a ``+`` sign, ``_`` between digits and any Unicode decimal digit (int()'s
rules), so an owner id written in Arabic-Indic digits names the same owner as the
one written in ASCII. A request's id is one spelling of one value, or it is refused.
"""

from __future__ import annotations

import re
import uuid

_HEX = "[0-9a-fA-F]"
_CANONICAL = re.compile(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")
# The same form as a JSON-schema pattern (OpenAPI documents ids with it), either case or
# lowercase only.
UUID_PATTERN = f"^{_CANONICAL.pattern}$"
LOWERCASE_UUID_PATTERN = UUID_PATTERN.replace("0-9a-fA-F", "0-9a-f")


def is_canonical_uuid(text: str, *, lowercase: bool = False) -> bool:
    """Whether ``text`` is a UUID's hyphenated hex form (only in lowercase if asked)."""
    return _CANONICAL.fullmatch(text) is not None and (not lowercase or text == text.lower())


def parse_uuid(text: str) -> uuid.UUID:
    """``text`` as a UUID when it is the hyphenated hex form (either case); ValueError."""
    if not _CANONICAL.fullmatch(text):
        raise ValueError("not a UUID in its hyphenated hex form")
    return uuid.UUID(text)
