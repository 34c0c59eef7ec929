"""Decoding uploads in worker processes that have a memory and a CPU budget.

Decoding a hostile image can take seconds of CPU or a gigabyte of memory. In the
service's own process that would stall the event loop (every other request waits)
or get the pod killed. So ``inspect_and_clean`` runs in a budgeted
worker process (``Uploads.decode_workers`` of them, each a fresh interpreter that
imports only the lean ``image_worker``: Pillow and the checks, no grpc, pydantic or
SQLAlchemy). Each worker limits its address space to ``decode_memory_mib`` (an
allocation past it fails: the upload is refused with 400, "too large to process") and
each decode to ``decode_cpu_seconds`` of CPU (past it the kernel kills the worker with
SIGXCPU). Each worker is a single-process ``ProcessPoolExecutor`` of its own, taking
one decode at a time: a worker that dies breaks only its own pool, so only the upload
it was decoding gets 415 (one pool of N workers would fail every decode running in
it, other users' too); that pool is replaced, later uploads are served by the new one.

The checks that need no decode (``check_before_decoding``) run first on this side,
so a file they refuse is never sent to a worker; the worker is handed their answer
and does not scan the file again. Files, not bytes, cross the process boundary: the
worker reads the upload by its name (the intake spools uploads to named files; any
other file is first copied to one), and writes the cleaned image into a named
temporary file this side owns (and deletes on close). ``strip`` and ``prove`` split
``clean`` in two for a JPEG that keeps its pixels (its metadata cut out first, its
decode after), so the caller can store the stripped copy while the decode runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from typing import IO, TypeVar

from generation.domain import image_worker
from generation.domain.image_clean import CleanImage, ImageLimits, ImageRefused
from generation.domain.images import check_before_decoding, domain_error, over_budget, unsupported
from kit.logging import get_logger
from kit.runtime_config import Uploads

log = get_logger("generation.decoder")

_MIB = 1024 * 1024
T = TypeVar("T")
# ``check_before_decoding``'s answer: (mime_type, width, height).
Checked = tuple[str, int, int]


@dataclass(frozen=True)
class Stripped:
    """An upload's metadata-free copy (``ImageDecoder.strip``), not yet proven whole."""

    image: CleanImage
    # The upload's own file, which the proof decodes.
    path: str
    checked: Checked


