"""The system under test: testkit's process stack (the launcher's Stack, as ``make run``
starts it) on free ports in a temporary directory.

The emulator answers instantly (start and run delays 0) and Envoy's local rate limits
only count (``ENVOY_RATE_LIMITS=report-only``: the upload route's 10 per second per
instance would refuse most of the submit load), and uploads wait for an edge slot
for up to 50 s (``UPLOAD_SLOT_WAIT_SECONDS``, 5 s by default). Everything else runs on
the launcher's embedded defaults, exactly as ``make run`` starts it.
"""

from __future__ import annotations

from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from types import TracebackType

import psutil

from kit.settings import S3Settings
from launcher.config import LauncherConfig
from launcher.stack import Stack, s3_settings
from replicate_emulator.control import ControlClient
from testkit.stack import process_stack

PUBLIC_BUCKET_ENV = "S3_PUBLIC_BUCKET"


class _Progress:
    """Collects the launcher's progress pieces ("==> starting x ...", " ok (1.0 s)") into lines."""

    def __init__(self) -> None:
        self._pending = ""

    def __call__(self, text: str, end: str = "\n") -> None:
        self._pending += text
        if end == "\n":
            line, self._pending = self._pending.strip(), ""
            if line:
                print(f"   {line}", flush=True)


@dataclass
class BenchSystem:
    """A running Stack plus the addresses and handles the phases need."""

    stack: Stack
    parts: ExitStack
    control: ControlClient = field(init=False)

    def __post_init__(self) -> None:
        self.control = self.parts.enter_context(closing(ControlClient(self.replicate_url)))

    @classmethod
    def start(cls) -> BenchSystem:
        """Bring every part up; raises (after stopping what started) on failure."""
        env = {
            "EMULATOR_START_DELAY_MS": "0",
            "EMULATOR_RUN_DELAY_MS": "0",
            # Envoy's token buckets count but do not refuse: the load is ours to choose.
            "ENVOY_RATE_LIMITS": "report-only",
            # Uploads queue for the edge's 8 slots instead of being refused after 5 s:
            # 50 photos of 10 MB at once (the memory figure) take longer than that on
            # 2 cores, and the 429s (most seen by the client as a reset: an early
            # answer to an HTTP/1.1 upload) made the figure measure refusals. Under
            # Envoy's 60 s timeout of the upload route, which would answer 504 first.
            # (The hostile uploads are refused from their first bytes: a slot is held
            # for milliseconds, so their waves are not changed by this.)
            "UPLOAD_SLOT_WAIT_SECONDS": "50",
        }
        with ExitStack() as parts:
            stack = parts.enter_context(
                process_stack(env, say=_Progress(), prefix="interior-bench-")
            )
            return cls(stack, parts.pop_all())

    def stop(self) -> None:
        """Stop every part and remove the temporary directory."""
        self.parts.close()

    def __enter__(self) -> BenchSystem:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def config(self) -> LauncherConfig:
        return self.stack.config

    @property
    def public_url(self) -> str:
        """Envoy's listener: every client request goes through it."""
        return f"http://127.0.0.1:{self.config.ports.public}"

    @property
    def webhook_url(self) -> str:
        return f"{self.public_url}/api/v1/webhooks/replicate"

    @property
    def jwt_secret(self) -> str:
        return self.config.auth_jwt_secret

    @property
    def webhook_secret(self) -> str:
        secret = self.config.replicate_webhook_secret
        assert secret is not None
        return secret

    @property
    def replicate_token(self) -> str:
        token = self.config.replicate_token
        assert token is not None
        return token

    @property
    def replicate_url(self) -> str:
        return self.config.replicate_url()

    def s3(self) -> S3Settings:
        return s3_settings(self.config)

    def generation_dsn(self) -> str:
        """A plain libpq URL of the generation database (for asyncpg)."""
        return self.config.database_url("generation").replace("postgresql+asyncpg", "postgresql")

    def pids(self, *names: str) -> dict[str, int]:
        """Pid of each named part (launcher unit names: edge-api, generation, ...)."""
        found = {unit.name: unit.pids() for unit in self.stack.units}
        return {name: found[name][0] for name in names if found.get(name)}

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Every part's processes (a part's children included, e.g. PostgreSQL backends)."""
        result: dict[str, list[psutil.Process]] = {}
        for unit in self.stack.units:
            procs: list[psutil.Process] = []
            for pid in unit.pids():
                try:
                    parent = psutil.Process(pid)
                    procs.append(parent)
                    procs.extend(parent.children(recursive=True))
                except psutil.NoSuchProcess:
                    continue
            result[unit.name] = procs
        return result
