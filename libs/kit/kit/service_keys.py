"""Service identity key material: Ed25519 key files and the trust directory.

Private keys are PKCS#8 PEM files readable by their owner only. A trust directory holds
``<name>.pub`` or ``<name>.<label>.pub`` files, each with one or more PEM public keys,
so a name can have several keys while one rotates. Files are re-read when they change
(stat signature, cached), so keys rotate without a restart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kit.dev_values import secret_problem
from kit.logging import get_logger

log = get_logger("kit.service_keys")

# How often a server looks at its trust directory for changed keys.
TRUST_RECHECK_SECONDS = 1.0

_PEM_PUBLIC_BEGIN = b"-----BEGIN PUBLIC KEY-----"
_PEM_PUBLIC_END = b"-----END PUBLIC KEY-----"

FileSignature = tuple[int, int, int]


class KeyMaterialError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key (text names the path)."""


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private, public_pem(key.public_key())


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The PEM text of a public key, as trust directories hold it."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_private_key(path: Path, pem: bytes) -> None:
    """Writes a private key readable by its owner only (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyMaterialError(f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"{path} is not an Ed25519 key")
    return key


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM file (at least one)."""
    data = _read(path)
    keys: list[Ed25519PublicKey] = []
    for block in data.split(_PEM_PUBLIC_END)[:-1]:
        try:
            key = serialization.load_pem_public_key(block.strip() + b"\n" + _PEM_PUBLIC_END)
        except ValueError:
            raise KeyMaterialError(f"{path} holds a malformed PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyMaterialError(f"{path} holds a key that is not Ed25519")
        keys.append(key)
    if not keys or _PEM_PUBLIC_BEGIN not in data:
        raise KeyMaterialError(f"{path} holds no PEM public key")
    return keys


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyMaterialError(f"{path} cannot be read ({error.strerror})") from None
    if secret_problem(data.decode("utf-8", "replace")) is not None:
        raise KeyMaterialError(f"{path} is empty or a template placeholder")
    return data


def file_signature(path: Path) -> FileSignature | None:
    """What changes when a file is replaced or rewritten (follows symlinks, as k8s uses)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def identity_of(file_name: str) -> str | None:
    """``edge-api.pub`` and ``edge-api.2026-12.pub`` -> ``edge-api``; other names -> None."""
    if file_name.startswith(".") or not file_name.endswith(".pub"):
        return None
    return file_name.split(".", 1)[0] or None


def key_file_problem(path: Path | None) -> str | None:
    """Why a private key file cannot be used, or None."""
    if path is None:
        return "is not set"
    try:
        load_private_key(path)
    except KeyMaterialError as error:
        return f"is unusable: {error}"
    return None


def trust_dir_problem(path: Path | None) -> str | None:
    """Why a trust directory cannot be used, or None."""
    if path is None:
        return "is not set"
    try:
        TrustStore(path).keys(strict=True)
    except KeyMaterialError as error:
        return f"is unusable: {error}"
    return None


@dataclass
class TrustStore:
    """The public keys of every trusted caller, re-read when the directory changes."""

    directory: Path
    recheck_seconds: float = TRUST_RECHECK_SECONDS
    _keys: dict[str, list[Ed25519PublicKey]] = field(default_factory=dict, init=False)
    _signature: tuple[tuple[str, FileSignature | None], ...] | None = field(
        default=None, init=False
    )
    _checked_at: float = field(default=float("-inf"), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def keys_for(self, name: str) -> list[Ed25519PublicKey]:
        """The keys ``name`` may sign with (empty when it is not trusted)."""
        return self.keys().get(name, [])

    def keys(self, *, strict: bool = False) -> Mapping[str, list[Ed25519PublicKey]]:
        """Every trusted name and its keys; KeyMaterialError when the directory is
        unreadable or holds no key (``strict``: also when any file is malformed)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= self.recheck_seconds or self._signature is None:
                self._checked_at = now
                signature = self._scan()
                if signature != self._signature:
                    self._keys = self._load(signature, strict)
                    self._signature = signature
                    if not strict:  # a strict read is a settings check: it stays quiet
                        log.info("service_identity.trust_loaded", names=sorted(self._keys))
            return self._keys

    def _scan(self) -> tuple[tuple[str, FileSignature | None], ...]:
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory))
        except OSError as error:
            raise KeyMaterialError(f"{self.directory} cannot be read ({error.strerror})") from None
        files = [name for name in names if identity_of(name) is not None]
        return tuple((name, file_signature(self.directory / name)) for name in files)

    def _load(
        self, signature: tuple[tuple[str, FileSignature | None], ...], strict: bool
    ) -> dict[str, list[Ed25519PublicKey]]:
        keys: dict[str, list[Ed25519PublicKey]] = {}
        for name, _ in signature:
            path, identity = self.directory / name, identity_of(name)
            if identity is None or not path.is_file():
                continue
            try:
                loaded = load_public_keys(path)
            except KeyMaterialError as error:
                if strict:
                    raise
                # One bad file (mid-rotation) must not lock every caller out; a removed
                # file still removes its keys.
                log.error("service_identity.trust_file_skipped", error=str(error))
                continue
            keys.setdefault(identity, []).extend(loaded)
        if not keys:
            raise KeyMaterialError(f"{self.directory} holds no usable <name>.pub file")
        return keys