class ImageDecoder:
    """A pool of budgeted worker processes that check and clean uploads."""

    def __init__(self, uploads: Uploads) -> None:
        self._uploads = uploads
        self._limits = ImageLimits.of(uploads)
        # One single-worker pool per worker (started when first needed).
        self._executors: list[ProcessPoolExecutor | None] = [None] * uploads.decode_workers
        # The workers free to take a decode: one decode per worker at a time.
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for index in range(uploads.decode_workers):
            self._free.put_nowait(index)

    async def start(self) -> None:
        """Start the workers and wait until each answers (the first upload pays nothing)."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(self._pool(index), os.getpid)
                for index in range(len(self._executors))
            )
        )

    async def stop(self) -> None:
        """Shut the workers down, waiting for running decodes (each bounded by its CPU
        budget)."""
        executors = [executor for executor in self._executors if executor is not None]
        self._executors = [None] * len(self._executors)
        for executor in executors:
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for measuring what decodes cost)."""
        pids: list[int] = []
        for executor in self._executors:
            # No public accessor exists; the mapping is stable across 3.9-3.13.
            pids.extend(getattr(executor, "_processes", None) or {})
        return pids

    async def clean(self, source: IO[bytes], field: str) -> CleanImage:
        """``inspect_and_clean`` in a worker; the same refusals, plus 415 when it dies."""
        # The checks that need no decode first, here: a hostile file costs no copy and
        # no worker (milliseconds of C-speed scans, in a thread).
        checked = await asyncio.to_thread(check_before_decoding, source, self._uploads, field)
        path = _path_of(source)
        if path is not None:
            return await self._clean_file(path, checked, field)
        upload = await asyncio.to_thread(_named_copy, source)
        try:
            return await self._clean_file(upload.name, checked, field)
        finally:
            upload.close()

    async def strip(self, source: IO[bytes], field: str) -> Stripped | None:
        """The first half of ``clean``, for an upload that can be cleaned before it is
        decoded (a JPEG that needs no re-encoding): its metadata cut out, in a worker.
        None when it needs ``clean`` instead (which then runs the pre-decode checks
        again: milliseconds). The same refusals as ``clean`` for what the pre-decode
        checks and the header refuse; the decode itself is :meth:`prove`, which the
        caller must await before the result is used (it may store the result
        meanwhile, and remove it when the proof refuses).
        """
        checked = await asyncio.to_thread(check_before_decoding, source, self._uploads, field)
        path = _path_of(source)
        if path is None or checked[0] != "image/jpeg":
            # No name for a worker to open (``clean`` copies it first), or not a JPEG.
            return None
        out = tempfile.NamedTemporaryFile(prefix="clean-")  # noqa: SIM115 (CleanImage owns it)
        try:
            facts = await self._in_worker(
                field, image_worker.strip_in_worker, path, out.name, checked=checked
            )
        except BaseException:
            out.close()
            raise
        if facts is None:
            out.close()
            return None
        kind, extension, width, height, size = facts
        out.seek(0)
        return Stripped(CleanImage(out, size, kind, extension, width, height), path, checked)

    async def prove(self, stripped: Stripped, field: str) -> None:
        """Decode the upload ``stripped`` came from, in a worker: returns when it is a
        whole image; the refusals of ``clean`` otherwise."""
        await self._in_worker(
            field, image_worker.prove_in_worker, stripped.path, checked=stripped.checked
        )

    async def _clean_file(self, path: str, checked: tuple[str, int, int], field: str) -> CleanImage:
        out = tempfile.NamedTemporaryFile(prefix="clean-")  # noqa: SIM115 (CleanImage owns it)
        try:
            kind, extension, width, height, size = await self._in_worker(
                field, image_worker.clean_in_worker, path, out.name, checked=checked
            )
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return CleanImage(out, size, kind, extension, width, height)

    async def _in_worker(
        self, field: str, function: Callable[..., T], *args: object, checked: Checked
    ) -> T:
        """``function(*args, limits, cpu_seconds, field, checked)`` in the first free
        worker; a refusal it raises becomes the domain's error, a killed worker a 415
        (and a new pool), a memory error the 400 over the budget.

        The worker is free again when its call has ended, not when this caller stops
        waiting: a caller cancelled mid-decode (its deadline, the client gone) leaves
        the decode running in the worker, and the next upload handed that worker would
        queue behind it, and fail with it if it ran past its CPU budget."""
        index = await self._free.get()
        loop = asyncio.get_running_loop()
        executor = self._pool(index)
        call = partial(
            function, *args, self._limits, self._uploads.decode_cpu_seconds, field, checked
        )
        try:
            future = executor.submit(call)
        except BaseException as exc:
            self._free.put_nowait(index)
            if isinstance(exc, BrokenProcessPool):
                self._replace(index, executor)
                log.warning("upload.decode_killed", field=field)
                raise unsupported(self._uploads, field) from exc
            raise
        future.add_done_callback(partial(self._ended, loop, index, executor))
        try:
            return await asyncio.wrap_future(future)
        except ImageRefused as refused:
            raise domain_error(refused) from None
        except BrokenProcessPool as exc:
            log.warning("upload.decode_killed", field=field)
            raise unsupported(self._uploads, field) from exc
        except MemoryError as exc:
            log.warning("upload.decode_over_memory", field=field)
            raise over_budget(field) from exc

    def _ended(
        self,
        loop: asyncio.AbstractEventLoop,
        index: int,
        executor: ProcessPoolExecutor,
        future: Future[object],
    ) -> None:
        """Worker ``index``'s call ended (in the pool's thread): free it, on the loop."""
        broken = not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)

        def free() -> None:
            if broken:
                self._replace(index, executor)
            self._free.put_nowait(index)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(free)

    def _pool(self, index: int = 0) -> ProcessPoolExecutor:
        executor = self._executors[index]
        if executor is None:
            # Spawned, not forked from a forkserver: a forkserver is one more resident
            # interpreter with Pillow imported (24 MiB RSS) to save ~0.3 s when a killed
            # worker is replaced, which only a runaway decode causes. Spawning imports
            # only what the pickled initializer names, never this service's stack.
            context = multiprocessing.get_context("spawn")
            executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=image_worker.init_worker,
                initargs=(self._uploads.decode_memory_mib * _MIB,),
            )
            self._executors[index] = executor
        return executor

    def _replace(self, index: int, broken: ProcessPoolExecutor) -> None:
        """Drop worker ``index``'s broken pool; the next decode there starts a new one."""
        if self._executors[index] is broken:
            self._executors[index] = None
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
