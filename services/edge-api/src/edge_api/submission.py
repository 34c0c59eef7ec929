"""Forwarding a read submission to the generation service as a client stream.

The request part goes first, declaring every file with its exact size; then
each file follows in ``READ_CHUNK_BYTES`` pieces read back from its spool, in
declared order (the contract's SubmitGenerationPart rules). Each write waits for
gRPC's flow control, so at most a piece or two per upload is in memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from edge_api.schemas import SubmissionFields
from edge_api.uploads import MultipartForm, UploadedFile
from interior.generation.v1 import generation_pb2 as pb
from kit.errors import ValidationError
from kit.grpc_interceptors import STOP_SENDING_KEY
from kit.runtime_config import RuntimeConfig

SubmitCall = grpc.aio.StreamUnaryCall[pb.SubmitGenerationPart, pb.SubmitGenerationResponse]


@dataclass
class Submission:
    """What the client sent: checked text fields and the form holding the files."""

    fields: SubmissionFields
    form: MultipartForm

    def files(self) -> list[tuple[str, UploadedFile]]:
        """The files by field name in order: the base room (``input1``) first."""
        return [(name, self.form.files[name]) for name in sorted(self.form.files)]

    def request(
        self, owner_id: str, idempotency_key: str, base_url: str
    ) -> pb.SubmitGenerationRequest:
        """The stream's first part: every field, and each file's declared size."""
        fields = self.fields
        return pb.SubmitGenerationRequest(
            owner_id=owner_id,
            idempotency_key=idempotency_key,
            mode=fields.mode,
            prompt=fields.prompt or "",
            room_type=fields.room_type or "",
            style=fields.style or "",
            inputs=[
                pb.DeclaredInput(field=name, size_bytes=upload.size)
                for name, upload in self.files()
            ],
            request_base_url=base_url,
            source=self._source(),
        )

    def _source(self) -> pb.SourceVariant | None:
        try:
            source = self.fields.source_ref()
        except ValueError as error:
            raise ValidationError(str(error)) from None
        if source is None:
            return None
        return pb.SourceVariant(job_id=source.generation_id, variant_idx=source.variant_idx)

    def close(self) -> None:
        """Delete the spooled files (idempotent)."""
        self.form.close()

    def check_limits(self, config: RuntimeConfig) -> None:
        """The limits the OpenAPI document states, enforced here as published."""
        prompt = self.fields.prompt
        # A line break counts once, as a browser's textarea counts it (a form sends CRLF).
        if prompt is not None and len(prompt.replace("\r\n", "\n")) > config.prompts.max_length:
            raise ValidationError(f"prompt must be at most {config.prompts.max_length} characters")


async def send_submission(
    call: SubmitCall, request: pb.SubmitGenerationRequest, files: list[tuple[str, UploadedFile]]
) -> pb.SubmitGenerationResponse:
    """Write the whole stream and answer the reply; a failed call raises its AioRpcError.

    When the service says its answer is decided (``x-stop-sending`` in its initial
    metadata: a refusal before the last byte), the rest of the files is not sent: the
    stream is half-closed at once and the answer awaited. The service answers only
    after the half-close, so no write races its status (grpc/grpc#36066).
    """
    stop = asyncio.ensure_future(_stop_requested(call))
    try:
        await call.write(pb.SubmitGenerationPart(request=request))
        for index, (_, upload) in enumerate(files):
            for piece in upload.chunks():
                if _asked_to_stop(stop):
                    break
                # Fields set in place, not an InputChunk passed in: upb copies a
                # message argument slowly (0.5 ms per 256 KiB piece, 6 us this way).
                part = pb.SubmitGenerationPart()
                part.chunk.input_index = index
                part.chunk.data = piece
                await call.write(part)
        await call.done_writing()
    except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
        # The service ended the call early (a refusal, the deadline): awaiting the
        # call below raises its status, mapped like any other failed call.
        pass
    except BaseException:
        # Cancelled (the client went away) or the spool failed: end the call too.
        call.cancel()
        raise
    finally:
        stop.cancel()
    return await call


def _asked_to_stop(stop: asyncio.Future[bool]) -> bool:
    """Whether the watch on the initial metadata ended with a request to stop."""
    if not stop.done() or stop.cancelled() or stop.exception() is not None:
        return False  # a failed call shows in the next write or in its status
    return stop.result()


async def _stop_requested(call: SubmitCall) -> bool:
    """Whether the service's initial metadata asks for no more bytes (it comes with the
    answer otherwise; a call that failed first asks nothing)."""
    try:
        metadata = await call.initial_metadata()
    except grpc.aio.AioRpcError:
        return False
    return metadata is not None and metadata.get(STOP_SENDING_KEY) is not None
