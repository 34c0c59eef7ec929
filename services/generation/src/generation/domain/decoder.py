"""Decoding uploads in worker processes that have a memory and a CPU budget.

Decoding a hostile image can take seconds of CPU or a gigabyte of memory. In the
service's own process that would stall the event loop (every other request waits)
or get the pod killed. So ``inspect_and_clean`` runs in a budgeted
worker process (``Uploads.decode_workers`` of them, each a fresh interpreter that
imports only the lean ``image_worker``: Pillow and the checks, no grpc, pydantic or
SQLAlchemy). Each worker limits its address space to ``decode_memory_mib`` (an
allocation past it fails: the upload is refused with 400, "too large to process") and
each decode to ``decode_cpu_seconds`` of CPU (past it the kernel kills the worker with
SIGXCPU). Each worker is a child process of its own, taking one decode at a time over
a pipe: a worker that dies fails only the upload it was decoding (415); it is replaced,
later uploads are served by the new one.

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
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, TypeVar

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
        # What crosses to a worker with every call, as plain JSON values.
        self._limits = dataclasses.asdict(ImageLimits.of(uploads))
        # One process per worker (started when first needed, or by start()).
        self._workers: list[_Worker | None] = [None] * uploads.decode_workers
        # The workers free to take a decode: one decode per worker at a time.
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for index in range(uploads.decode_workers):
            self._free.put_nowait(index)
        # A worker's decode is bounded by its CPU budget: how long a stop waits for it.
        self._stop_seconds = float(uploads.decode_cpu_seconds + 5)
        # Calls running in a worker (kept whether or not their caller still waits) and
        # the stops of workers that died: both awaited by stop().
        self._running: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        """Start the workers and wait until each is ready (the first upload pays nothing)."""
        await asyncio.gather(*(self._worker(index) for index in range(len(self._workers))))

    async def stop(self) -> None:
        """Stop the workers, waiting for running decodes (each bounded by its CPU budget)."""
        workers = [worker for worker in self._workers if worker is not None]
        self._workers = [None] * len(self._workers)
        await asyncio.gather(*(worker.stop(self._stop_seconds) for worker in workers))
        await asyncio.gather(*self._running, return_exceptions=True)

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for measuring what decodes cost)."""
        return [worker.pid for worker in self._workers if worker is not None]

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
            facts = await self._in_worker(field, "strip", path, out.name, checked=checked)
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
        await self._in_worker(field, "prove", stripped.path, checked=stripped.checked)

    async def _clean_file(self, path: str, checked: tuple[str, int, int], field: str) -> CleanImage:
        out = tempfile.NamedTemporaryFile(prefix="clean-")  # noqa: SIM115 (CleanImage owns it)
        try:
            kind, extension, width, height, size = await self._in_worker(
                field, "clean", path, out.name, checked=checked
            )
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return CleanImage(out, size, kind, extension, width, height)

    async def _in_worker(self, field: str, call: str, *args: object, checked: Checked) -> Any:
        """Worker call ``call`` with ``(*args, limits, cpu_seconds, field, checked)`` in
        the first free worker; a refusal it answers becomes the domain's error, a
        worker that died a 415 (and a new worker), a memory error the 400 over the
        budget.

        The worker is free again when its call has ended, not when this caller stops
        waiting: a caller cancelled mid-decode (its deadline, the client gone) leaves
        the decode running in the worker, and the next upload handed that worker would
        queue behind it, and fail with it if it ran past its CPU budget."""
        index = await self._free.get()
        try:
            worker = await self._worker(index)
        except BaseException:
            self._free.put_nowait(index)
            raise
        request = {
            "call": call,
            "args": [*args, self._limits, self._uploads.decode_cpu_seconds, field, checked],
        }
        running = self._track(worker.call(request))
        running.add_done_callback(partial(self._ended, index, worker))
        answer = await asyncio.shield(running)
        if "ok" in answer:
            return answer["ok"]
        if "refused" in answer:
            status, message = answer["refused"]
            raise domain_error(ImageRefused(status, message))
        if "over_memory" in answer:
            log.warning("upload.decode_over_memory", field=field)
            raise over_budget(field)
        if "died" in answer:
            log.warning("upload.decode_killed", field=field, exitCode=answer["died"])
            raise unsupported(self._uploads, field)
        raise DecodeFailed(str(answer.get("error")))

    def _ended(self, index: int, worker: _Worker, running: asyncio.Future[Answer]) -> None:
        """Worker ``index``'s call ended: a worker that died is replaced on next use."""
        if running.cancelled() or running.exception() is not None or "died" in running.result():
            if self._workers[index] is worker:
                self._workers[index] = None
            self._track(worker.stop(self._stop_seconds))
        self._free.put_nowait(index)

    def _track(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        future = asyncio.ensure_future(work)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return future

    async def _worker(self, index: int) -> _Worker:
        worker = self._workers[index]
        if worker is None:
            worker = await _Worker.spawn(self._uploads.decode_memory_mib * _MIB)
            self._workers[index] = worker
        return worker


Answer = dict[str, Any]


class DecodeFailed(Exception):
    """A worker's call failed in a way that is no refusal (a bug, not the upload)."""


class _Worker:
    """One decode worker process (``image_worker.serve``), one call at a time over its
    stdin and stdout, a JSON line each way.

    Spawned, not forked from the service (a threaded gRPC process) nor from a
    forkserver (one more resident interpreter with Pillow imported, 24 MiB), and not
    through multiprocessing, whose resource tracker is one more resident interpreter
    (12 MiB) for semaphores these pipes do not need. It exits when its stdin closes,
    so it never outlives the service.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("a decode worker needs pipes on its stdin and stdout")
        self._process = process
        self._requests: asyncio.StreamWriter = process.stdin
        self._answers: asyncio.StreamReader = process.stdout
        self.pid = process.pid

    @classmethod
    async def spawn(cls, memory_bytes: int) -> _Worker:
        """A new worker, once it has imported what it needs and set its budget."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            image_worker.__name__,
            str(memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(process)
        try:
            ready = await worker._answers.readline()
            if not ready:
                raise DecodeFailed(f"the decode worker exited at start ({await process.wait()})")
        except BaseException:
            await worker.stop(0)
            raise
        return worker

    async def call(self, request: Answer) -> Answer:
        """The worker's answer line to ``request``; ``{"died": exit code}`` when it
        ended instead (killed over its CPU budget, or by anyone)."""
        try:
            self._requests.write(json.dumps(request).encode() + b"\n")
            await self._requests.drain()
            line = await self._answers.readline()
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        if not line:
            return {"died": await self._process.wait()}
        answer: Answer = json.loads(line)
        return answer

    async def stop(self, grace_seconds: float) -> None:
        """Close its stdin (it exits after the call it runs), then kill it if it has
        not exited within ``grace_seconds``."""
        if not self._requests.is_closing():
            self._requests.close()
        try:
            await asyncio.wait_for(self._process.wait(), grace_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


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
