"""Values this repository publishes for local runs, and how production refuses them.

``make run``, the tests and the deploy templates need credentials that work out of
the box; every one of them is public (it is in this repository), so none may ever
protect a real deployment. In production (``APP_ENV=production``, the default) a
service refuses to start when a secret it needs is missing, is one of these values,
or is a template placeholder, naming the variable (see :func:`secret_problem`).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# The development defaults, in one place: the launcher, the emulator and the edge's
# development fallback use these names.
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"  # noqa: S105
DEV_REPLICATE_TOKEN = "r8_dev_emulator_token"  # noqa: S105
DEV_WEBHOOK_SECRET = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="  # noqa: S105
DEV_S3_ACCESS_KEY = "interior-dev"
DEV_S3_SECRET_KEY = "interior-dev-secret-key-0123456789"  # noqa: S105
DEV_POSTGRES_PASSWORD = "interior-dev-password"  # noqa: S105

PUBLISHED_VALUES = frozenset(
    {
        DEV_JWT_SECRET,
        DEV_REPLICATE_TOKEN,
        DEV_WEBHOOK_SECRET,
        DEV_S3_ACCESS_KEY,
        DEV_S3_SECRET_KEY,
        DEV_POSTGRES_PASSWORD,
        # The webhook test vector of REPLICATE.md and the Standard Webhooks spec.
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
)
# Template text ("REPLACE_ME", "change-me", "<your secret>") is never a real secret.
_PLACEHOLDER = re.compile(r"replace[_-]?me|change[_-]?me|placeholder|^<.*>$|^x+$", re.IGNORECASE)


# What urlsplit's hostname of a real URL looks like: a DNS name, IPv4 or IPv6 address.
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]+", re.IGNORECASE)
# Names reserved for examples and tests (RFC 2606, RFC 6761): never a deployment's host.
_EXAMPLE_HOSTS = re.compile(
    r"(^|\.)(example\.(com|net|org)|example|invalid|test|localhost)$", re.IGNORECASE
)


def public_url_problem(value: str) -> str | None:
    """Why ``value`` cannot be a deployment's URL (not an http(s) URL, or a template's
    example or placeholder), or None when it can. Plain http stays allowed: compose's
    offline profile points the emulator at http://envoy:8080."""
    try:
        parsed = urlsplit(value.strip())
        host = parsed.hostname or ""
    except ValueError:  # an unclosed IPv6 bracket
        return "is not an http(s) URL"
    if parsed.scheme not in {"http", "https"} or not host:
        return "is not an http(s) URL"
    if _PLACEHOLDER.search(value) or _EXAMPLE_HOSTS.search(host) or not _HOST.fullmatch(host):
        # A host with a template's <project> or {name} in it is no host at all.
        return "is a template's example or placeholder"
    return None


def secret_problem(value: str | None) -> str | None:
    """Why ``value`` cannot protect a production deployment, or None when it can."""
    text = (value or "").strip()
    if not text:
        return "is not set"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        # An .env file's quotes kept literally (docker --env-file, systemd): the value
        # used would not be the one meant, and a published one would slip through.
        return "is wrapped in quotes (remove them)"
    if text in PUBLISHED_VALUES:
        return "is a development value published in this repository"
    if _PLACEHOLDER.search(text):
        return "is a template placeholder"
    return None
