"""Envoy's upload limits, run for real: the local rate limit and HTTP/2 stream cap.

The deployed config is rewritten for local ports as the launcher does, and then
only the upload route's token bucket is shrunk (2 tokens, refilled hourly), so
the test reaches the limit in three requests instead of twenty-one.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from launcher.envoy import load_config, validate
from testkit.envoy import running_envoy
from testkit.recorder import RecordingServer

RATE_LIMIT = "envoy.filters.http.local_ratelimit"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_ACK, H2_MAX_CONCURRENT_STREAMS = 0x4, 0x1, 0x3


def _route(config: dict[str, Any], name: str) -> dict[str, Any]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    (route,) = [route for route in routes if route.get("name") == name]
    return route  # type: ignore[no-any-return]


def _with_small_upload_bucket(path: Path) -> Path:
    config = yaml.safe_load(path.read_text())
    limit = _route(config, "upload")["typed_per_filter_config"][RATE_LIMIT]
    limit["token_bucket"] = {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "3600s"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    validate(path)
    return path


@dataclass
class Proxy:
    url: str
    port: int
    edge: RecordingServer


@contextmanager
def _proxy(directory: Path, rewrite: Callable[[Path], Path]) -> Iterator[Proxy]:
    """Envoy on the deployed config changed by ``rewrite``, before recording upstreams."""
    with (
        RecordingServer("edge", body={"upstream": "edge"}) as edge,
        RecordingServer("gateway", body={"upstream": "gateway"}) as gateway,
        running_envoy(directory, edge.port, gateway.port, rewrite=rewrite) as envoy,
    ):
        yield Proxy(envoy.url, envoy.port, edge)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with _proxy(tmp_path_factory.mktemp("envoy-limits"), _with_small_upload_bucket) as proxy:
        yield proxy


def test_the_shipped_upload_bucket_is_10_per_second_with_a_burst_of_20() -> None:
    config = load_config()
    limit = _route(config, "upload")["typed_per_filter_config"][RATE_LIMIT]
    assert limit["token_bucket"] == {"max_tokens": 20, "tokens_per_fill": 10, "fill_interval": "1s"}
    assert limit["response_headers_to_add"][0]["header"] == {"key": "retry-after", "value": "1"}
    for name in ("upload_too_large", "api_read", "api", "webhook", "public_renders"):
        assert RATE_LIMIT not in _route(config, name).get("typed_per_filter_config", {})


def test_uploads_over_the_bucket_get_a_json_429_and_other_routes_keep_working(
    proxy: Proxy,
) -> None:
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10) as client:
        uploads = [client.post("/api/v1/generations", content=b"{}") for _ in range(3)]
        others = [
            client.get("/api/v1/usage"),
            client.get("/api/v1/generations/abc"),
            client.patch("/api/v1/generations/abc", content=b"{}"),
            client.post("/api/v1/webhooks/replicate", content=b"{}"),
        ]

    assert [r.status_code for r in uploads] == [200, 200, 429]
    limited = uploads[2]
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["content-type"] == "application/json"
    assert limited.headers["x-request-id"]
    assert limited.json() == {
        "error": {
            "code": "TOO_MANY_REQUESTS",
            "message": "Too many uploads at once. Please try again shortly.",
        }
    }
    assert [r.status_code for r in others] == [200, 200, 200, 200]
    assert proxy.edge.calls.count(("POST", "/api/v1/generations")) == 2


def _with_small_address_buckets(path: Path) -> Path:
    """The instance's bucket at 4 uploads and each address's at 2, refilled hourly."""
    config = yaml.safe_load(path.read_text())
    limit = _route(config, "upload")["typed_per_filter_config"][RATE_LIMIT]
    limit["token_bucket"] = {"max_tokens": 4, "tokens_per_fill": 1, "fill_interval": "3600s"}
    (per_address,) = limit["descriptors"]
    per_address["token_bucket"] = {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "3600s"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    validate(path)
    return path


def _uploads_from(url: str, address: str, count: int) -> list[int]:
    """The statuses of ``count`` uploads sent from the loopback ``address``."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url, transport=transport, trust_env=False, timeout=10) as client:
        return [client.post("/api/v1/generations", content=b"{}").status_code for _ in range(count)]


