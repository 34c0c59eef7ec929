"""The decode pool: real worker processes, their budgets, and recovery when one dies."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from generation.domain.decoder import ImageDecoder
from generation.domain.image_worker import init_worker, limit_cpu
from kit.errors import UnsupportedMediaType, ValidationError
from kit.runtime_config import Uploads
from tests.badinput import hostile

SMALL_JPEG = hostile.jpeg()


def gradient(width: int, height: int) -> Image.Image:
    return Image.linear_gradient("L").resize((width, height)).convert("RGB")


async def clean_size(decoder: ImageDecoder, data: bytes) -> tuple[str, int, int]:
    image = await decoder.clean(io.BytesIO(data), "input1")
    try:
        assert len(image.file.read()) == image.size > 0
        return image.mime_type, image.width, image.height
    finally:
        image.close()


async def test_a_decode_cleans_in_a_worker_not_in_this_process(decoder: ImageDecoder) -> None:
    [pid] = decoder.worker_pids()
    worker = psutil.Process(pid)
    data = hostile.encode(gradient(1600, 1200), "WEBP", quality=90)  # re-encoded: real work
    before, mine = sum(worker.cpu_times()[:2]), time.process_time()
    assert await clean_size(decoder, data) == ("image/webp", 1600, 1200)
    assert sum(worker.cpu_times()[:2]) > before
    assert time.process_time() - mine < 0.05  # this side only copies a file
    assert decoder.worker_pids() == [pid]


def _jpeg_with_a_damaged_exif_tag() -> bytes:
    """An EXIF tag whose data runs past the block's end (some cameras' files do):
    Pillow warns and skips it; the orientation tag after it still turns the image."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 0x010F, 2, 100, 38)  # Make: 100 bytes past the end
    tiff += struct.pack("<HHII", 0x0112, 3, 1, 6)  # orientation: a quarter turn
    tiff += struct.pack("<I", 0)
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 100, 50)).save(out, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return out.getvalue()


async def test_a_workers_warnings_are_json_lines(capfd: pytest.CaptureFixture[str]) -> None:
    """Python printed them as two plain-text lines into the service's log."""
    decoder = ImageDecoder(Uploads(decode_workers=1))  # started while capfd holds fd 2
    await decoder.start()
    try:
        cleaned = await decoder.clean(io.BytesIO(_jpeg_with_a_damaged_exif_tag()), "input1")
        assert (cleaned.width, cleaned.height) == (48, 64)  # accepted, turned upright
        cleaned.close()
    finally:
        await decoder.stop()  # the worker's stderr is flushed by then

    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert record["event"] == "decoder.warning", record
        assert record["category"] == "UserWarning"


def _mapped_files(pid: int) -> set[str]:
    return {Path(region.path).name for region in psutil.Process(pid).memory_maps()}


async def test_a_worker_imports_pillow_but_not_the_services_stack(decoder: ImageDecoder) -> None:
    # Every module a worker holds is memory for its life (grpc alone ~29 MB). The
    # compiled parts of each library show in the worker's memory map.
    [pid] = decoder.worker_pids()
    mapped = " ".join(_mapped_files(pid))
    assert "_imaging." in mapped  # Pillow
    for library in ("cygrpc", "_pydantic_core", "_upb", "asyncpg", "sqlalchemy", "_cffi"):
        assert library not in mapped, library
    # ... and the probe does see them in the service (this process).
    assert "cygrpc" in " ".join(_mapped_files(os.getpid()))


async def test_a_worker_is_spawned_by_the_service_with_no_forkserver_resident(
    decoder: ImageDecoder,
) -> None:
    # A forkserver would be one more interpreter with Pillow imported, resident for the
    # life of the pool (24 MiB of RSS) and the workers' parent instead of the service.
    [pid] = decoder.worker_pids()
    assert psutil.Process(pid).ppid() == os.getpid()


_CHILDREN_PROBE = """
import asyncio, psutil
from generation.domain.decoder import ImageDecoder
from kit.runtime_config import Uploads

async def main():
    pool = ImageDecoder(Uploads(decode_workers=2))
    await pool.start()
    children = psutil.Process().children(recursive=True)
    print(sorted(pool.worker_pids()) == sorted(child.pid for child in children))
    for child in children:
        print(" ".join(child.cmdline()))
    await pool.stop()

asyncio.run(main())
"""


async def test_the_workers_are_the_only_processes_a_decoder_starts() -> None:
    # multiprocessing would also start its resource tracker: one more resident
    # interpreter (12 MiB of RSS) for semaphores the workers' pipes do not need. A
    # fresh interpreter, since this one may have started a tracker for other reasons.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _CHILDREN_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    verdict, *commands = result.stdout.splitlines()
    assert verdict == "True", result.stdout
    assert len(commands) == 2
    assert all("generation.domain.image_worker" in command for command in commands)


_SERVICE_PROBE = """
import asyncio, sys, time
from generation.domain.decoder import ImageDecoder
from kit.runtime_config import Uploads

async def main():
    pool = ImageDecoder(Uploads(decode_workers=1))
    await pool.start()
    print(pool.worker_pids()[0], flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_worker_exits_when_its_service_is_killed() -> None:
    # No stop, no signal handler: the service dies at once (SIGKILL, the OOM killer),
    # its end of the worker's pipe closes, and the worker exits instead of lingering.
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVICE_PROBE, stdout=asyncio.subprocess.PIPE
    )
    assert service.stdout is not None
    worker = psutil.Process(int(await asyncio.wait_for(service.stdout.readline(), 30)))
    service.kill()
    await service.wait()
    gone, alive = await asyncio.to_thread(psutil.wait_procs, [worker], 10)
    assert [process.pid for process in gone] == [worker.pid], alive


async def test_a_stopped_decoder_leaves_no_worker_behind(decoder: ImageDecoder) -> None:
    [pid] = decoder.worker_pids()
    await decoder.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_over_the_memory_budget_is_a_400_and_the_worker_lives_on(
    small_decoder: ImageDecoder,
) -> None:
    decoder = small_decoder
    [pid] = decoder.worker_pids()
    # A 25 MP JPEG (the cap) that must be turned upright is decoded whole for its
    # re-encode: 100 MB (Pillow keeps 4 bytes a pixel), over the budget.
    upright_later = Image.Exif()
    upright_later[0x0112] = 6
    big = hostile.encode(gradient(5000, 5000), "JPEG", exif=upright_later)
    with pytest.raises(ValidationError) as caught:
        await clean_size(decoder, big)
    assert caught.value.reason == "VALIDATION_ERROR"
    assert "too large to process" in caught.value.message
    # The allocation failed in the worker, which survived it and serves the next upload.
    assert decoder.worker_pids() == [pid]
    assert await clean_size(decoder, SMALL_JPEG) == ("image/jpeg", 64, 48)


async def test_a_killed_worker_is_a_415_and_the_pool_is_replaced(decoder: ImageDecoder) -> None:
    [pid] = decoder.worker_pids()
    worker = psutil.Process(pid)
    # A re-encode long enough to be killed in the middle (a third of a second of CPU).
    blocks = hostile.noise(1250, 1250).resize((5000, 5000))
    slow = hostile.encode(blocks, "JPEG", quality=60, exif=hostile.turned())
    assert len(slow) < Uploads().max_bytes
    start = sum(worker.cpu_times()[:2])
    task = asyncio.create_task(clean_size(decoder, slow))
    deadline = time.monotonic() + 30
    while sum(worker.cpu_times()[:2]) - start < 0.05:  # the decode has started
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    with pytest.raises(UnsupportedMediaType) as caught:
        await task
    assert caught.value.reason == "UNSUPPORTED_MEDIA_TYPE"
    assert await clean_size(decoder, SMALL_JPEG) == ("image/jpeg", 64, 48)
    assert decoder.worker_pids() not in ([], [pid])


async def _decode_started(worker: psutil.Process, task: asyncio.Task[object]) -> None:
    start = sum(worker.cpu_times()[:2])
    deadline = time.monotonic() + 30
    while sum(worker.cpu_times()[:2]) - start < 0.05:  # the decode has started
        assert time.monotonic() < deadline
        assert not task.done()
        await asyncio.sleep(0.01)


async def test_a_killed_worker_fails_only_the_upload_it_was_decoding(
    two_worker_decoder: ImageDecoder,
) -> None:
    # Two workers, two users' uploads decoding at once; one worker dies (its decode ran
    # away). In one pool of two workers that broke the pool, and the other user's
    # upload failed with 415 too.
    slow = hostile.encode(gradient(3000, 2000), "WEBP", quality=90)
    decoder = two_worker_decoder
    uploads = [asyncio.create_task(clean_size(decoder, slow)) for _ in range(2)]
    deadline = time.monotonic() + 30
    while len(decoder.worker_pids()) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    pids = decoder.worker_pids()
    for pid, upload in zip(pids, uploads, strict=True):
        await _decode_started(psutil.Process(pid), upload)
    psutil.Process(pids[0]).send_signal(signal.SIGKILL)
    outcomes = await asyncio.gather(*uploads, return_exceptions=True)
    assert sum(isinstance(o, UnsupportedMediaType) for o in outcomes) == 1, outcomes
    assert ("image/webp", 3000, 2000) in outcomes
    assert pids[1] in decoder.worker_pids()
    assert await clean_size(decoder, SMALL_JPEG) == ("image/jpeg", 64, 48)


async def test_a_worker_left_decoding_by_a_cancelled_upload_is_not_handed_on(
    decoder: ImageDecoder,
) -> None:
    """The submission that waited for a decode is cancelled (its deadline, its client
    gone) while the worker goes on decoding. The next upload waits for that worker to
    be done; when the abandoned decode runs away and its worker is killed, the next
    upload gets a new worker, not the 415 of a decode that was not its own."""
    [pid] = decoder.worker_pids()
    # A re-encode of several seconds of CPU: still running when the worker is killed.
    slow = hostile.encode(gradient(6000, 4000), "WEBP", quality=90)
    abandoned = asyncio.create_task(clean_size(decoder, slow))
    await _decode_started(psutil.Process(pid), abandoned)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    following = asyncio.create_task(clean_size(decoder, SMALL_JPEG))
    await asyncio.sleep(0.2)  # queued behind the abandoned decode, or waiting for a worker
    assert not following.done()
    psutil.Process(pid).send_signal(signal.SIGKILL)  # the abandoned decode ran away
    assert await asyncio.wait_for(following, 30) == ("image/jpeg", 64, 48)
    assert decoder.worker_pids() not in ([], [pid])


def _burn_after_limit(seconds: int) -> None:
    init_worker(1 << 30)  # as a worker starts: also no core file when killed
    limit_cpu(seconds)
    while True:
        pass


def test_the_cpu_budget_ends_a_runaway_decode_with_sigxcpu() -> None:
    process = multiprocessing.get_context("forkserver").Process(target=_burn_after_limit, args=(1,))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == -signal.SIGXCPU


_UNDER_LOWER_HARD_LIMITS = """
import resource
resource.setrlimit(resource.RLIMIT_CPU, (3000, 3000))
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
from generation.domain.image_worker import init_worker, limit_cpu
init_worker(16 << 30)
limit_cpu(5)
print(resource.getrlimit(resource.RLIMIT_AS)[1], resource.getrlimit(resource.RLIMIT_CPU)[1])
"""


def test_a_worker_keeps_hard_limits_the_environment_set_lower() -> None:
    """A container's ulimit may be below the budgets: raising a hard limit is refused,
    which would fail every decode. The worker keeps the lower limit instead."""
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_LOWER_HARD_LIMITS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(8 << 30), "3000"]


@pytest.mark.parametrize(
    "data",
    [hostile.jpeg_with_fill(9_000_000), hostile.png_with_chunks(100_000)],
    ids=["jpeg_fill", "png_chunks"],
)
async def test_a_file_refused_by_the_checks_never_reaches_a_worker(data: bytes) -> None:
    decoder = ImageDecoder(Uploads(decode_workers=1))  # not started: no pool yet
    try:
        with pytest.raises(UnsupportedMediaType):
            await decoder.clean(io.BytesIO(data), "input1")
        assert decoder.worker_pids() == []  # no pool was ever needed
    finally:
        await decoder.stop()
