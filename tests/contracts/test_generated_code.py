"""The committed generated code must be exactly what `make proto` produces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    committed = _tree(ROOT / "libs" / "contracts" / "interior")
    fresh = _tree(tmp_path / "interior")
    assert committed.keys() == fresh.keys(), "run `make proto`: generated files differ"
    changed = [name for name in fresh if committed[name] != fresh[name]]
    assert not changed, f"run `make proto`: stale generated files {changed}"


def test_every_rpc_and_message_is_documented() -> None:
    missing: list[str] = []
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("rpc ") and not lines[number - 1].strip().startswith("//"):
                missing.append(f"{proto.name}:{number + 1}")
    assert not missing, f"undocumented rpcs: {missing}"
