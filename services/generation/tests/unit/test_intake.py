"""Receiving the SubmitGeneration stream: the contract's rules, spools and the fingerprint."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import IO

import pytest

from generation.api import intake
from generation.api.intake import EarlyRefusal, received_submission
from generation.domain.submit_request import SubmitCommand, fingerprint
from interior.generation.v1 import generation_pb2 as pb
from kit.errors import (
    DomainError,
    PayloadTooLarge,
    TooManyInflight,
    UnsupportedMediaType,
    ValidationError,
)
from kit.runtime_config import Uploads
from testkit.recording import record_results
from tests.badinput import hostile

UPLOADS = Uploads()
OWNER = str(uuid.uuid4())
ROOM = bytes(range(256)) * 9
REFERENCE = b"reference-image" * 40


def request(
    *inputs: tuple[str, int], owner_id: str = OWNER, key: str = ""
) -> pb.SubmitGenerationPart:
    return pb.SubmitGenerationPart(
        request=pb.SubmitGenerationRequest(
            owner_id=owner_id,
            idempotency_key=key,
            mode="compose",
            prompt="Warm oak",
            style="japandi",
            inputs=[pb.DeclaredInput(field=name, size_bytes=size) for name, size in inputs],
        )
    )


def chunks(index: int, data: bytes, size: int) -> list[pb.SubmitGenerationPart]:
    return [
        pb.SubmitGenerationPart(chunk=pb.InputChunk(input_index=index, data=data[i : i + size]))
        for i in range(0, len(data), size)
    ]


def both_inputs() -> list[pb.SubmitGenerationPart]:
    return [
        request(("input1", len(ROOM)), ("input2", len(REFERENCE))),
        *chunks(0, ROOM, 1000),
        *chunks(1, REFERENCE, 7),
    ]


class Stream:
    """The parts as the servicer sees them; counts how many were read."""

    def __init__(self, parts: Sequence[pb.SubmitGenerationPart]) -> None:
        self.parts = list(parts)
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[pb.SubmitGenerationPart]:
        for part in self.parts:
            self.read += 1
            yield part


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[IO[bytes]]:
    return record_results(monkeypatch, intake, "spooled_file")


async def receive(parts: Sequence[pb.SubmitGenerationPart]) -> SubmitCommand:
    async with received_submission(Stream(parts).__aiter__(), UPLOADS) as command:
        return command


async def test_chunks_are_reassembled_in_spools_that_close_with_the_block(
    spools: list[IO[bytes]],
) -> None:
    async with received_submission(Stream(both_inputs()).__aiter__(), UPLOADS) as command:
        assert [(item.field, item.size) for item in command.inputs] == [
            ("input1", len(ROOM)),
            ("input2", len(REFERENCE)),
        ]
        assert [item.file.read() for item in command.inputs] == [ROOM, REFERENCE]
        assert [item.sha256 for item in command.inputs] == [
            hashlib.sha256(ROOM).digest(),
            hashlib.sha256(REFERENCE).digest(),
        ]
        assert (command.mode, command.prompt, command.style) == ("compose", "Warm oak", "japandi")
        assert not any(spool.closed for spool in spools)
    assert len(spools) == 2
    assert all(spool.closed for spool in spools)


async def test_inputs_are_named_files_a_decode_worker_can_open_without_a_copy() -> None:
    async with received_submission(Stream(both_inputs()).__aiter__(), UPLOADS) as command:
        for item, expected in zip(command.inputs, (ROOM, REFERENCE), strict=True):
            item.file.flush()
            with open(item.file.name, "rb") as reopened:  # as the worker opens it
                assert reopened.read() == expected
            assert item.file.tell() == 0


async def test_the_fingerprint_is_the_one_of_whole_bytes() -> None:
    """Rows stored before streaming (whole-bytes hashing) must still replay."""
    command = await receive(both_inputs())
    before = hashlib.sha256()
    for part in ("compose", "Warm oak", "", "japandi"):
        before.update(part.encode() + b"\x00")
    for data in (ROOM, REFERENCE):
        before.update(hashlib.sha256(data).digest())
    assert fingerprint(command) == before.hexdigest()


async def test_spools_close_when_the_submission_fails(spools: list[IO[bytes]]) -> None:
    with pytest.raises(RuntimeError):
        async with received_submission(Stream(both_inputs()).__aiter__(), UPLOADS):
            raise RuntimeError("the submission failed")
    assert len(spools) == 2
    assert all(spool.closed for spool in spools)


async def test_a_request_without_inputs_is_one_part() -> None:
    command = await receive([request()])
    assert command.inputs == ()


ROOM_ONLY = request(("input1", len(ROOM)))
BAD_STREAMS = {
    "empty stream": ([], "The stream must start with the request, sent once."),
    "chunk first": (chunks(0, ROOM, 500), "The stream must start with the request, sent once."),
    "request twice": (
        [ROOM_ONLY, ROOM_ONLY, *chunks(0, ROOM, 500)],
        "The stream must start with the request, sent once.",
    ),
    "undeclared input": (
        [ROOM_ONLY, *chunks(0, ROOM, 500), *chunks(1, b"more", 2)],
        "Chunks must follow the declared inputs, in order.",
    ),
    "second input before the first is complete": (
        [
            request(("input1", len(ROOM)), ("input2", 4)),
            *chunks(0, ROOM[:100], 50),
            *chunks(1, b"more", 2),
        ],
        "Chunks must follow the declared inputs, in order.",
    ),
    "more bytes than declared": (
        [request(("input1", 10)), *chunks(0, b"x" * 11, 11)],
        "input1 has more bytes than declared.",
    ),
    "fewer bytes than declared": (
        [ROOM_ONLY, *chunks(0, ROOM[:-1], 500)],
        "The stream ended before every declared input was complete.",
    ),
    "empty chunk": (
        [ROOM_ONLY, pb.SubmitGenerationPart(chunk=pb.InputChunk(input_index=0))],
        "A chunk must not be empty.",
    ),
    "empty input": ([request(("input1", 0))], "input1 is empty."),
    "unnamed input": ([request(("", -1))], "input1 is empty."),
    "too many inputs": (
        [request(*[(f"input{i}", 1) for i in range(1, 10)])],
        "At most 8 inputs may be declared.",
    ),
    "owner is not a UUID": ([request(owner_id="someone")], "owner_id must be a UUID."),
    # uuid.UUID reads Arabic-Indic digits as ASCII ones: another owner's id (kit.ids).
    "owner in other digits": (
        [request(owner_id=str(uuid.UUID(int=1)).translate({48: "\u0660", 49: "\u0661"}))],
        "owner_id must be a UUID.",
    ),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
async def test_streams_breaking_the_rules_are_validation_errors(
    case: str, spools: list[IO[bytes]]
) -> None:
    parts, message = BAD_STREAMS[case]
    with pytest.raises(ValidationError) as caught:
        await receive(parts)
    assert type(caught.value) is ValidationError
    assert (caught.value.code, caught.value.reason) == ("VALIDATION_ERROR", "VALIDATION_ERROR")
    assert caught.value.message == message
    assert all(spool.closed for spool in spools)


async def test_an_input_declared_over_the_limit_is_refused_before_any_chunk_is_stored(
    spools: list[IO[bytes]],
) -> None:
    size = UPLOADS.max_bytes + 1
    parts = [request(("input1", size)), *chunks(0, b"z" * size, 256 * 1024)]
    stream = Stream(parts)
    with pytest.raises(PayloadTooLarge) as caught:
        async with received_submission(stream.__aiter__(), UPLOADS):
            pass
    assert caught.value.reason == "PAYLOAD_TOO_LARGE"
    assert caught.value.message == "input1 is larger than 10 MB"
    # Refused at the declaration; the rest is read and dropped, so the sender gets
    # the refusal itself rather than a transport error for writing to a closed call.
    assert stream.read == len(parts)
    assert spools == []


async def test_a_refused_sender_is_not_waited_for_past_the_drain_budget(
    spools: list[IO[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "MAX_DECLARED_INPUTS", 1)  # budget: one upload's bytes
    size = UPLOADS.max_bytes * 3
    parts = [request(("input1", size)), *chunks(0, b"z" * size, 1024 * 1024)]
    stream = Stream(parts)
    with pytest.raises(PayloadTooLarge):
        async with received_submission(stream.__aiter__(), UPLOADS):
            pass
    assert stream.read < len(parts) // 2
    assert spools == []


class Early:
    """The servicer's side of an early refusal, recorded: what was asked, and when."""

    def __init__(self, stream: Stream, answer: DomainError | None = None) -> None:
        self.stream = stream
        self.answer_with = answer
        self.asked: list[tuple[SubmitCommand, Sequence[str], DomainError]] = []
        # How many parts the sender had written when it was told to stop.
        self.stopped_at: list[int] = []

    async def answer(
        self,
        command: SubmitCommand,
        inputs: Sequence[str],
        refusal: DomainError,
        decided: Callable[[], Awaitable[None]],
    ) -> DomainError | None:
        self.asked.append((command, inputs, refusal))
        if self.answer_with is None:
            return None
        await decided()
        return self.answer_with

    async def stop_sending(self) -> None:
        self.stopped_at.append(self.stream.read)

    def refusal(self) -> EarlyRefusal:
        return EarlyRefusal(self.answer, self.stop_sending)


