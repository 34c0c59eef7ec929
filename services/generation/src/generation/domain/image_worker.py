"""What runs inside a decode worker process: its budgets and one check-and-clean.

The workers (spawned: fresh interpreters) import this module and what it
imports: Pillow and the image checks, nothing else. Every page a worker imports is
memory it holds for the life of the pool; grpc, pydantic and SQLAlchemy (via kit)
cost ~35 MiB per process that no decode uses. ``decoder`` keeps the service's side;
``tests/unit/test_decoder.py`` checks that a worker's ``sys.modules`` stays lean.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import IO

from generation.domain.image_clean import (
    ImageLimits,
    inspect_and_clean,
    prove_whole,
    strip_unproven,
)


def init_worker(memory_bytes: int) -> None:
    """In each worker: the address-space budget, and no core file when it is killed."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


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
    resource.setrlimit(resource.RLIMIT_CPU, (spent + seconds, resource.RLIM_INFINITY))
