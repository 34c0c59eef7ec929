"""``python -m bench [--quick]``: run the bench, print the table, write latest.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bench import history, report
from bench.payloads import MB, photo_jpeg
from bench.run import FULL, QUICK, Options, bounds_line, run, say, table_rows
from bench.tracing import tracing_phase
from kit.logging import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~3.5 minutes)")
    parser.add_argument(
        "--large-rows", type=int, default=None, help="jobs in the table for the scale round"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the edge, generation and usage in the first round (bench/results/profile/)",
    )
    parser.add_argument(
        "--out", default=None, help="result file name under bench/results (default latest.json)"
    )
    parser.add_argument(
        "--only",
        choices=["hostile", "history", "memory", "sse", "submit", "tracing", "webhook"],
        default=None,
        help="run one phase alone (hostile: metrics 6 and 7, ~1 minute; writes hostile.json; "
        "history: the history read at 1k vs 100k rows, ~2 minutes; prints it; "
        "memory: upload_peak_rss_mb alone, ~1 minute; writes memory.json; "
        "sse: the Server-Sent Events figures; writes sse.json; "
        "submit: the submit ratio, rate and CPU per submission, ~1 minute; writes submit.json; "
        "tracing: submit and status figures with tracing off and on; writes tracing.json; "
        "webhook: webhook_p50_ratio as round 1 measures it, ~1 minute; writes webhook.json)",
    )
    args = parser.parse_args(argv)
    large = args.large_rows or (10_000 if args.quick else 100_000)
    if args.only == "history":
        print(json.dumps(asyncio.run(history.measure(large)), indent=2))
        return 0
    if args.only == "tracing":
        return _tracing(args.quick)
    options = Options(
        quick=args.quick,
        large_rows=large,
        profile=args.profile,
        hostile_only=args.only == "hostile",
        sse_only=args.only == "sse",
        memory_only=args.only == "memory",
        submit_only=args.only == "submit",
        webhook_only=args.only == "webhook",
        hostile_seconds=5.0 if args.quick else 10.0,
    )
    document = asyncio.run(run(options))
    default = "quick.json" if args.quick else "latest.json"
    name = args.out or (f"{args.only}.json" if args.only else default)
    path = report.write(document, name)
    print()
    print(report.table(table_rows(document)))
    print(bounds_line(document))
    print(f"\nwritten to {path} ({document['machine']['bench_seconds']:.0f} s)")
    return 0


def _tracing(quick: bool) -> int:
    """``--only tracing``: prints and writes results/tracing.json."""
    configure_logging("bench", "WARNING")
    image = photo_jpeg(2048, 1536, MB)
    figures = asyncio.run(tracing_phase(image, QUICK if quick else FULL, say))
    document = {"machine": {**report.machine(), "quick": quick, "only": "tracing"}, **figures}
    print(json.dumps(figures, indent=2))
    print(f"written to {report.write(document, 'tracing.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
