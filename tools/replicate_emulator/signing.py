"""Standard Webhooks signing, done with the ``standardwebhooks`` library itself."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks import Webhook

_ID_ALPHABET = string.ascii_letters + string.digits


def new_message_id() -> str:
    """A ``msg_`` id like Replicate's (``msg_p5jXN8AQM9LWM0D4loKWxJek``)."""
    return "msg_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class SignedHeaders:
    """The three Standard Webhooks headers of one attempt."""

    webhook_id: str
    timestamp: int
    signature: str

    def as_dict(self) -> dict[str, str]:
        """HTTP headers, plus the content type."""
        return {
            "webhook-id": self.webhook_id,
            "webhook-timestamp": str(self.timestamp),
            "webhook-signature": self.signature,
            "content-type": "application/json",
        }


def sign(secret: str, webhook_id: str, body: bytes, timestamp: int | None = None) -> SignedHeaders:
    """Sign ``{id}.{timestamp}.{body}`` with ``secret`` (``whsec_<base64>``)."""
    moment = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(
        webhook_id, datetime.fromtimestamp(moment, UTC), body.decode("utf-8")
    )
    return SignedHeaders(webhook_id, moment, signature)
