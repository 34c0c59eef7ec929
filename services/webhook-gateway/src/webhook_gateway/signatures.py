"""Standard Webhooks signatures, as Replicate sends them.

Signed content is ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` (HMAC-SHA256
with the key inside ``whsec_<base64>``). The ``webhook-signature`` header holds one
or more space-separated ``v1,<base64>`` entries; any one matching is enough.

The ``standardwebhooks`` library computes the signature. Its ``verify`` is not
used as a whole because it compares timestamps against the wall clock with a
fixed five-minute window, reports stale and forged deliveries alike, and raises
plain ``ValueError`` on a malformed header entry; here the clock and tolerance
are injected and every failure has a reason the logs can name.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from standardwebhooks import Webhook

from kit.clock import Clock
from webhook_gateway.settings import decode_webhook_secret

RejectReason = Literal["missing_signature", "bad_signature", "stale_timestamp"]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
# Unix seconds fit in 11 digits until the year 5138; longer values are garbage.
_MAX_TIMESTAMP_DIGITS = 11


class SignatureRejected(Exception):
    """The delivery is not authentic (or too old/new to trust)."""

    def __init__(self, reason: RejectReason) -> None:
        super().__init__(reason)
        self.reason: RejectReason = reason


class WebhookVerifier:
    """Checks one delivery's headers against its raw body."""

    def __init__(self, secret: str, *, tolerance_seconds: int | None, clock: Clock) -> None:
        """``tolerance_seconds=None`` disables the timestamp check (test vectors only)."""
        decode_webhook_secret(secret)  # fail fast with a clear message
        self._webhook = Webhook(secret)
        self._tolerance = tolerance_seconds
        self._clock = clock

    def check_headers(self, headers: Mapping[str, str]) -> datetime:
        """What needs no body: the three headers present and the timestamp in its window
        (so a delivery that cannot be authentic is refused before its body is read); the
        timestamp. Raises :class:`SignatureRejected`."""
        raw_timestamp = headers.get(TIMESTAMP_HEADER, "").strip()
        if not (
            headers.get(ID_HEADER, "")
            and raw_timestamp
            and headers.get(SIGNATURE_HEADER, "").strip()
        ):
            raise SignatureRejected("missing_signature")
        return self._checked_timestamp(raw_timestamp)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Return when authentic; raise :class:`SignatureRejected` otherwise."""
        timestamp = self.check_headers(headers)
        msg_id = headers.get(ID_HEADER, "")
        raw_signatures = headers.get(SIGNATURE_HEADER, "")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # The library signs text; bytes that are not UTF-8 cannot carry a valid signature.
            raise SignatureRejected("bad_signature") from None
        expected = self._webhook.sign(msg_id=msg_id, timestamp=timestamp, data=text)
        expected_digest = base64.b64decode(expected.partition(",")[2])
        if not any(
            hmac.compare_digest(expected_digest, candidate)
            for candidate in _v1_digests(raw_signatures)
        ):
            raise SignatureRejected("bad_signature")

    def _checked_timestamp(self, raw: str) -> datetime:
        if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_TIMESTAMP_DIGITS:
            raise SignatureRejected("bad_signature")
        seconds = int(raw)
        if self._tolerance is not None:
            now = self._clock.now().timestamp()
            if abs(now - seconds) > self._tolerance:
                raise SignatureRejected("stale_timestamp")
        return datetime.fromtimestamp(seconds, tz=UTC)


def _v1_digests(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a header; other versions and junk are skipped."""
    digests = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            digests.append(base64.b64decode(encoded, validate=True))
        except ValueError:  # binascii.Error, or a plain ValueError for non-ASCII text
            continue
    return digests
