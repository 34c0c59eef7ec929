"""What every route needs, held on the app and reached through one dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from edge_api.admission import UploadAdmission
from edge_api.base_url import TrustedProxies
from edge_api.clients import Clients
from edge_api.jwks import JwksKeys
from edge_api.settings import EdgeSettings
from kit.errors import InternalError
from kit.runtime_config import RuntimeConfig

if TYPE_CHECKING:
    from edge_api.auth import TokenVerifier
    from edge_api.feed import JobFeed
    from edge_api.routes.catalog import CatalogAnswer


@dataclass
class EdgeState:
    """Settings, product knobs, the token verifier and (once started) the clients."""

    settings: EdgeSettings
    runtime_config: RuntimeConfig
    token_verifier: TokenVerifier
    # Submissions being read and forwarded (each spooled): global slots, per-user counts.
    uploads: UploadAdmission
    trusted_proxies: TrustedProxies
    # GET /catalog's answer, built once from the runtime config.
    catalog: CatalogAnswer
    # The shared upstream change feed that wakes Server-Sent Events watchers.
    feed: JobFeed
    # The JWKS cache behind the verifier (AUTH_JWKS_URL), fetched at start-up.
    jwks: JwksKeys | None = None
    clients: Clients | None = None

    def connected(self) -> Clients:
        """The clients; an internal error when used before start-up finished."""
        if self.clients is None:
            raise InternalError()
        return self.clients

    def rpc_timeout(self) -> float:
        """Deadline of ordinary calls, in seconds."""
        return self.settings.grpc_deadline_seconds


async def get_state(request: Request) -> EdgeState:
    """FastAPI dependency: the app's state.

    A coroutine on purpose: FastAPI runs a plain ``def`` dependency in its thread
    pool, a thread hop on every request for a single attribute read.
    """
    state: EdgeState = request.app.state.edge
    return state


State = Annotated[EdgeState, Depends(get_state)]
