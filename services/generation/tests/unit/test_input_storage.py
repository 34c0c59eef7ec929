"""Storing a submission's uploads: a JPEG that keeps its pixels is stored while a decode
worker proves it whole, and a refusal of the proof removes what was stored."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import IO, cast

import pytest

from generation.domain.context import GenerationContext
from generation.domain.decoder import ImageDecoder, Stripped
from generation.domain.input_storage import upload_inputs, with_source
from generation.domain.jobs import VariantRef
from generation.domain.refine import SourceRef
from generation.domain.states import JobStatus
from generation.domain.submit_request import RawInput, SubmitCommand
from kit.errors import UnsupportedMediaType, UpstreamError
from kit.storage import StorageError
from services.generation.tests.rpc.fakes import make_job
from tests.badinput import hostile

BUCKET = "private"
OWNER = uuid.uuid4()


class Storage:
    """Records PUTs and removals; ``fail`` makes every PUT fail."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.removed: list[str] = []
        self.put_started = asyncio.Event()
        self.fail = False

    async def put_file(
        self, bucket: str, key: str, fileobj: IO[bytes], length: int, content_type: str
    ) -> None:
        self.put_started.set()
        await asyncio.sleep(0)
        if self.fail:
            raise StorageError("down")
        self.stored[key] = fileobj.read(length)

    async def remove(self, bucket: str, keys: list[str]) -> None:
        self.removed.extend(keys)
        for key in keys:
            self.stored.pop(key, None)


@pytest.fixture
def upload() -> Iterator[IO[bytes]]:
    with tempfile.NamedTemporaryFile(prefix="upload-") as file:
        file.write(hostile.jpeg(640, 480))
        file.flush()
        yield file


def rewrite_as_undecodable(upload: IO[bytes]) -> None:
    """Replace the upload with a JPEG whole in structure whose Huffman table libjpeg
    cannot decode (the strip passes, the proof refuses)."""
    data = bytearray(hostile.jpeg(640, 480))
    data[data.index(b"\xff\xc4") + 5] = 0xFF
    upload.seek(0)
    upload.truncate()
    upload.write(bytes(data))
    upload.flush()


def context(decoder: ImageDecoder, storage: Storage) -> GenerationContext:
    return cast(
        "GenerationContext",
        SimpleNamespace(decoder=decoder, storage=storage, private_bucket=BUCKET),
    )


def command(*files: IO[bytes]) -> SubmitCommand:
    inputs = tuple(
        RawInput(f"input{index + 1}", file, file.seek(0, 2), b"")
        for index, file in enumerate(files)
    )
    return SubmitCommand(OWNER, None, "redesign", None, None, None, inputs, None)


