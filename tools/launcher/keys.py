"""Service identity keys for `make run`: one Ed25519 pair per service and the operator.

Made on first start in ``<data dir>/keys`` (private keys 0600, the directory 0700)
and kept, so a restart reuses them. Each service gets its own private key and the
shared trust directory of public keys, as a deployment would.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kit.service_identity import IDENTITIES, generate_key_pair, load_private_key, public_pem
from kit.service_identity import write_private_key as _write_private_key
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
    """Creates whatever key is missing; returns the identities that got a new key."""
    trust_dir(config).mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir(config), 0o700)
    created = []
    for name in sorted(IDENTITIES):
        private = key_file(config, name)
        if not private.exists():
            private_pem, _ = generate_key_pair()
            _write_private_key(private, private_pem)
            created.append(name)
        # Written from the private key each time: a trust file never disagrees with it.
        public: Ed25519PublicKey = load_private_key(private).public_key()
        (trust_dir(config) / f"{name}.pub").write_bytes(public_pem(public))
    return created
