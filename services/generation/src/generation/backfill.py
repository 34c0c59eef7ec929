"""``python -m generation.backfill``: thumbnails for renders stored before they existed.

Uses the service's own settings (database, storage); safe to run while the service
runs and to run again. Exits 0 and prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import sys

from generation.domain.thumbnail_backfill import backfill_thumbnails
from generation.settings import GenerationSettings
from generation.wiring import build_app
from kit.logging import configure_logging
from kit.settings import load_settings


async def _main() -> int:
    settings = load_settings(GenerationSettings)
    configure_logging("generation-backfill", settings.log_level)
    app = await build_app(settings, port=0)
    try:
        report = await backfill_thumbnails(app.context)
    finally:
        await app.server.stop(0)
    print(json.dumps({"made": report.made, "skipped": report.skipped}))
    return 0


def main() -> None:
    sys.exit(asyncio.run(_main()))


if __name__ == "__main__":
    main()
