"""`make run`'s service identity keys: made once, private to their owner, reused."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kit.service_identity import IDENTITIES, TokenSigner, TokenVerifier
from kit.service_keys import TrustStore, load_private_key, public_pem
from launcher.config import LauncherConfig
from launcher.keys import ensure_key_dir, ensure_keys, identity_env, key_file, trust_dir


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


def test_runs_at_once_agree_on_every_key(tmp_path: Path) -> None:
    # Written in place, a key another run was still writing read as empty (a traceback)
    # or two runs ended with different keys than their trust files said.
    directory = tmp_path / "shared"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: ensure_key_dir(directory), range(8)))

    assert sorted(name for names in made for name in names) == sorted(IDENTITIES)
    for name in IDENTITIES:
        key = load_private_key(directory / f"{name}.key")
        assert (directory / "trust" / f"{name}.pub").read_bytes() == public_pem(key.public_key())
    assert not [path for path in directory.rglob("*.tmp")]


def test_a_directory_that_existed_keeps_its_mode(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    ensure_key_dir(directory)
    assert directory.stat().st_mode & 0o777 == 0o755
    for name in IDENTITIES:
        assert (directory / f"{name}.key").stat().st_mode & 0o777 == 0o600


def test_the_command_answers_bad_input_with_a_message_and_2(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    for argv in ([], [str(not_a_dir / "keys")]):
        result = subprocess.run(
            [sys.executable, "-m", "launcher.keys", *argv], capture_output=True, text=True
        )
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
    assert "cannot make the keys in" in result.stderr
