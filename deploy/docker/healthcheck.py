"""Container health probe: exit 0 when healthy, 1 otherwise (compose healthchecks, k8s exec).

    python healthcheck.py grpc 127.0.0.1:50051 [SERVICE]   # grpc.health.v1 says SERVING
    python healthcheck.py http http://127.0.0.1:8081/healthz  # any 2xx

Kubernetes probes the gRPC services natively and the HTTP ones with httpGet; this
script is for Docker Compose (which has neither) and for Envoy, whose admin port
listens on 127.0.0.1 only. One line on stderr says why a check failed.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

TIMEOUT_SECONDS = 3.0


def grpc_serving(target: str, service: str, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None when ``target`` reports SERVING for ``service``, else the reason."""
    # Imported here so the HTTP probe (Envoy) does not pay for grpc's import.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            return f"health check failed: {error.code().name}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def http_ok(url: str, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None when GET ``url`` answers 2xx, else the reason."""
    # No proxy: a probe must reach the local process, whatever HTTP_PROXY says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status: int = response.status
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return f"unreachable: {error}"
    return None if 200 <= status < 300 else f"HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one check; 0 healthy, 1 not."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    grpc_parser = kinds.add_parser("grpc", help="standard gRPC health check")
    grpc_parser.add_argument("target")
    grpc_parser.add_argument("service", nargs="?", default="")
    http_parser = kinds.add_parser("http", help="GET expecting 2xx")
    http_parser.add_argument("url")
    args = parser.parse_args(argv)
    problem = grpc_serving(args.target, args.service) if args.kind == "grpc" else http_ok(args.url)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
