"""``python -m generation.backfill``: thumbnails for renders stored before they existed.

Uses the service's own settings (database, storage); safe to run while the service
runs and to run again. Exits 0 and prints a JSON summary; 1 with a ``backfill.failed``
line (no traceback, no secret) when the database or the storage cannot be used. It never
migrates: the deployment's migrate step does, and an operator's shell must not change
the schema as a side effect.
"""

from __future__ import annotations

import asyncio
import json
import sys

from generation.domain.thumbnail_backfill import backfill_thumbnails
from generation.settings import GenerationSettings
from generation.wiring import build_app
from kit.logging import configure_logging, get_logger
from kit.opscli import EXIT_FAILED
from kit.settings import load_settings

log = get_logger("generation.backfill")


async def _main() -> int:
    settings = load_settings(GenerationSettings).model_copy(update={"run_migrations": False})
    configure_logging("generation-backfill", settings.log_level)
    try:
        app = await build_app(settings, port=0)
    except Exception as error:  # the database or the storage: reported, never a traceback
        _failed("start", error)
        return EXIT_FAILED
    try:
        report = await backfill_thumbnails(app.context)
    except Exception as error:
        _failed("backfill", error)
        return EXIT_FAILED
    finally:
        await app.server.stop(0)
    print(json.dumps({"made": report.made, "skipped": report.skipped}))
    return 0


def _failed(step: str, error: Exception) -> None:
    # The first line only; the log's redaction masks a URL's password in it.
    reason = (str(error).splitlines() or [""])[0]
    log.error("backfill.failed", step=step, error=f"{type(error).__name__}: {reason}")


def main() -> None:
    sys.exit(asyncio.run(_main()))


if __name__ == "__main__":
    main()
