"""Service identity: who is calling an internal gRPC method, proven by a signed token.

Each service holds its own Ed25519 private key (``SERVICE_KEY_FILE``) and signs a
short-lived JWT per target service (``iss`` = its name, ``aud`` = the target's name).
A server trusts the public keys in ``SERVICE_TRUST_DIR`` (see kit.service_keys) and
lets each method be called only by the names its servicer declares.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kit.logging import get_logger
from kit.service_keys import (
    TRUST_RECHECK_SECONDS,
    FileSignature,
    KeyMaterialError,
    TrustStore,
    file_signature,
    load_private_key,
)

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
# Verified tokens remembered at once (a few callers x audiences in practice).
VERIFIED_CACHE_SIZE = 1024

Clock = Callable[[], float]


class Unauthenticated(Exception):
    """The token is missing, malformed, expired, for another audience or not trusted."""


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
        signature = file_signature(self.key_file)
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
class TokenVerifier:
    """Checks tokens addressed to ``audience`` (this service) against a trust store.

    A verified token is remembered until it expires (callers reuse one for ~90 s, and an
    Ed25519 check costs ~0.2 ms of CPU); the memory is dropped whenever the trust store
    reloads, so a removed key stops working at once.
    """

    audience: str
    trust: TrustStore
    clock: Clock = time.time
    _verified: dict[str, tuple[str, float]] = field(default_factory=dict, init=False)
    _verified_with: Mapping[str, object] | None = field(default=None, init=False)

    def caller(self, authorization: str | None) -> str:
        """The verified caller's name; Unauthenticated (with a safe reason) otherwise."""
        token = _bearer(authorization)
        try:
            trusted = self.trust.keys()
        except KeyMaterialError as error:
            log.error("service_identity.trust_unreadable", error=str(error))
            raise Unauthenticated("trust material unreadable") from None
        if trusted is not self._verified_with:
            self._verified, self._verified_with = {}, trusted
        remembered = self._verified.get(token)
        if remembered is not None and self.clock() < remembered[1]:
            return remembered[0]
        issuer = _unverified_issuer(token)
        expires = self._verify(token, issuer, trusted.get(issuer, []))
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (issuer, expires)
        return issuer

    def _verify(self, token: str, issuer: str, keys: Iterable[Ed25519PublicKey]) -> float:
        """The expiry of a token of ``issuer`` signed by one of ``keys``."""
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
            return _check_lifetime(claims)
        raise Unauthenticated("caller or signature not trusted")


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


def _check_lifetime(claims: Mapping[str, object]) -> float:
    """The token's expiry, once its claimed lifetime is within bounds."""
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        raise Unauthenticated("token invalid")
    if expires - issued > MAX_LIFETIME_SECONDS:
        raise Unauthenticated("token lives too long")
    return float(expires)


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
