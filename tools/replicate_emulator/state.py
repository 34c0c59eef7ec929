"""The emulator's parts, wired once per app and reached from request handlers."""

from __future__ import annotations

from starlette.requests import Request

from replicate_emulator.config import EmulatorConfig
from replicate_emulator.engine import Engine
from replicate_emulator.faults import FaultState
from replicate_emulator.files import OutputFiles
from replicate_emulator.webhooks import WebhookDispatcher


class Emulator:
    """Config, knobs, webhooks, files and the engine of one app instance."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults = FaultState()
        self.files = OutputFiles()
        self.webhooks = WebhookDispatcher(config, self.faults)
        self.engine = Engine(config, self.faults, self.webhooks, self.files)

    async def reset(self) -> None:
        """Forget predictions, files, deliveries and knobs."""
        await self.engine.reset()
        await self.webhooks.reset()
        self.files.clear()
        self.faults.reset()

    async def close(self) -> None:
        """Stop every task and close the HTTP clients."""
        await self.engine.close()
        await self.webhooks.close()
        self.files.close()


def emulator_of(request: Request) -> Emulator:
    """The Emulator behind ``request``'s app."""
    emulator: Emulator = request.app.state.emulator
    return emulator
