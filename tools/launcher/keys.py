"""Service identity keys: one Ed25519 pair per service and the operator.

``make run`` makes them on first start in ``<data dir>/keys`` (private keys 0600, the
directory 0700) and keeps them, so a restart reuses them. Each service gets its own
private key and the shared trust directory of public keys, as a deployment would.

``python -m launcher.keys DIR`` makes the same layout for a deployment (compose's
``SERVICE_KEYS_DIR``, or the files of the Kubernetes Secrets): ``DIR/<name>.key`` and
``DIR/trust/<name>.pub``; existing keys are kept, and a directory that existed keeps
its mode (one it makes is 0700). Runs at once agree: a key is written whole under a
temporary name, then linked in place only where none is yet.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from kit.service_identity import IDENTITIES
from kit.service_keys import KeyMaterialError, generate_key_pair, load_private_key, public_pem
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
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    trust = directory / "trust"
    trust.mkdir(exist_ok=True)
    created = []
    for name in sorted(IDENTITIES):
        private = directory / f"{name}.key"
        if not private.exists() and _create_key(private):
            created.append(name)
        # Written from the private key each time: a trust file never disagrees with it.
        _replace(trust / f"{name}.pub", public_pem(load_private_key(private).public_key()))
    return created


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _create_key(path: Path) -> bool:
    """A new private key at ``path`` unless one is there already (True when written)."""
    private_pem, _ = generate_key_pair()
    temporary = _temporary(path)
    _write_private_key(temporary, private_pem)
    try:
        os.link(temporary, path)  # atomic, and refuses to replace what another run made
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


def _replace(path: Path, data: bytes) -> None:
    temporary = _temporary(path)
    temporary.write_bytes(data)
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    """``python -m launcher.keys DIR``: 0, or 2 with a message (never a traceback)."""
    if len(argv) != 1:
        print("usage: python -m launcher.keys DIR", file=sys.stderr)
        return 2
    try:
        made = ensure_key_dir(Path(argv[0]))
    except (OSError, KeyMaterialError) as exc:
        print(f"cannot make the keys in {argv[0]}: {exc}", file=sys.stderr)
        return 2
    print(f"new keys: {', '.join(made) or 'none'} in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
