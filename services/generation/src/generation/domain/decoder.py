"""Decoding uploads in worker processes that have a memory and a CPU budget.

Decoding a hostile image can take seconds of CPU or a gigabyte of memory. In the
service's own process that would stall the event loop (every other request waits)
or get the pod killed. So ``inspect_and_clean`` runs in a small
``ProcessPoolExecutor`` (``Uploads.decode_workers`` processes, each a fresh
interpreter that imports only the lean ``image_worker``: Pillow and the checks, no
grpc, pydantic or SQLAlchemy). Each worker limits its address
space to ``decode_memory_mib`` (an allocation past it fails: the upload is
refused with 400, "too large to process") and each decode to ``decode_cpu_seconds`` of
CPU (past it the kernel kills the worker with SIGXCPU). A worker that dies breaks
the pool: the upload being decoded gets 415, the pool is replaced, later uploads
are served by the new one.

The checks that need no decode (``check_before_decoding``) run first on this side,
so a file they refuse is never sent to a worker; the worker is handed their answer
and does not scan the file again. Files, not bytes, cross the process boundary: the
worker reads the upload by its name (the intake spools uploads to named files; any
other file is first copied to one), and writes the cleaned image into a named
temporary file this side owns (and deletes on close).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import IO

from generation.domain import image_worker
from generation.domain.image_clean import CleanImage, ImageLimits, ImageRefused
from generation.domain.images import check_before_decoding, domain_error, over_budget, unsupported
from kit.logging import get_logger
from kit.runtime_config import Uploads

log = get_logger("generation.decoder")

_MIB = 1024 * 1024


class ImageDecoder:
    """A pool of budgeted worker processes that check and clean uploads."""

    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads
        self._limits = ImageLimits.of(uploads)
        self._executor: ProcessPoolExecutor | None = None
        # One decode per worker at a time; more would only queue inside the pool.
        self._slots = asyncio.Semaphore(uploads.decode_workers)

    async def start(self) -> None:
        """Start the pool and wait until a worker answers (the first upload pays nothing)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool(), os.getpid)

    async def stop(self) -> None:
        """Shut the pool down, waiting for running decodes (each bounded by its CPU budget)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for measuring what decodes cost)."""
        executor = self._executor
        # No public accessor exists; the mapping is stable across 3.9-3.13.
        processes = getattr(executor, "_processes", None) or {}
        return list(processes)

    async def clean(self, source: IO[bytes], field: str) -> CleanImage:
        """``inspect_and_clean`` in a worker; the same refusals, plus 415 when it dies."""
        # The checks that need no decode first, here: a hostile file costs no copy and
        # no worker (milliseconds of C-speed scans, in a thread).
        checked = await asyncio.to_thread(check_before_decoding, source, self._uploads, field)
        async with self._slots:
            path = _path_of(source)
            if path is not None:
                return await self._clean_file(path, checked, field)
            upload = await asyncio.to_thread(_named_copy, source)
            try:
                return await self._clean_file(upload.name, checked, field)
            finally:
                upload.close()

    async def _clean_file(self, path: str, checked: tuple[str, int, int], field: str) -> CleanImage:
        out = tempfile.NamedTemporaryFile(prefix="clean-")  # noqa: SIM115 (CleanImage owns it)
        executor = self._pool()
        loop = asyncio.get_running_loop()
        try:
            kind, extension, width, height, size = await loop.run_in_executor(
                executor,
                image_worker.clean_in_worker,
                path,
                out.name,
                self._limits,
                self._uploads.decode_cpu_seconds,
                field,
                checked,
            )
        except ImageRefused as refused:
            out.close()
            raise domain_error(refused) from None
        except BrokenProcessPool as exc:
            out.close()
            self._replace(executor)
            log.warning("upload.decode_killed", field=field)
            raise unsupported(self._uploads, field) from exc
        except MemoryError as exc:
            out.close()
            log.warning("upload.decode_over_memory", field=field)
            raise over_budget(field) from exc
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return CleanImage(out, size, kind, extension, width, height)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # Spawned, not forked from a forkserver: a forkserver is one more resident
            # interpreter with Pillow imported (24 MiB RSS) to save ~0.3 s when a killed
            # worker is replaced, which only a runaway decode causes. Spawning imports
            # only what the pickled initializer names, never this service's stack.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                max_workers=self._uploads.decode_workers,
                mp_context=context,
                initializer=image_worker.init_worker,
                initargs=(self._uploads.decode_memory_mib * _MIB,),
            )
        return self._executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Drop a broken pool (once, however many decodes saw it break)."""
        if self._executor is broken:
            self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)


def _path_of(source: IO[bytes]) -> str | None:
    """The name a worker can open ``source`` by (its writes flushed), or None when it
    has none: an in-memory file, or a temporary file without a name."""
    name = getattr(source, "name", None)
    if not isinstance(name, str) or not os.path.isfile(name):
        return None
    source.flush()
    return name


def _named_copy(source: IO[bytes]) -> IO[bytes]:
    copy = tempfile.NamedTemporaryFile(prefix="upload-")  # noqa: SIM115 (closed by the caller)
    try:
        source.seek(0)
        shutil.copyfileobj(source, copy)
        copy.flush()
    except BaseException:
        copy.close()
        raise
    return copy
