"""Upstreams that stand where the edge and the gateway run, for Envoy tests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorder:
    """An HTTP server that answers 200 and remembers every request."""

    name: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.seen.append(
                    {"path": self.path, "method": self.command, "bytes": len(body),
                     "headers": {k.lower(): v for k, v in self.headers.items()}}
                )  # fmt: skip
                payload = json.dumps({"upstream": recorder.name}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815 (http.server names)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request that reached it, in order."""
        return [(request["method"], request["path"]) for request in self.seen]
