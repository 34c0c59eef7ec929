"""What runs inside a decode worker process: its budgets and one check-and-clean.

A worker is ``python -m generation.domain.image_worker <memory bytes>``: a fresh
interpreter that imports this module and what it imports, Pillow and the image
checks, nothing else. Every page a worker imports is memory it holds for its life;
grpc, pydantic and SQLAlchemy (via kit) cost ~35 MiB per process that no decode uses.
``decoder`` keeps the service's side; ``tests/unit/test_decoder.py`` checks what a
worker has mapped.

It takes one call at a time on stdin and answers on stdout, one JSON line each
(:func:`serve`): plain data both ways, so the service never unpickles what a
process that parses hostile files sends it. Stray prints go to stderr; warnings go
there as JSON lines.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from generation.domain.image_clean import (
    ImageLimits,
    ImageRefused,
    inspect_and_clean,
    prove_whole,
    strip_unproven,
)


def init_worker(memory_bytes: int) -> None:
    """In each worker: the address-space budget, and no core file when it is killed.

    Limits only ever go down: a hard limit the environment set lower (a container's
    ``ulimit``) is kept, since raising it is refused and would fail every decode."""
    budget = _within_hard_limit(resource.RLIMIT_AS, memory_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _within_hard_limit(kind: int, wanted: int) -> int:
    """``wanted``, or the current hard limit of ``kind`` when that is lower."""
    _, hard = resource.getrlimit(kind)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def clean_in_worker(
    path: str,
    out_path: str,
    limits: ImageLimits,
    cpu_seconds: int,
    field: str,
    checked: tuple[str, int, int] | None = None,
) -> tuple[str, str, int, int, int]:
    """Check and clean the upload at ``path`` into ``out_path`` (which must exist).

    ``checked``: the service's ``check_before_decoding`` answer for this file, so the
    scans are not repeated here (see ``inspect_and_clean``). Refusals are raised as
    ``ImageRefused`` (pickled back to the service as raised).
    """
    limit_cpu(cpu_seconds)
    with open(path, "rb") as source:
        clean = inspect_and_clean(source, limits, field, checked, _rewritten(out_path))
    clean.close()
    return clean.mime_type, clean.extension, clean.width, clean.height, clean.size


def strip_in_worker(
    path: str,
    out_path: str,
    limits: ImageLimits,
    cpu_seconds: int,
    field: str,
    checked: tuple[str, int, int],
) -> tuple[str, str, int, int, int] | None:
    """``strip_unproven`` of the upload at ``path`` into ``out_path`` (which must
    exist): its facts as ``clean_in_worker`` answers them, or None when it must be
    cleaned whole instead. The upload is not proven yet (``prove_in_worker``)."""
    limit_cpu(cpu_seconds)
    with open(path, "rb") as source:
        clean = strip_unproven(source, limits, field, checked, _rewritten(out_path))
    if clean is None:
        return None
    clean.close()
    return clean.mime_type, clean.extension, clean.width, clean.height, clean.size


def prove_in_worker(
    path: str, limits: ImageLimits, cpu_seconds: int, field: str, checked: tuple[str, int, int]
) -> None:
    """``prove_whole`` of the upload at ``path``: returns, or raises ``ImageRefused``."""
    limit_cpu(cpu_seconds)
    with open(path, "rb") as source:
        prove_whole(source, limits, field, checked)


def _rewritten(out_path: str) -> Callable[[], IO[bytes]]:
    """Opens the service's output file, emptied: the cleaned image is written there
    directly, with no copy of it in this process first."""

    def open_out() -> IO[bytes]:
        # "r+b": never recreate a file the service already deleted (a canceled request).
        out = open(out_path, "r+b")  # noqa: SIM115 (the CleanImage closes it)
        try:
            out.truncate(0)
        except BaseException:
            out.close()
            raise
        return out

    return open_out


def limit_cpu(seconds: int) -> None:
    """Let this decode use ``seconds`` more CPU; past that SIGXCPU ends the worker."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(usage.ru_utime + usage.ru_stime) + 1
    # The hard limit stays as it is (raising it is refused where the environment set one).
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = _within_hard_limit(resource.RLIMIT_CPU, spent + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _limits(plain: dict[str, Any]) -> ImageLimits:
    return ImageLimits(
        plain["max_bytes"],
        tuple(plain["accepted_mime_types"]),
        plain["max_pixels"],
        plain["max_pixels_per_byte"],
    )


def _checked(value: list[Any]) -> tuple[str, int, int]:
    kind, width, height = value
    return str(kind), int(width), int(height)


def _call(name: str, args: list[Any]) -> object:
    """One call of a request line, its arguments as plain JSON values: ``[path,
    out_path, limits, cpu_seconds, field, checked]`` (``prove``: no ``out_path``)."""
    if name == "prove":
        path, limits, cpu_seconds, field, checked = args
        prove_in_worker(path, _limits(limits), cpu_seconds, field, _checked(checked))
        return None
    path, out_path, limits, cpu_seconds, field, checked = args
    if name == "clean":
        return clean_in_worker(
            path, out_path, _limits(limits), cpu_seconds, field, _checked(checked)
        )
    if name == "strip":
        return strip_in_worker(
            path, out_path, _limits(limits), cpu_seconds, field, _checked(checked)
        )
    raise ValueError(f"no call {name!r}")


def answer(request: bytes) -> dict[str, Any]:
    """The answer line to one request line: ``ok`` (the call's value), ``refused``
    (status, message), ``over_memory`` (the address-space budget was hit), or
    ``error`` (anything else, by type name only)."""
    try:
        message = json.loads(request)
        return {"ok": _call(message["call"], message["args"])}
    except ImageRefused as refused:
        return {"refused": [refused.status, refused.message]}
    except MemoryError:
        return {"over_memory": True}
    except Exception as error:  # reported, never a traceback on the service's side
        return {"error": type(error).__name__}


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: IO[str] | None = None,
    line: str | None = None,
) -> None:
    """A library's warning (Pillow's for a damaged EXIF tag, which camera files have)
    as one JSON line on the service's stderr, not Python's two plain-text lines."""
    record = {
        "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": "warning",
        "service": "generation",
        "component": "generation.image_worker",
        "event": "decoder.warning",
        "category": category.__name__,
        "message": str(message)[:200],
    }
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()


def serve(memory_bytes: int) -> None:
    """Answer request lines on stdin until it closes (the service stopped or died)."""
    init_worker(memory_bytes)
    warnings.showwarning = _warning_line
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the answers
    answers.write(json.dumps({"ready": os.getpid()}).encode() + b"\n")
    answers.flush()
    for request in requests:
        answers.write(json.dumps(answer(request)).encode() + b"\n")
        answers.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