def fill_jpeg_stream(size: int = 1024 * 1024) -> list[pb.SubmitGenerationPart]:
    data = hostile.jpeg_with_fill(size)
    return [request(("input1", len(data))), *chunks(0, data, 64 * 1024)]


async def test_an_input_its_first_bytes_refuse_is_answered_before_the_rest_is_stored(
    spools: list[IO[bytes]],
) -> None:
    parts = fill_jpeg_stream()
    stream = Stream(parts)
    early = Early(stream, answer=TooManyInflight())  # the answer's order is the domain's
    with pytest.raises(TooManyInflight):
        async with received_submission(stream.__aiter__(), UPLOADS, early.refusal()):
            pass
    ((command, inputs, refusal),) = early.asked
    assert (command.owner_id, command.inputs, inputs) == (uuid.UUID(OWNER), (), ["input1"])
    assert isinstance(refusal, UnsupportedMediaType)
    # Told to stop once, after the request and the first 64 KiB; the rest is drained
    # (not stored), so the status still follows the sender's end of stream.
    assert early.stopped_at == [2]
    assert stream.read == len(parts)
    assert spools[0].closed


async def test_an_early_refusal_that_needs_the_whole_request_receives_it(
    spools: list[IO[bytes]],
) -> None:
    parts = fill_jpeg_stream()
    stream = Stream(parts)
    early = Early(stream, answer=None)  # e.g. its idempotency key names a job
    async with received_submission(stream.__aiter__(), UPLOADS, early.refusal()) as command:
        assert command.inputs[0].size == sum(len(part.chunk.data) for part in parts[1:])
    assert len(early.asked) == 1
    assert early.stopped_at == []


