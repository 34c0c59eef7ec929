"""Operator commands over gRPC, printing JSON.

    python -m usage.cli set-plan OWNER_ID PRICE_ID   # "" or "free" returns to free
    python -m usage.cli audit                        # exit 1 when the books disagree

The server is found at ``--target`` or ``USAGE_GRPC_TARGET`` (default
127.0.0.1:50052). Calls are signed as the ``operator`` identity with the Ed25519 key
of ``--key-file`` or ``OPERATOR_KEY_FILE`` (``make run`` prints its path); without
one they carry no token, which only a development server without trust material
accepts. Exit codes: 0 ok, 1 audit discrepancies, 2 the call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from interior.usage.v1 import usage_pb2, usage_pb2_grpc
from kit.grpc_client import create_channel
from kit.grpc_errors import answered_by_a_service, from_rpc_error
from kit.service_identity import OPERATOR, USAGE, TokenSigner
from kit.service_keys import KeyMaterialError

DEFAULT_TARGET = "127.0.0.1:50052"
EXIT_OK, EXIT_DISCREPANCIES, EXIT_FAILED = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m usage.cli", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--target",
        type=_target,
        # Set but empty (``USAGE_GRPC_TARGET=`` in an env file) means unset.
        default=os.environ.get("USAGE_GRPC_TARGET") or DEFAULT_TARGET,
        help="usage service address (env USAGE_GRPC_TARGET)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="call deadline in seconds")
    parser.add_argument(
        "--key-file",
        default=os.environ.get("OPERATOR_KEY_FILE") or None,
        help="the operator's Ed25519 private key, PEM (env OPERATOR_KEY_FILE)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    set_plan = commands.add_parser("set-plan", help="put a user on the plan of a price id")
    set_plan.add_argument("owner_id")
    set_plan.add_argument("price_id")
    commands.add_parser("audit", help="check the ledger against the generation jobs")
    return parser


def _target(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an address is needed, e.g. 127.0.0.1:50052")
    return text


def _as_json(message: Message) -> dict[str, Any]:
    return MessageToDict(message, always_print_fields_with_no_presence=True)


def _signer(key_file: str | None) -> TokenSigner | None:
    if key_file is None:
        return None
    signer = TokenSigner(OPERATOR, Path(key_file))
    signer.token(USAGE)  # a bad key file stops here, before any call
    return signer


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        signer = _signer(args.key_file)
    except KeyMaterialError as error:
        print(json.dumps({"error": {"code": "BAD_KEY_FILE", "message": str(error)}}), file=err)
        return EXIT_FAILED
    async with create_channel(args.target, signer=signer, audience=USAGE) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        try:
            if args.command == "set-plan":
                quota = await stub.SetPlan(
                    usage_pb2.SetPlanRequest(owner_id=args.owner_id, price_id=args.price_id),
                    timeout=args.timeout,
                )
                print(json.dumps(_as_json(quota), indent=2), file=out)
                return EXIT_OK
            report = await stub.AuditLedger(usage_pb2.AuditLedgerRequest(), timeout=args.timeout)
        except grpc.aio.AioRpcError as error:
            print(json.dumps({"error": _failure(error, args.target)}), file=err)
            return EXIT_FAILED
    print(json.dumps(_as_json(report), indent=2), file=out)
    return EXIT_DISCREPANCIES if report.discrepancies else EXIT_OK


_REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
_UNREACHED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _failure(error: grpc.aio.AioRpcError, target: str) -> dict[str, str]:
    """The error to print: a refusal of the service identity says how to sign, and a
    server not reached says which address was tried."""
    if error.code() in _REFUSED:
        hint = "Sign as the operator: --key-file or OPERATOR_KEY_FILE (make run prints it)."
        return {"code": error.code().name, "message": f"{error.details()} {hint}"}
    remote = from_rpc_error(error)
    if not answered_by_a_service(error):
        # No answer of the service's own: the call never reached it (or it hung), or
        # gRPC refused it first (an address it cannot dial, a method it does not know).
        message = f"The usage service at {target} did not answer"
        if error.code() in _UNREACHED:
            message += " (--target or USAGE_GRPC_TARGET)."
        else:
            message += f": the call failed before it reached it ({error.details()})."
        return {"code": error.code().name, "message": message}
    # The service answered: its own words (e.g. the generation service it asks could
    # not be reached), not a hint about the address that did answer.
    return {"code": remote.code, "message": remote.message}


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Parses ``argv``, calls the service, prints JSON; returns the exit code."""
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args, out or sys.stdout, err or sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
