"""Streaming request bodies: multipart/form-data submissions and small JSON bodies.

Multipart is parsed as a stream straight from the socket (python-multipart's
callback parser). Each file part goes into a spooled temporary file (in memory
up to ``SPOOL_MEMORY_BYTES``, on disk beyond), so memory per upload stays small
whatever the file's size; the moment a part grows past the upload limit reading
stops and the request is refused with 413. Field names and text sizes are
checked while parsing, so a bad request costs as little as possible. Only the
seven known fields are accepted, each at most once, which also caps the number
of parts. A body slower than a minimum rate (``MinRate``, see edge_api.pace) is
cut off with RequestTimeout (408). The spools belong to the returned form
(``close()`` it); when reading fails in any way (a broken rule, a disconnect, a
timeout) they are closed here.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import pydantic
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from edge_api.errors import validation_message
from edge_api.pace import UploadPace
from kit.errors import PayloadTooLarge, RequestTimeout, ValidationError

FILE_FIELDS = ("input1", "input2")
# Text fields and the most bytes each part may bring while it streams: a guard against a
# field that never ends, above each field's own limit (SubmissionFields checks those, in
# characters), so never the limit a client meets.
TEXT_FIELD_LIMITS = {
    "mode": 64,
    "prompt": 8 * 1024,
    "roomType": 128,
    "style": 128,
    "idempotencyKey": 256,
    # Refine: an earlier job of the caller's and which of its variants becomes input1.
    "sourceGenerationId": 64,
    "sourceVariantIdx": 8,
}
MAX_BOUNDARY_CHARS = 200
# A JSON body only carries short text fields.
MAX_JSON_BYTES = 64 * 1024
# Files up to this size stay in memory; larger ones are spooled to the temp directory.
SPOOL_MEMORY_BYTES = 1024 * 1024
# The piece size in which a spooled file is read back (one gRPC message each).
READ_CHUNK_BYTES = 256 * 1024
_MALFORMED = "The multipart body is malformed."
# A part's header line (a file name is most of a Content-Disposition) is refused past
# this with a message saying so; the parser's own limit, past which a body is only
# "malformed", is set well above it.
MAX_PART_HEADER_BYTES = 4096
_PARSER_MAX_HEADER_BYTES = 64 * 1024
_HEADER_TOO_LONG = (
    f"A part's header is longer than {MAX_PART_HEADER_BYTES} bytes: shorten the file name."
)

M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class MinRate:
    """The slowest acceptable body: bytes per second, averaged over a sliding window."""

    bytes_per_second: int
    window_seconds: float


@dataclass(frozen=True)
class UploadedFile:
    """One received file part: a spooled temporary file and its size in bytes."""

    file: IO[bytes]
    size: int

    def chunks(self, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
        """The file's bytes from the start, ``chunk_bytes`` at a time."""
        self.file.seek(0)
        while piece := self.file.read(chunk_bytes):
            yield piece


