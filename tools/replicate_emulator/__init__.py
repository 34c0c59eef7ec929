"""A local stand-in for Replicate's HTTP API (model google/nano-banana).

It speaks Replicate's real protocol (predictions, problem+json errors, Standard
Webhooks signatures) so our adapter and the official ``replicate`` client both
work against it, and adds a control API under ``/_emulator/`` for fault injection.
"""

from __future__ import annotations

from replicate_emulator.app import create_app
from replicate_emulator.config import EmulatorConfig, config_from_env
from replicate_emulator.control import ControlClient, ControlError, FaultKnobs
from replicate_emulator.control_async import AsyncControlClient

__all__ = [
    "AsyncControlClient",
    "ControlClient",
    "ControlError",
    "EmulatorConfig",
    "FaultKnobs",
    "config_from_env",
    "create_app",
]
