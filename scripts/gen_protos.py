"""Generate Python code and mypy stubs for every .proto under protos/.

Usage: python scripts/gen_protos.py OUT_DIR

The output tree mirrors the proto package path (``interior/generation/v1``), so
the generated imports work without rewriting. Each package directory gets an
empty ``__init__.py`` so the contracts are an ordinary importable package.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> None:
    """Regenerate ``out_dir`` from scratch."""
    generated_root = out_dir / "interior"
    if generated_root.exists():
        shutil.rmtree(generated_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in [generated_root, *[p for p in generated_root.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]).resolve())