@dataclass
class MultipartForm:
    """The parsed submission form: text fields and files (by field name)."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    # Every spool opened for this form, complete or not: all are closed by close().
    spools: list[IO[bytes]] = field(default_factory=list)

    def close(self) -> None:
        """Close (and so delete) every temporary file of the form; idempotent."""
        for spool in self.spools:
            spool.close()


@dataclass
class _Part:
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    limit: int = 0
    size: int = 0
    # Text fields are small and kept in memory; files go to a spool.
    text: bytearray = field(default_factory=bytearray)
    spool: IO[bytes] | None = None


def _new_spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, mode="w+b")


class _FormCollector:
    """The parser's callbacks: collects parts and enforces every limit as it goes."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.form = MultipartForm()
        self.finished = False
        self._part = _Part()

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.header_name += data[start:end]
        self._check_header_length()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]
        self._check_header_length()

    def _check_header_length(self) -> None:
        part = self._part
        if len(part.header_name) + len(part.header_value) > MAX_PART_HEADER_BYTES:
            raise ValidationError(_HEADER_TOO_LONG)

    def on_header_end(self) -> None:
        part = self._part
        name = part.header_name.decode("latin-1").strip().lower()
        part.headers[name] = bytes(part.header_value).strip()
        part.header_name, part.header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        part = self._part
        disposition, options = parse_options_header(part.headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise ValidationError(_MALFORMED)
        name = options[b"name"].decode("latin-1")
        if name in self.form.fields or name in self.form.files:
            raise ValidationError(f"The field {name} was sent more than once.")
        if name in FILE_FIELDS:
            part.limit = self.max_file_bytes
            part.spool = _new_spool()
            self.form.spools.append(part.spool)
        elif name in TEXT_FIELD_LIMITS:
            part.limit = TEXT_FIELD_LIMITS[name]
        else:
            raise ValidationError("The form has an unknown field.")
        part.name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.size + (end - start) > part.limit:
            if part.spool is not None:
                raise PayloadTooLarge(f"The file {part.name} is too large.")
            raise ValidationError(f"The field {part.name} is too long.")
        part.size += end - start
        if part.spool is not None:
            part.spool.write(data[start:end])
        else:
            part.text += data[start:end]

    def on_part_end(self) -> None:
        part = self._part
        if part.spool is not None:
            if not part.size:
                raise ValidationError(f"The file {part.name} is empty.")
            self.form.files[part.name] = UploadedFile(part.spool, part.size)
            return
        try:
            self.form.fields[part.name] = part.text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(f"The field {part.name} is not valid UTF-8.") from None

    def on_end(self) -> None:
        self.finished = True


def multipart_boundary(options: dict[bytes, bytes]) -> bytes:
    """The boundary from the Content-Type options; ValidationError when unusable."""
    boundary = options.get(b"boundary", b"")
    # RFC 2046: 1..70 characters; be a little lenient, never unbounded.
    if not boundary or len(boundary) > MAX_BOUNDARY_CHARS or not boundary.isascii():
        raise ValidationError(_MALFORMED)
    return boundary


async def _chunks(request: Request, min_rate: MinRate | None = None) -> AsyncGenerator[bytes, None]:
    stream = request.stream()
    pace = _start_pace(min_rate)
    try:
        while True:
            try:
                chunk = await _next_chunk(stream, pace)
            except StopAsyncIteration:
                return
            if pace is not None:
                pace.received(len(chunk), asyncio.get_running_loop().time())
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ValidationError("The request body ended early.") from None
    finally:
        await stream.aclose()


def _start_pace(min_rate: MinRate | None) -> UploadPace | None:
    if min_rate is None or not min_rate.bytes_per_second:
        return None
    now = asyncio.get_running_loop().time()
    return UploadPace(min_rate.bytes_per_second, min_rate.window_seconds, now)


async def _next_chunk(stream: AsyncGenerator[bytes, None], pace: UploadPace | None) -> bytes:
    """The next piece of the body; RequestTimeout when it comes too late for the pace."""
    if pace is None:
        return await anext(stream)
    try:
        # Same clock as asyncio.timeout_at: the event loop's.
        async with asyncio.timeout_at(pace.deadline()):
            return await anext(stream)
    except TimeoutError:
        raise RequestTimeout("The upload was too slow.") from None


async def read_multipart(
    request: Request, boundary: bytes, max_file_bytes: int, min_rate: MinRate | None = None
) -> MultipartForm:
    """Parse the body as a stream; stops reading at the first broken rule.

    A body slower than ``min_rate`` is cut off with RequestTimeout. The caller
    closes the returned form; on any failure its spools are already closed.
    """
    collector = _FormCollector(max_file_bytes)
    try:
        return await _parse(request, boundary, collector, min_rate)
    except BaseException:
        collector.form.close()
        raise


async def _parse(
    request: Request, boundary: bytes, collector: _FormCollector, min_rate: MinRate | None
) -> MultipartForm:
    parser = MultipartParser(
        boundary,
        max_header_size=_PARSER_MAX_HEADER_BYTES,
        callbacks={
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_end": collector.on_end,
        },
    )
    try:
        # Closed on the way out (an early break included), not whenever GC gets to it.
        async with aclosing(_chunks(request, min_rate)) as chunks:
            async for chunk in chunks:
                parser.write(chunk)
                if collector.finished:
                    break  # anything after the closing boundary is an epilogue
    except FormParserError:
        raise ValidationError(_MALFORMED) from None
    if not collector.finished:
        raise ValidationError("The multipart body is truncated.")
    refines = "sourceGenerationId" in collector.form.fields  # the source stands for input1
    if "input2" in collector.form.files and "input1" not in collector.form.files and not refines:
        raise ValidationError("input2 needs input1: send the base room first.")
    if refines and "input1" in collector.form.files:
        raise ValidationError("Send input1 or sourceGenerationId, not both.")
    return collector.form


async def read_json(
    request: Request, max_bytes: int = MAX_JSON_BYTES, min_rate: MinRate | None = None
) -> Any:
    """A small JSON body, read with a cap; ValidationError when it is not JSON."""
    body = bytearray()
    async with aclosing(_chunks(request, min_rate)) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge("The request body is too large.")
    try:
        return json.loads(body, object_pairs_hook=_unique_members)
    except _RepeatedMember:
        raise ValidationError("A JSON member is repeated.") from None
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, absurd nesting or numbers
        raise ValidationError("The request body is not valid JSON.") from None


class _RepeatedMember(Exception):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object without repeated names: with {"action": "delete", "action": "cancel"}
    a proxy or a log reader that keeps the first reads another request than the last
    (RFC 8259 leaves it to each reader), as with a repeated form field."""
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _RepeatedMember
    return members


def parse_model(model: type[M], data: object, *, strict: bool = False) -> M:
    """Validate client input; the first problem becomes a safe 400 message.

    ``strict`` for JSON, whose values carry their types: a number must be a number
    (not ``true``, ``"0"`` or ``0.0``), while a form's fields are all text."""
    try:
        return model.model_validate(data, strict=strict)
    except pydantic.ValidationError as exc:
        raise ValidationError(validation_message(exc.errors())) from None