def test_the_shipped_per_address_bucket_is_half_the_instances() -> None:
    limit = _route(load_config(), "upload")["typed_per_filter_config"][RATE_LIMIT]
    assert limit["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    (per_address,) = limit["descriptors"]
    assert per_address["entries"] == [{"key": "remote_address", "value": ""}]
    assert per_address["token_bucket"] == {
        "max_tokens": 10,
        "tokens_per_fill": 5,
        "fill_interval": "1s",
    }
    assert limit["always_consume_default_token_bucket"] is True
    assert limit["max_dynamic_descriptors"] == 10000


def test_one_address_cannot_take_every_upload_and_the_instance_bucket_still_holds(
    tmp_path: Path,
) -> None:
    with _proxy(tmp_path, _with_small_address_buckets) as proxy:
        greedy = _uploads_from(proxy.url, "127.0.0.2", 4)
        other = _uploads_from(proxy.url, "127.0.0.3", 2)
        third = _uploads_from(proxy.url, "127.0.0.4", 1)

    assert greedy == [200, 200, 429, 429]  # its own bucket is empty
    assert other == [200, 200]  # another address still gets its share
    assert third == [429]  # the instance's bucket (4) is spent
    assert proxy.edge.calls.count(("POST", "/api/v1/generations")) == 4


def test_report_only_rate_limits_count_without_refusing(tmp_path: Path) -> None:
    # The bench's setting (ENVOY_RATE_LIMITS=report-only): the same small bucket, but
    # the third upload goes through and Envoy counts it as one it would have refused.
    with (
        RecordingServer("edge", body={"upstream": "edge"}) as edge,
        RecordingServer("gateway", body={"upstream": "gateway"}) as gateway,
        running_envoy(
            tmp_path,
            edge.port,
            gateway.port,
            rewrite=_with_small_upload_bucket,
            rate_limits_enforced=False,
        ) as envoy,
        httpx.Client(base_url=envoy.url, trust_env=False, timeout=10) as client,
    ):
        uploads = [client.post("/api/v1/generations", content=b"{}") for _ in range(3)]
        stats = httpx.get(
            f"http://127.0.0.1:{envoy.admin_port}/stats",
            params={"filter": "upload_rate_limit"},
            trust_env=False,
        ).text
    assert [r.status_code for r in uploads] == [200, 200, 200]
    assert edge.calls.count(("POST", "/api/v1/generations")) == 3
    assert "upload_rate_limit.http_local_rate_limit.rate_limited: 1" in stats
    assert "upload_rate_limit.http_local_rate_limit.enforced: 0" in stats


def test_http2_connections_are_told_at_most_100_concurrent_streams(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        # An empty SETTINGS frame: length 0, type, no flags, stream 0.
        sock.sendall(H2_PREFACE + struct.pack(">3sBBI", b"\0\0\0", H2_SETTINGS, 0, 0))
        settings = _server_settings(sock)

    assert settings[H2_MAX_CONCURRENT_STREAMS] == 100


def _server_settings(sock: socket.socket) -> dict[int, int]:
    """The first non-ACK SETTINGS frame the server sends, as {identifier: value}."""
    stream = sock.makefile("rb")
    while True:
        header = stream.read(9)
        assert len(header) == 9, "connection closed before SETTINGS"
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        payload = stream.read(length)
        if kind == H2_SETTINGS and not flags & H2_ACK:
            entries = (payload[i : i + 6] for i in range(0, length, 6))
            return {int.from_bytes(e[:2], "big"): int.from_bytes(e[2:], "big") for e in entries}
