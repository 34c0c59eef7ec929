"""What the clients send: photo-like JPEGs of a given size, user tokens, multipart bodies."""

from __future__ import annotations

import io
import random
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from PIL import Image

MB = 1_000_000
BOUNDARY = "interior-bench-boundary-7d1f0c"


def photo_jpeg(width: int, height: int, target_bytes: int, *, seed: int = 7) -> bytes:
    """A JPEG of ``width`` x ``height`` whose size is just under ``target_bytes``.

    Smoothed noise (a small random picture scaled up) behaves like a photo for
    the codec; the quality is searched so the file lands near the target.
    """
    rng = random.Random(seed)
    small_w, small_h = max(1, width // 2), max(1, height // 2)
    small = Image.frombytes("RGB", (small_w, small_h), rng.randbytes(small_w * small_h * 3))
    picture = small.resize((width, height), Image.Resampling.BILINEAR)
    low, high, best = 5, 100, b""
    while low <= high:
        quality = (low + high) // 2
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=quality)
        data = buffer.getvalue()
        if len(data) <= target_bytes:
            best, low = data, quality + 1
        else:
            high = quality - 1
    if not best:
        raise ValueError(f"cannot fit a {width}x{height} JPEG into {target_bytes} bytes")
    return best


def user_token(secret: str, user_id: uuid.UUID | None = None, hours: int = 2) -> str:
    """A Supabase-style HS256 user token (the edge's contract)."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id or uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=hours)).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def submission_body(image: bytes, *, mode: str = "redesign", style: str = "scandi_au") -> bytes:
    """A multipart/form-data submission with one image, built once and sent many times."""
    parts: list[bytes] = []
    for name, value in (("mode", mode), ("style", style)):
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="input1"; '
        f'filename="room.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
    )
    parts.append(image + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
