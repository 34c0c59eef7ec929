"""Decoding a gRPC error at the caller: only our own ErrorInfo is believed, and a
failure's own text (a transport's, a proxy's) never becomes the client's message."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from kit.grpc_errors import from_rpc_error


def _error(
    code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


def test_a_transport_failure_never_passes_its_details_on() -> None:
    raw = "failed to connect to all addresses; last error: ipv4:10.0.3.7:50051: refused"
    remote = from_rpc_error(_error(grpc.StatusCode.UNAVAILABLE, raw))
    assert remote.reason == "SERVICE_UNAVAILABLE"
    assert remote.message == "A backend service is unavailable. Please try again."


def test_an_error_info_of_another_domain_is_not_trusted() -> None:
    info = error_details_pb2.ErrorInfo(reason="NOT_FOUND", domain="envoy.example")
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=5, message="upstream text", details=[detail])
    trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    remote = from_rpc_error(_error(grpc.StatusCode.NOT_FOUND, "upstream text", trailing))
    assert remote.reason == "INTERNAL_ERROR"
    assert "upstream text" not in remote.message
