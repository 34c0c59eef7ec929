"""Service identity keys: one Ed25519 pair per service and the operator.

``make run`` makes them on first start in ``<data dir>/keys`` (private keys 0600, the
directory 0700) and keeps them, so a restart reuses them. Each service gets its own
private key and the shared trust directory of public keys, as a deployment would.

``python -m launcher.keys DIR`` makes the same layout for a deployment (compose's
``SERVICE_KEYS_DIR``, or the files of the Kubernetes Secrets): ``DIR/<name>.key`` and
``DIR/trust/<name>.pub``; existing keys are kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kit.service_identity import IDENTITIES
from kit.service_keys import generate_key_pair, load_private_key, public_pem
from kit.service_keys import write_private_key as _write_private_key
from launcher.config import LauncherConfig


def keys_dir(config: LauncherConfig) -> Path:
    """Where the local system's keys live."""
    return config.data_dir / "keys"


def key_file(config: LauncherConfig, name: str) -> Path:
    """The private key of identity ``name``."""
    return keys_dir(config) / f"{name}.key"


def trust_dir(config: LauncherConfig) -> Path:
    """The public keys every local server trusts."""
    return keys_dir(config) / "trust"


def identity_env(config: LauncherConfig, name: str) -> dict[str, str]:
    """The variables that give a service its identity."""
    return {
        "SERVICE_KEY_FILE": str(key_file(config, name)),
        "SERVICE_TRUST_DIR": str(trust_dir(config)),
    }


def ensure_keys(config: LauncherConfig) -> list[str]:
    """Creates whatever key of the local system is missing; returns the new ones."""
    return ensure_key_dir(keys_dir(config))


def ensure_key_dir(directory: Path) -> list[str]:
    """``directory/<name>.key`` for every identity (new ones only when missing) and
    ``directory/trust/<name>.pub``; returns the identities that got a new key."""
    trust = directory / "trust"
    trust.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    created = []
    for name in sorted(IDENTITIES):
        private = directory / f"{name}.key"
        if not private.exists():
            private_pem, _ = generate_key_pair()
            _write_private_key(private, private_pem)
            created.append(name)
        # Written from the private key each time: a trust file never disagrees with it.
        (trust / f"{name}.pub").write_bytes(public_pem(load_private_key(private).public_key()))
    return created


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m launcher.keys DIR")
    made = ensure_key_dir(Path(sys.argv[1]))
    print(f"new keys: {', '.join(made) or 'none'} in {sys.argv[1]}")
