"""Service identity material: settings in production, token caching, trust dir reloads."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
from structlog.testing import capture_logs

from kit import service_identity
from kit.service_identity import (
    EDGE_API,
    OPERATOR,
    TOKEN_TTL_SECONDS,
    USAGE,
    TokenSigner,
    TokenVerifier,
    Unauthenticated,
)
from kit.service_keys import (
    KeyMaterialError,
    TrustStore,
    generate_key_pair,
    load_private_key,
    public_pem,
    write_private_key,
)
from kit.settings import GrpcServerSettings, ServiceIdentitySettings, ServiceSettings
from testkit.recording import record_results


class _ServerSettings(GrpcServerSettings):
    """A gRPC server: needs its key and the trust dir."""


class _ClientSettings(ServiceSettings, ServiceIdentitySettings):
    """A service that only calls (the edge, the gateway): needs its key only."""


def _pair(directory: Path, name: str, trust: Path | None = None) -> Path:
    private_pem, public = generate_key_pair()
    key = directory / f"{name}.key"
    write_private_key(key, private_pem)
    if trust is not None:
        trust.mkdir(exist_ok=True)
        (trust / f"{name}.pub").write_bytes(public)
    return key


def _production_usage(**env: str) -> _ServerSettings:
    # cast: pydantic's __init__ signature types every field; the env names are strings.
    return _ServerSettings(APP_ENV="production", **cast(dict[str, Any], env))


def test_production_refuses_to_start_without_key_material(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SERVICE_KEY_FILE is not set") as refused:
        _production_usage()
    assert "SERVICE_TRUST_DIR is not set" in str(refused.value)

    placeholder = tmp_path / "service.key"
    placeholder.write_text("REPLACE_ME")
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "edge-api.pub").write_text("REPLACE_ME")
    with pytest.raises(ValueError, match=r"SERVICE_KEY_FILE is unusable.*placeholder") as refused:
        _production_usage(
            SERVICE_KEY_FILE=str(placeholder), SERVICE_TRUST_DIR=str(tmp_path / "trust")
        )
    assert "SERVICE_TRUST_DIR is unusable" in str(refused.value)


def test_production_starts_with_key_material_and_clients_need_no_trust_dir(
    tmp_path: Path,
) -> None:
    key = _pair(tmp_path, USAGE, trust=tmp_path / "trust")
    settings = _production_usage(
        SERVICE_KEY_FILE=str(key), SERVICE_TRUST_DIR=str(tmp_path / "trust")
    )
    identity = settings.service_identity(USAGE)
    assert identity.signer is not None
    assert identity.verifier is not None

    edge = _ClientSettings(APP_ENV="production", SERVICE_KEY_FILE=str(_pair(tmp_path, EDGE_API)))
    assert edge.service_identity(EDGE_API).verifier is None
    with pytest.raises(ValueError, match="SERVICE_KEY_FILE is not set"):
        _ClientSettings(APP_ENV="production")


def test_development_without_keys_turns_internal_auth_off_with_one_warning() -> None:
    settings = _ServerSettings(APP_ENV="development")
    with capture_logs() as logs:
        identity = settings.service_identity(USAGE)
    assert identity.signer is None
    assert identity.verifier is None
    assert [entry["event"] for entry in logs] == ["service_identity.off"]


def test_tokens_are_cached_and_reminted_before_they_expire(tmp_path: Path) -> None:
    now = [1_000_000.0]
    signer = TokenSigner(EDGE_API, _pair(tmp_path, EDGE_API), clock=lambda: now[0])
    first = signer.token(USAGE)
    assert signer.token(USAGE) == first
    assert signer.token("generation") != first  # one per audience
    now[0] += 89  # 120 s tokens are replaced 30 s before they expire
    assert signer.token(USAGE) == first
    now[0] += 2
    renewed = signer.token(USAGE)
    assert renewed != first
    claims = jwt.decode(renewed, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert (claims["iss"], claims["aud"]) == (EDGE_API, USAGE)


def test_private_keys_are_written_for_their_owner_only(tmp_path: Path) -> None:
    key = _pair(tmp_path, EDGE_API)
    assert key.stat().st_mode & 0o777 == 0o600


def test_a_trust_file_may_hold_several_keys_and_odd_files_are_ignored(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    trust.mkdir()
    keys = [_pair(tmp_path, f"k{i}") for i in range(2)]
    publics = [load_private_key(k).public_key() for k in keys]
    (trust / "edge-api.pub").write_bytes(b"".join(public_pem(p) for p in publics))
    (trust / "README").write_text("not a key")
    (trust / ".hidden.pub").write_text("REPLACE_ME")
    verifier = TokenVerifier(USAGE, TrustStore(trust, recheck_seconds=0))
    for key in keys:
        token = TokenSigner(EDGE_API, key).token(USAGE)
        assert verifier.caller(f"Bearer {token}") == EDGE_API


def test_a_kubernetes_style_secret_swap_is_picked_up(tmp_path: Path) -> None:
    """Kubelet swaps a ``..data`` symlink; the files are symlinks through it."""
    trust = tmp_path / "trust"
    trust.mkdir()
    old_key, new_key = _pair(tmp_path, "old"), _pair(tmp_path, "new")
    for version, key in (("v1", old_key), ("v2", new_key)):
        (trust / f"..{version}").mkdir()
        (trust / f"..{version}" / "edge-api.pub").write_bytes(
            public_pem(load_private_key(key).public_key())
        )
    (trust / "..data").symlink_to("..v1")
    (trust / "edge-api.pub").symlink_to("..data/edge-api.pub")
    verifier = TokenVerifier(USAGE, TrustStore(trust, recheck_seconds=0))
    old = TokenSigner(EDGE_API, old_key).token(USAGE)
    new = TokenSigner(EDGE_API, new_key).token(USAGE)
    assert verifier.caller(f"Bearer {old}") == EDGE_API

    (trust / "..tmp").symlink_to("..v2")
    os.replace(trust / "..tmp", trust / "..data")

    assert verifier.caller(f"Bearer {new}") == EDGE_API
    with pytest.raises(Unauthenticated):
        verifier.caller(f"Bearer {old}")


def test_an_unreadable_trust_dir_refuses_calls_instead_of_crashing(tmp_path: Path) -> None:
    verifier = TokenVerifier(USAGE, TrustStore(tmp_path / "missing", recheck_seconds=0))
    token = TokenSigner(EDGE_API, _pair(tmp_path, EDGE_API)).token(USAGE)
    with pytest.raises(Unauthenticated):
        verifier.caller(f"Bearer {token}")
    with pytest.raises(KeyMaterialError):
        TrustStore(tmp_path / "missing").keys()


def test_a_malformed_trust_file_is_skipped_at_run_time_but_refused_at_start(
    tmp_path: Path,
) -> None:
    trust = tmp_path / "trust"
    key = _pair(tmp_path, EDGE_API, trust=trust)
    (trust / "usage.pub").write_text(
        "-----BEGIN PUBLIC KEY-----\nbroken\n-----END PUBLIC KEY-----\n"
    )
    verifier = TokenVerifier(USAGE, TrustStore(trust, recheck_seconds=0))

    assert verifier.caller(f"Bearer {TokenSigner(EDGE_API, key).token(USAGE)}") == EDGE_API
    with pytest.raises(ValueError, match="SERVICE_TRUST_DIR is unusable"):
        _production_usage(SERVICE_KEY_FILE=str(key), SERVICE_TRUST_DIR=str(trust))


def test_a_key_file_caught_mid_rewrite_keeps_the_previous_key(tmp_path: Path) -> None:
    now = [1_000_000.0]
    key = _pair(tmp_path, EDGE_API)
    public = load_private_key(key).public_key()
    signer = TokenSigner(EDGE_API, key, clock=lambda: now[0])
    first = signer.token(USAGE)
    key.write_text("")  # truncated, the new content not written yet
    now[0] += 1000
    renewed = signer.token(USAGE)

    assert renewed != first
    options: jwt.types.Options = {"verify_exp": False, "verify_iat": False}
    claims = jwt.decode(renewed, public, algorithms=["EdDSA"], audience=USAGE, options=options)
    assert claims["iss"] == EDGE_API


def test_a_verified_token_is_checked_once_until_the_trust_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = tmp_path / "trust"
    key = _pair(tmp_path, EDGE_API, trust=trust)
    _pair(tmp_path, OPERATOR, trust=trust)
    verifier = TokenVerifier(USAGE, TrustStore(trust, recheck_seconds=0))
    token = f"Bearer {TokenSigner(EDGE_API, key).token(USAGE)}"
    checks = record_results(monkeypatch, service_identity.jwt, "decode")  # type: ignore[attr-defined]  # the module kit uses, not re-exported

    for _ in range(50):
        assert verifier.caller(token) == EDGE_API
    # The first call reads the issuer and checks the signature; the others remember it.
    assert len(checks) == 2

    (trust / "edge-api.pub").unlink()  # the trust changes: remembered tokens are dropped
    with pytest.raises(Unauthenticated):
        verifier.caller(token)


def test_a_remembered_token_is_refused_once_it_expires(tmp_path: Path) -> None:
    """Remembering a verified token saves its signature check, never its expiry: a token
    that leaked stops working when it expires, not when the trust store next changes."""
    trust = tmp_path / "trust"
    key = _pair(tmp_path, EDGE_API, trust=trust)
    verifier = TokenVerifier(USAGE, TrustStore(trust, recheck_seconds=0))
    # Issued long enough ago that it ends about a second from now, leeway included.
    issued_ago = TOKEN_TTL_SECONDS + service_identity.LEEWAY_SECONDS - 1
    signer = TokenSigner(EDGE_API, key, clock=lambda: time.time() - issued_ago)
    token = f"Bearer {signer.token(USAGE)}"

    assert verifier.caller(token) == EDGE_API
    time.sleep(1.2)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.caller(token)