async def test_a_later_upload_is_not_answered_early(spools: list[IO[bytes]]) -> None:
    # input1 may still be refused by its full check (a PNG over the pixel cap is left to
    # its 400) or its decode: the whole submission answers input1's refusal first.
    hostile_input = hostile.jpeg_with_fill(256 * 1024)
    stream = Stream(
        [
            request(("input1", len(ROOM)), ("input2", len(hostile_input))),
            *chunks(0, ROOM, 1024),
            *chunks(1, hostile_input, 64 * 1024),
        ]
    )
    early = Early(stream, answer=TooManyInflight())
    async with received_submission(stream.__aiter__(), UPLOADS, early.refusal()) as command:
        assert [item.size for item in command.inputs] == [len(ROOM), len(hostile_input)]
    assert (early.asked, early.stopped_at) == ([], [])


async def test_a_failure_while_answering_early_still_drains_the_sender(
    spools: list[IO[bytes]],
) -> None:
    parts = fill_jpeg_stream()
    stream = Stream(parts)

    async def database_down(*args: object) -> DomainError | None:
        raise ConnectionResetError("the database went away")

    early = EarlyRefusal(database_down, Early(stream).stop_sending)
    with pytest.raises(ConnectionResetError):
        async with received_submission(stream.__aiter__(), UPLOADS, early):
            pass
    # Read to its end before the status: no write of the sender races it.
    assert stream.read == len(parts)
    assert spools[0].closed


async def test_a_photo_is_not_refused_early() -> None:
    data = hostile.jpeg(1200, 900)
    stream = Stream([request(("input1", len(data))), *chunks(0, data, 64 * 1024)])
    early = Early(stream, answer=TooManyInflight())
    async with received_submission(stream.__aiter__(), UPLOADS, early.refusal()) as command:
        assert command.inputs[0].sha256 == hashlib.sha256(data).digest()
    assert (early.asked, early.stopped_at) == ([], [])


async def test_any_refusal_tells_the_sender_to_stop_once(spools: list[IO[bytes]]) -> None:
    size = UPLOADS.max_bytes + 1
    stream = Stream([request(("input1", size)), *chunks(0, b"z" * size, 256 * 1024)])
    early = Early(stream)
    with pytest.raises(PayloadTooLarge):
        async with received_submission(stream.__aiter__(), UPLOADS, early.refusal()):
            pass
    assert early.stopped_at == [1]
