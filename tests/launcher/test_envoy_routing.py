"""The Envoy config, run for real in front of two recording upstreams.

The upstreams stand where the edge and the gateway run: they record what Envoy
forwards, so each test sees which cluster got a request and what it looked like.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from launcher.components import free_port
from testkit.envoy import running_envoy
from testkit.recorder import RecordingServer


@dataclass
class Proxy:
    url: str
    edge: RecordingServer
    gateway: RecordingServer
    log_path: Path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("envoy")
    with (
        RecordingServer("edge", body={"upstream": "edge"}) as edge,
        RecordingServer("gateway", body={"upstream": "gateway"}) as gateway,
        running_envoy(directory, edge.port, gateway.port) as envoy,
    ):
        yield Proxy(envoy.url, edge, gateway, envoy.log_path)


@pytest.fixture(autouse=True)
def _forget_earlier_requests(proxy: Proxy) -> None:
    proxy.edge.clear()
    proxy.gateway.clear()


@pytest.fixture
def client(proxy: Proxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "upstream"),
    [
        ("POST", "/api/v1/webhooks/replicate", "gateway"),
        # The URL generation gives the provider names the job (domain/run_claims.py).
        ("POST", "/api/v1/webhooks/replicate?job=6f1c1b7e-0a51-4a3c-9d0e-8f2b6c3d4e5f", "gateway"),
        ("GET", "/api/v1/generations/abc", "edge"),
        ("GET", "/api/v1/generations/abc/events", "edge"),
        ("GET", "/api/v1/generations", "edge"),
        ("GET", "/api/v1/catalog", "edge"),
        ("POST", "/api/v1/generations", "edge"),
        ("PATCH", "/api/v1/generations/abc", "edge"),
        ("GET", "/api/v1/usage", "edge"),
        ("GET", "/public/renders/r1/0.jpg", "edge"),
        ("GET", "/healthz", "edge"),
        ("GET", "/readyz", "edge"),
        ("GET", "/", "edge"),  # the web client (the edge serves it only when enabled)
        ("GET", "/app/main.js", "edge"),
    ],
)
def test_routes_reach_their_cluster(
    client: httpx.Client, proxy: Proxy, method: str, path: str, upstream: str
) -> None:
    response = client.request(method, path, content=b"{}")

    assert response.status_code == 200
    assert response.json() == {"upstream": upstream}
    recorder = proxy.gateway if upstream == "gateway" else proxy.edge
    assert [r.path for r in recorder.snapshot()] == [path]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/index.html"),
        ("POST", "/"),  # the web client is read-only
        ("DELETE", "/app/main.js"),
        ("GET", "/api/v2/usage"),
        ("GET", "/api/v1"),
        ("POST", "/webhooks/replicate"),
        ("PUT", "/public/renders/r1/0.jpg"),  # public renders are read-only
    ],
)
def test_everything_else_is_a_json_404(
    client: httpx.Client, proxy: Proxy, method: str, path: str
) -> None:
    response = client.request(method, path)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"code": "NOT_FOUND", "message": "Not found."}}
    assert proxy.edge.snapshot() == []
    assert proxy.gateway.snapshot() == []


def test_request_ids_are_envoys_and_echoed(client: httpx.Client, proxy: Proxy) -> None:
    """Every request gets an id Envoy made, handed to the edge and echoed to the client;
    one a client sends is replaced, so nobody can choose or reuse the id in our logs."""
    generated = client.get("/api/v1/usage")
    chosen = client.get("/api/v1/usage", headers={"x-request-id": 'client "chosen" id'})

    ids = [generated.headers["x-request-id"], chosen.headers["x-request-id"]]
    for answer_id, forwarded in zip(ids, proxy.edge.snapshot(), strict=True):
        assert uuid.UUID(answer_id)
        assert forwarded.headers["x-request-id"] == answer_id
    assert len(set(ids)) == 2


def test_a_declared_upload_over_21_mib_is_refused_before_the_body(proxy: Proxy) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    head = (
        "POST /api/v1/generations HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {21 * 1024 * 1024 + 1}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(4096).decode()

    assert answer.startswith("HTTP/1.1 413")
    assert "application/json" in answer
    assert '{"error":{"code":"VALIDATION_ERROR","message":"The upload is too large."}}' in answer
    assert proxy.edge.snapshot() == []


def test_an_upload_under_the_cap_streams_through(client: httpx.Client, proxy: Proxy) -> None:
    response = client.post("/api/v1/generations", files={"input1": ("a.jpg", b"x" * 3_000_000)})

    assert response.status_code == 200
    assert len(proxy.edge.snapshot()[0].body) > 3_000_000


def test_a_webhook_over_1_mib_is_refused_with_json(client: httpx.Client, proxy: Proxy) -> None:
    small = client.post("/api/v1/webhooks/replicate", content=b"x" * 500_000)
    large = client.post("/api/v1/webhooks/replicate", content=b"x" * (1024 * 1024 + 1))

    assert small.status_code == 200
    assert large.status_code == 413
    assert large.json()["error"]["code"] == "VALIDATION_ERROR"
    assert [len(r.body) for r in proxy.gateway.snapshot()] == [500_000]


def test_access_logs_are_json_without_query_or_credentials(
    client: httpx.Client, proxy: Proxy
) -> None:
    answer = client.get(
        "/api/v1/usage?X-Amz-Signature=topsecret",
        headers={
            "authorization": "Bearer very-secret-token",
            "x-request-id": "log-check-1",
            "user-agent": "Mozilla/5.0 (a personal device) DistinctAgent/9",
        },
    )
    line = _wait_for_log_line(proxy.log_path, answer.headers["x-request-id"])

    entry = json.loads(line)
    assert entry["requestId"] == answer.headers["x-request-id"]  # the id the client got
    assert "log-check-1" not in line
    assert entry["route"] == "api_read"  # the route's name, never the client's path
    assert "/api/v1/usage" not in line
    assert entry["method"] == "GET"
    assert entry["status"] == 200
    assert entry["upstreamCluster"] == "edge_api"
    assert "topsecret" not in line
    assert "very-secret-token" not in line
    # Personal data: neither the client's address nor its User-Agent.
    assert "DistinctAgent" not in line
    assert "127.0.0.1" not in line.replace(entry["upstreamHost"], "")


def test_a_path_a_client_wrote_is_not_in_the_access_log(client: httpx.Client, proxy: Proxy) -> None:
    """An e-mail address in a path was logged as it came (personal data)."""
    email = "jane.doe+review@example.com"
    answer = client.get(f"/api/v1/generations/{email}")

    line = _wait_for_log_line(proxy.log_path, answer.headers["x-request-id"])

    assert email not in line
    assert json.loads(line)["route"] == "api_read"


def test_envoys_own_lines_are_json_too(tmp_path: Path) -> None:
    """Its stop (and any warning) used to be "[date][warning][main] text" lines."""
    with (
        RecordingServer("edge", body={}) as edge,
        RecordingServer("gateway", body={}) as gateway,
        running_envoy(tmp_path, edge.port, gateway.port) as envoy,
    ):
        httpx.get(f"{envoy.url}/healthz", timeout=5)
    lines = [line for line in envoy.log_path.read_text().splitlines() if line.strip()]

    own = [json.loads(line) for line in lines if '"http.access"' not in line]
    assert own, lines  # its stop, at least
    assert all(entry["service"] == "envoy" and entry["event"] for entry in own), own
    assert any("SIGTERM" in entry["event"] for entry in own), own


def _wait_for_log_line(path: Path, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if needle in line and line.startswith("{"):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no access log line with {needle} in {path}")


def test_with_the_edge_down_gets_are_retried_and_envoy_answers_json_503(tmp_path: Path) -> None:
    # Nothing listens on the upstream ports.
    with (
        running_envoy(tmp_path, free_port(), free_port()) as envoy,
        httpx.Client(base_url=envoy.url, trust_env=False) as client,
    ):
        read = client.get("/api/v1/usage")
        retries_after_get = _retry_count(client, envoy.admin_port)
        write = client.post("/api/v1/generations", json={"mode": "imagine"})
        retries_after_post = _retry_count(client, envoy.admin_port)

    for response in (read, write):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "UPSTREAM_ERROR"
    assert retries_after_get == 2  # num_retries on an idempotent route
    assert retries_after_post == retries_after_get  # never for a POST


def _retry_count(client: httpx.Client, admin: int) -> int:
    stats = client.get(f"http://127.0.0.1:{admin}/stats?filter=edge_api.upstream_rq_retry$")
    return int(stats.text.split(":")[1])


def test_event_streams_have_no_deadline_but_die_when_silent() -> None:
    """A Server-Sent Events stream lives as long as its job; the edge's heartbeat
    (every 15 s) keeps it under the route's idle timeout."""
    import yaml

    from edge_api.settings import EdgeSettings
    from launcher.config import REPO_ROOT

    config = yaml.safe_load((REPO_ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    [events] = [route for route in routes if route["name"] == "job_events"]
    heartbeat = EdgeSettings.model_fields["sse_heartbeat_seconds"].default

    assert events["route"]["timeout"] == "0s"
    assert int(events["route"]["idle_timeout"].rstrip("s")) >= 4 * heartbeat
    names = [route["name"] for route in routes]
    assert names.index("job_events") < names.index("api_read")  # matched before the 15 s route


# Headers that would let a client choose the host, port, prefix or address the services
# believe (variant URLs, webhook URLs, logs). Envoy sets none of them: it drops them all.
SPOOFED_FORWARDING = {
    "x-forwarded-host": "evil.example",
    "x-forwarded-port": "8443",
    "x-forwarded-prefix": "/evil",
    "x-forwarded-server": "evil.example",
    "x-forwarded-scheme": "https",
    "x-forwarded-ssl": "on",
    "x-forwarded-uri": "/evil",
    "x-forwarded-path": "/evil",
    "x-forwarded-method": "DELETE",
    "forwarded": "for=6.6.6.6;host=evil.example;proto=https",
    "x-real-ip": "6.6.6.6",
    "x-original-host": "evil.example",
    "x-original-url": "/evil",
    "x-rewrite-url": "/evil",
    "x-host": "evil.example",
    "x-client-ip": "6.6.6.6",
    "true-client-ip": "6.6.6.6",
    "x-cluster-client-ip": "6.6.6.6",
    "cf-connecting-ip": "6.6.6.6",
    "fastly-client-ip": "6.6.6.6",
    "x-forwarded-client-cert": "Hash=evil",
}


@pytest.mark.parametrize(
    ("method", "path", "upstream"),
    [
        ("POST", "/api/v1/generations", "edge"),
        ("GET", "/api/v1/generations/abc", "edge"),
        ("GET", "/public/renders/r1/0.jpg", "edge"),
        ("POST", "/api/v1/webhooks/replicate", "gateway"),
    ],
)
def test_client_sent_forwarding_headers_never_reach_a_service(
    client: httpx.Client, proxy: Proxy, method: str, path: str, upstream: str
) -> None:
    headers = {**SPOOFED_FORWARDING, "x-forwarded-proto": "https", "x-forwarded-for": "6.6.6.6"}

    response = client.request(method, path, headers=headers, content=b"{}")

    assert response.status_code == 200
    recorder = proxy.gateway if upstream == "gateway" else proxy.edge
    (seen,) = recorder.snapshot()
    forwarded = seen.headers
    assert not set(SPOOFED_FORWARDING) & set(forwarded), forwarded
    # Envoy's own: the scheme the client really used (overwritten, not appended), and
    # the peer Envoy saw appended last: the only entry the services read.
    assert forwarded["x-forwarded-proto"] == "http"
    client_part, envoy_part = forwarded["x-forwarded-for"].rsplit(",", 1)
    assert client_part == "6.6.6.6"
    assert envoy_part.strip() not in {"", "6.6.6.6"}
    assert forwarded["host"] == proxy.url.removeprefix("http://")
