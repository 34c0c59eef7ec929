"""`make run`'s service identity keys: made once, private to their owner, reused."""

from __future__ import annotations

from pathlib import Path

from kit.service_identity import IDENTITIES, TokenSigner, TokenVerifier
from kit.service_keys import TrustStore
from launcher.config import LauncherConfig
from launcher.keys import ensure_keys, identity_env, key_file, trust_dir


def test_keys_are_made_once_and_each_service_gets_its_own(tmp_path: Path) -> None:
    config = LauncherConfig.from_env({"LAUNCHER_DATA_DIR": str(tmp_path / "var")})

    assert sorted(ensure_keys(config)) == sorted(IDENTITIES)
    before = {name: key_file(config, name).read_bytes() for name in IDENTITIES}
    assert ensure_keys(config) == []  # a restart reuses them
    assert {name: key_file(config, name).read_bytes() for name in IDENTITIES} == before

    assert (tmp_path / "var" / "keys").stat().st_mode & 0o777 == 0o700
    for name in IDENTITIES:
        assert key_file(config, name).stat().st_mode & 0o777 == 0o600
    assert identity_env(config, "usage") == {
        "SERVICE_KEY_FILE": str(key_file(config, "usage")),
        "SERVICE_TRUST_DIR": str(trust_dir(config)),
    }
    verifier = TokenVerifier("usage", TrustStore(trust_dir(config)))
    token = TokenSigner("operator", key_file(config, "operator")).token("usage")
    assert verifier.caller(f"Bearer {token}") == "operator"