def gate_proof_on_the_put(
    decoder: ImageDecoder, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proof starts only once the PUT has: a submission that stored after proving
    would wait here until the timeout."""
    prove = decoder.prove

    async def gated(stripped: Stripped, field: str) -> None:
        await asyncio.wait_for(storage.put_started.wait(), timeout=10)
        await prove(stripped, field)

    monkeypatch.setattr(decoder, "prove", gated)


async def test_a_jpeg_is_stored_while_it_is_proven(
    decoder: ImageDecoder, upload: IO[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage()
    gate_proof_on_the_put(decoder, storage, monkeypatch)
    keys = await upload_inputs(context(decoder, storage), command(upload))
    assert len(keys) == 1
    assert keys[0].startswith(f"{OWNER}/inputs/")
    assert keys[0].endswith(".jpg")
    assert storage.stored[keys[0]].startswith(b"\xff\xd8")
    assert storage.removed == []


async def test_a_refused_proof_removes_what_was_stored_meanwhile(
    decoder: ImageDecoder, upload: IO[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage()
    gate_proof_on_the_put(decoder, storage, monkeypatch)
    first = tempfile.NamedTemporaryFile(prefix="upload-")  # noqa: SIM115 (closed below)
    with first:
        first.write(hostile.jpeg(64, 48))
        first.flush()
        rewrite_as_undecodable(upload)  # input2
        with pytest.raises(UnsupportedMediaType, match="input2"):
            await upload_inputs(context(decoder, storage), command(first, upload))
    # input1 (stored and proven) and input2 (stored while being proven) are both gone.
    assert len(storage.removed) == 2
    assert storage.stored == {}


async def test_a_refusal_wins_over_a_storage_failure_and_nothing_stays(
    decoder: ImageDecoder, upload: IO[bytes]
) -> None:
    storage = Storage()
    storage.fail = True
    assert await upload_inputs(context(decoder, Storage()), command(upload))
    with pytest.raises(UpstreamError):
        await upload_inputs(context(decoder, storage), command(upload))
    rewrite_as_undecodable(upload)
    with pytest.raises(UnsupportedMediaType):
        await upload_inputs(context(decoder, storage), command(upload))
    assert storage.stored == {}


class ThreadedStorage(Storage):
    """PUTs in a thread, as the S3 client's are: each held until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writing = threading.Event()
        self.finished = threading.Event()

    async def put_file(
        self, bucket: str, key: str, fileobj: IO[bytes], length: int, content_type: str
    ) -> None:
        self.put_started.set()
        data = fileobj.read(length)

        def put() -> None:
            self.writing.set()
            self.release.wait(10)
            self.stored[key] = data
            self.finished.set()

        await asyncio.to_thread(put)


async def test_a_submission_cancelled_during_its_put_leaves_nothing(
    decoder: ImageDecoder, upload: IO[bytes]
) -> None:
    """The cancellation does not stop the PUT's thread: what it stores afterwards goes."""
    storage = ThreadedStorage()
    task = asyncio.create_task(upload_inputs(context(decoder, storage), command(upload)))
    assert await asyncio.to_thread(storage.writing.wait, 10)  # the thread is writing
    task.cancel()
    await asyncio.sleep(0.05)
    storage.release.set()  # the PUT completes after the cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(storage.finished.wait, 10)
    await asyncio.sleep(0.05)
    assert storage.stored == {}
    assert len(storage.removed) == 1


class LostAnswerStorage(Storage):
    """Stores the object, then fails as if the answer had been lost (a read timeout
    after the server wrote it)."""

    async def put_file(
        self, bucket: str, key: str, fileobj: IO[bytes], length: int, content_type: str
    ) -> None:
        self.stored[key] = fileobj.read(length)
        raise StorageError("read timed out")


async def test_a_put_whose_answer_was_lost_leaves_nothing(
    decoder: ImageDecoder, upload: IO[bytes]
) -> None:
    storage = LostAnswerStorage()
    with pytest.raises(UpstreamError):
        await upload_inputs(context(decoder, storage), command(upload))
    assert storage.stored == {}


async def test_a_cancellation_just_after_the_store_and_proof_ended_leaves_nothing(
    decoder: ImageDecoder, upload: IO[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands in the loop turn in which both ended: the key was stored and
    not yet handed back to the submission (which removes what it has on a failure)."""
    storage = Storage()
    prove = decoder.prove
    task: asyncio.Task[list[str]] | None = None

    async def proof_that_ends_with_a_cancel(stripped: Stripped, field: str) -> None:
        await asyncio.wait_for(storage.put_started.wait(), timeout=10)
        await prove(stripped, field)
        await asyncio.sleep(0.01)  # the PUT has ended too
        assert task is not None
        asyncio.get_running_loop().call_soon(task.cancel)

    monkeypatch.setattr(decoder, "prove", proof_that_ends_with_a_cancel)
    task = asyncio.create_task(upload_inputs(context(decoder, storage), command(upload)))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert storage.stored == {}


async def test_a_refine_copy_whose_answer_was_lost_leaves_nothing() -> None:
    """The source variant copied to the owner's inputs, then the copy's answer lost: the
    copy is removed with the uploads (the submission failed with UpstreamError)."""
    source = uuid.uuid4()
    view = dataclasses.replace(
        make_job(OWNER, JobStatus.SUCCEEDED, id=source).view(),
        variants=(VariantRef(0, f"renders/{uuid.uuid4()}/0.jpg"),),
    )
    storage = Storage()

    @contextlib.asynccontextmanager
    async def reads() -> AsyncIterator[SimpleNamespace]:
        async def view_of(owner_id: uuid.UUID, job_id: uuid.UUID) -> object:
            return view

        yield SimpleNamespace(reads=SimpleNamespace(view=view_of))

    ctx = SimpleNamespace(
        storage=storage,
        private_bucket=BUCKET,
        public_bucket="public",
        reads=reads,
        config=SimpleNamespace(replicate=SimpleNamespace(output_max_bytes=1024)),
    )

    async def copy(source_ref: tuple[str, str], dest: tuple[str, str], *rest: object) -> bool:
        storage.stored[dest[1]] = b"copied"
        raise StorageError("read timed out")

    storage.copy = copy  # type: ignore[attr-defined]
    refine = SubmitCommand(
        OWNER, None, "redesign", None, None, None, (), None, source=SourceRef(source, 0)
    )
    with pytest.raises(UpstreamError):
        await with_source(cast("GenerationContext", ctx), refine, [])
    assert storage.stored == {}
