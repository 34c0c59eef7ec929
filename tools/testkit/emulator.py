"""The Replicate emulator served in a background thread, for tests of any package.

with EmulatorServer(EmulatorConfig(start_delay_seconds=0.01)) as emulator:
    client = replicate.Client(api_token=emulator.token, base_url=emulator.base_url)
    emulator.control.set_faults(create_errors=[503])
"""

from __future__ import annotations

from types import TracebackType

from replicate_emulator.app import create_app
from replicate_emulator.config import EmulatorConfig
from replicate_emulator.control import ControlClient
from testkit.servers import START_TIMEOUT, ThreadedUvicorn


class EmulatorServer:
    """The emulator app on a free port (unless the config names one)."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._requested = config or EmulatorConfig(port=0)
        self.config = self._requested
        self._server: ThreadedUvicorn | None = None
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

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Serve in a thread and wait until it accepts requests."""
        requested = self._requested

        def app(port: int) -> object:
            self.config = requested.replace(port=port)
            return create_app(self.config)

        self._server = ThreadedUvicorn(
            port=requested.port, name="replicate-emulator", host=requested.host, factory=app
        ).start(timeout)
        self._control = ControlClient(self.base_url)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit (the app stops its tasks) and join the thread."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._server is not None:
            self._server.stop(timeout)
            self._server = None

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
