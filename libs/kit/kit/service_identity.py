"""Service identity: who is calling an internal gRPC method, proven by a signed token.

Each service holds its own Ed25519 private key (``SERVICE_KEY_FILE``) and signs a
short-lived JWT per target service (``iss`` = its name, ``aud`` = the target's name).
A server trusts the public keys in ``SERVICE_TRUST_DIR``: ``<name>.pub`` or
``<name>.<label>.pub`` files, each with one or more PEM public keys, so a name can
have several keys while one rotates. Key files are re-read when they change (stat
signature, cached), so keys rotate without a restart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kit.dev_values import secret_problem
from kit.logging import get_logger

log = get_logger("kit.service_identity")

EDGE_API = "edge-api"
WEBHOOK_GATEWAY = "webhook-gateway"
GENERATION = "generation"
USAGE = "usage"
OPERATOR = "operator"
IDENTITIES = frozenset({EDGE_API, WEBHOOK_GATEWAY, GENERATION, USAGE, OPERATOR})

ALGORITHM = "EdDSA"
TOKEN_TTL_SECONDS = 120
# A cached token is replaced this long before it expires, so none expires in flight.
REMINT_MARGIN_SECONDS = 30
# Clock skew tolerated between pods.
LEEWAY_SECONDS = 30
# Tokens that claim to live longer are refused: a leaked one stays useful only briefly.
MAX_LIFETIME_SECONDS = 300
# Bounds the work an unauthenticated caller can cause.
MAX_TOKEN_CHARS = 2048
# How often a server looks at its trust directory for changed keys.
TRUST_RECHECK_SECONDS = 1.0

_PEM_PUBLIC_BEGIN = b"-----BEGIN PUBLIC KEY-----"
_PEM_PUBLIC_END = b"-----END PUBLIC KEY-----"

Clock = Callable[[], float]
FileSignature = tuple[int, int, int]


class KeyMaterialError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key (text names the path)."""


class Unauthenticated(Exception):
    """The token is missing, malformed, expired, for another audience or not trusted."""


# -- key files


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


def _signature(path: Path) -> FileSignature | None:
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


# -- the caller's side


@dataclass
class _Minted:
    token: str
    renew_at: float


@dataclass
class TokenSigner:
    """Mints and caches this service's tokens, one per audience.

    The key file is re-read when it changes, and the cache dropped with it.
    """

    name: str
    key_file: Path
    ttl_seconds: int = TOKEN_TTL_SECONDS
    clock: Clock = time.time
    _key: Ed25519PrivateKey | None = field(default=None, init=False, repr=False)
    _key_signature: FileSignature | None = field(default=None, init=False, repr=False)
    _cache: dict[str, _Minted] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def token(self, audience: str) -> str:
        """A valid token for calls to ``audience``; KeyMaterialError when the key is bad."""
        with self._lock:
            key = self._current_key()
            now = self.clock()
            cached = self._cache.get(audience)
            if cached is not None and now < cached.renew_at:
                return cached.token
            issued = int(now)
            claims = {"iss": self.name, "aud": audience, "iat": issued}
            claims["exp"] = issued + self.ttl_seconds
            token = jwt.encode(claims, key, algorithm=ALGORITHM)
            renew_at = issued + max(self.ttl_seconds - REMINT_MARGIN_SECONDS, 1)
            self._cache[audience] = _Minted(token, renew_at)
            return token

    def _current_key(self) -> Ed25519PrivateKey:
        signature = _signature(self.key_file)
        if self._key is None or signature != self._key_signature:
            try:
                key = load_private_key(self.key_file)
            except KeyMaterialError as error:
                if self._key is None:
                    raise
                # Caught mid-rewrite (or broken): keep signing with the previous key and
                # look again on the next call.
                log.warning("service_identity.key_reload_failed", error=str(error))
                return self._key
            self._key, self._key_signature = key, signature
            self._cache.clear()
        return self._key


# -- the server's side


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
                    log.info("service_identity.trust_loaded", names=sorted(self._keys))
            return self._keys

    def _scan(self) -> tuple[tuple[str, FileSignature | None], ...]:
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory))
        except OSError as error:
            raise KeyMaterialError(f"{self.directory} cannot be read ({error.strerror})") from None
        files = [name for name in names if identity_of(name) is not None]
        return tuple((name, _signature(self.directory / name)) for name in files)

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


@dataclass
class TokenVerifier:
    """Checks tokens addressed to ``audience`` (this service) against a trust store."""

    audience: str
    trust: TrustStore

    def caller(self, authorization: str | None) -> str:
        """The verified caller's name; Unauthenticated (with a safe reason) otherwise."""
        token = _bearer(authorization)
        issuer = _unverified_issuer(token)
        try:
            keys = self.trust.keys_for(issuer)
        except KeyMaterialError as error:
            log.error("service_identity.trust_unreadable", error=str(error))
            raise Unauthenticated("trust material unreadable") from None
        if not keys:
            raise Unauthenticated("caller not trusted")
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=self.audience,
                    issuer=issuer,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["iss", "aud", "iat", "exp"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("token expired") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated("token for another service") from None
            except jwt.InvalidTokenError:
                raise Unauthenticated("token invalid") from None
            _check_lifetime(claims)
            return issuer
        raise Unauthenticated("signature not trusted")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("no token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("malformed authorization")
    return token


def _unverified_issuer(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Unauthenticated("token malformed") from None
    issuer = claims.get("iss")
    if header.get("alg") != ALGORITHM or not isinstance(issuer, str):
        raise Unauthenticated("token malformed")
    return issuer


def _check_lifetime(claims: Mapping[str, object]) -> None:
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        raise Unauthenticated("token invalid")
    if expires - issued > MAX_LIFETIME_SECONDS:
        raise Unauthenticated("token lives too long")


# -- who may call what


@dataclass(frozen=True)
class ServiceIdentity:
    """This process's identity: a signer for its calls, a verifier for its server.

    Either side is None when it is not configured (development only; settings refuse
    that in production).
    """

    name: str
    signer: TokenSigner | None
    verifier: TokenVerifier | None

    @classmethod
    def from_files(
        cls,
        name: str,
        key_file: Path | None,
        trust_dir: Path | None,
        *,
        serves: bool,
        recheck_seconds: float = TRUST_RECHECK_SECONDS,
    ) -> ServiceIdentity:
        """Builds both sides; warns once when a side is off (development only)."""
        signer = TokenSigner(name, key_file) if key_file is not None else None
        verifier = None
        if trust_dir is not None:
            verifier = TokenVerifier(name, TrustStore(trust_dir, recheck_seconds))
        if signer is None or (serves and verifier is None):
            log.warning(
                "service_identity.off",
                service=name,
                signing=signer is not None,
                verifying=verifier is not None,
                hint="set SERVICE_KEY_FILE and SERVICE_TRUST_DIR (required in production)",
            )
        return cls(name, signer, verifier if serves else None)
