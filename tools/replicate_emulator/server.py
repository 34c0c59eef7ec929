"""Run the emulator in a background thread: for tests of any package.

with EmulatorServer(EmulatorConfig(start_delay_seconds=0.01)) as emulator:
    client = replicate.Client(api_token=emulator.token, base_url=emulator.base_url)
    emulator.control.set_faults(create_errors=[503])
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from replicate_emulator.app import create_app
from replicate_emulator.config import EmulatorConfig
from replicate_emulator.control import ControlClient


class EmulatorServer:
    """uvicorn + the emulator app on a free port (unless the config names one)."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._requested = config or EmulatorConfig(port=0)
        self.config = self._requested
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._control: ControlClient | None = None

    @property
    def base_url(self) -> str:
        """Root URL to give clients (no /v1)."""
        return self.config.base_url

    @property
    def token(self) -> str:
        """The API token the emulator accepts."""
        return self.config.token

    @property
    def webhook_secret(self) -> str:
        """The ``whsec_...`` secret webhooks are signed with."""
        return self.config.webhook_secret

    @property
    def control(self) -> ControlClient:
        """The control API client (only while running)."""
        if self._control is None:
            raise RuntimeError("the emulator is not running")
        return self._control

    def start(self, timeout: float = 10.0) -> None:
        """Bind, start serving in a thread and wait until it accepts requests."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._requested.host, self._requested.port))
        self.config = self._requested.replace(port=sock.getsockname()[1])
        uv_config = uvicorn.Config(
            create_app(self.config),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="replicate-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the Replicate emulator did not start")
            time.sleep(0.01)
        self._control = ControlClient(self.base_url)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit (the app stops its tasks) and join the thread."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
