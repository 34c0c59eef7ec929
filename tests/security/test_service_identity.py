"""Zero trust inside: every internal gRPC call proves who makes it, and may only do its job.

Real usage and generation servers (their own wiring, PostgreSQL, S3) on free ports with
SERVICE_KEY_FILE / SERVICE_TRUST_DIR; callers are real signed channels of the kit, or
hand-made tokens for the forgeries.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from generation.api.servicer import ALLOWED_CALLERS as GENERATION_CALLERS
from generation.settings import GenerationSettings
from generation.wiring import GenerationApp, build_app
from interior.generation.v1 import generation_pb2 as gpb
from interior.generation.v1 import generation_pb2_grpc
from interior.usage.v1 import usage_pb2 as upb
from interior.usage.v1 import usage_pb2_grpc
from kit.grpc_client import create_channel
from kit.grpc_server import GrpcServer
from kit.service_identity import (
    EDGE_API,
    GENERATION,
    IDENTITIES,
    OPERATOR,
    USAGE,
    WEBHOOK_GATEWAY,
    TokenSigner,
)
from kit.service_keys import generate_key_pair, load_private_key, write_private_key
from launcher.components import free_port
from testkit.plugin import S3Endpoint
from usage.api.servicer import ALLOWED_CALLERS as USAGE_CALLERS
from usage.cli import main as usage_cli
from usage.settings import UsageSettings
from usage.wiring import build_server, migrate

pytestmark = pytest.mark.integration

DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@dataclass
class Keys:
    """Key files: one private key per identity, their public keys in a trust dir."""

    root: Path

    @property
    def trust_dir(self) -> Path:
        return self.root / "trust"

    def private(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def make(self, name: str, *, trusted: bool = True, file_name: str | None = None) -> Path:
        private_pem, public = generate_key_pair()
        path = self.root / (file_name or f"{name}.key")
        write_private_key(path, private_pem)
        if trusted:
            self.trust_dir.mkdir(parents=True, exist_ok=True)
            (self.trust_dir / f"{file_name or name}.pub").write_bytes(public)
        return path

    def signer(self, name: str, key: Path | None = None) -> TokenSigner:
        return TokenSigner(name, key or self.private(name))


@dataclass
class System:
    keys: Keys
    usage_target: str
    generation_target: str
    usage_server: GrpcServer
    generation: GenerationApp
    # Kept: a channel nobody references is closed under its stub.
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def usage(self, caller: str, key: Path | None = None) -> usage_pb2_grpc.UsageServiceAsyncStub:
        channel = create_channel(
            self.usage_target, signer=self.keys.signer(caller, key), audience=USAGE
        )
        self.channels.append(channel)
        return usage_pb2_grpc.UsageServiceStub(channel)

    def generation_stub(self, caller: str) -> generation_pb2_grpc.GenerationServiceAsyncStub:
        channel = create_channel(
            self.generation_target, signer=self.keys.signer(caller), audience=GENERATION
        )
        self.channels.append(channel)
        return generation_pb2_grpc.GenerationServiceStub(channel)


@pytest.fixture(scope="module")
async def system(
    database_factory: Callable[[str], str],
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[System]:
    keys = Keys(tmp_path_factory.mktemp("identity"))
    for name in IDENTITIES:
        keys.make(name)
    usage_port, generation_port = free_port(), free_port()
    usage_target, generation_target = f"127.0.0.1:{usage_port}", f"127.0.0.1:{generation_port}"
    usage_url = database_factory("identity_usage")
    await migrate(usage_url)
    usage_server, _ = build_server(
        UsageSettings(
            USAGE_DATABASE_URL=usage_url,
            USAGE_GRPC_PORT=usage_port,
            GENERATION_GRPC_TARGET=generation_target,
            SERVICE_KEY_FILE=str(keys.private(USAGE)),
            SERVICE_TRUST_DIR=str(keys.trust_dir),
            SERVICE_TRUST_RECHECK_SECONDS=0,
        )
    )
    await usage_server.start()
    generation = await build_app(
        GenerationSettings.model_validate(
            dict(
                GENERATION_DATABASE_URL=database_factory("identity_generation"),
                USAGE_GRPC_TARGET=usage_target,
                WEBHOOK_BASE_URL="http://127.0.0.1:9",
                SWEEP_ENABLED=False,
                SERVICE_KEY_FILE=str(keys.private(GENERATION)),
                SERVICE_TRUST_DIR=str(keys.trust_dir),
                SERVICE_TRUST_RECHECK_SECONDS=0,
                **s3_server.env(),
            )
        ),
        port=generation_port,
    )
    await generation.server.start()
    system = System(keys, usage_target, generation_target, usage_server, generation)
    try:
        yield system
    finally:
        for channel in system.channels:
            await channel.close()
        await generation.server.stop(0)
        await usage_server.stop(0)


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _read_jobs(stub: Any) -> object:
    return await stub.GetJobs(gpb.GetJobsRequest(job_ids=[str(uuid.uuid4())]), timeout=10)


async def _first_change(stub: Any) -> None:
    """Read the change feed's first message (caught_up): a refused caller fails here."""
    call = stub.WatchJobs(gpb.WatchJobsRequest(), timeout=10)
    try:
        async for _ in call:
            return
    finally:
        call.cancel()


def _owner() -> str:
    return str(uuid.uuid4())


# -- usage


async def test_usage_methods_answer_only_their_declared_callers(system: System) -> None:
    owner = _owner()
    job = str(uuid.uuid4())
    calls: dict[str, Callable[[Any], Any]] = {
        "GetQuota": lambda s: s.GetQuota(upb.GetQuotaRequest(owner_id=owner), timeout=10),
        "Debit": lambda s: s.Debit(
            upb.DebitRequest(owner_id=owner, job_id=job, idempotency_key=f"d:{job}", reason="t"),
            timeout=10,
        ),
        "Credit": lambda s: s.Credit(
            upb.CreditRequest(owner_id=owner, job_id=job, idempotency_key=f"c:{job}", reason="t"),
            timeout=10,
        ),
        "SetPlan": lambda s: s.SetPlan(
            upb.SetPlanRequest(owner_id=owner, price_id="price_pro_monthly"), timeout=10
        ),
        "AuditLedger": lambda s: s.AuditLedger(upb.AuditLedgerRequest(), timeout=30),
    }
    assert set(calls) == set(USAGE_CALLERS) == set(_methods(upb, "UsageService"))
    for method, call in calls.items():
        for caller in sorted(IDENTITIES):
            code = await _code(call(system.usage(caller)))
            if caller in USAGE_CALLERS[method]:
                assert code not in DENIED, (method, caller, code)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (method, caller, code)


async def test_operator_commands_work_and_audit_reaches_generation_as_usage(
    system: System,
) -> None:
    operator = system.usage(OPERATOR)
    quota = await operator.SetPlan(
        upb.SetPlanRequest(owner_id=_owner(), price_id="price_pro_monthly"), timeout=10
    )
    assert quota.plan == "pro"
    # The audit pages ListJobOutcomes from generation with usage's own identity: a
    # refusal there would fail the whole call (UPSTREAM_ERROR).
    await operator.AuditLedger(upb.AuditLedgerRequest(), timeout=30)


async def test_generation_may_not_set_plans_or_audit(system: System) -> None:
    usage = system.usage(GENERATION)
    request = upb.SetPlanRequest(owner_id=_owner(), price_id="price_pro_monthly")
    assert await _code(usage.SetPlan(request, timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    audit = usage.AuditLedger(upb.AuditLedgerRequest(), timeout=10)
    assert await _code(audit) == grpc.StatusCode.PERMISSION_DENIED


# -- generation


async def test_generation_methods_answer_only_their_declared_callers(system: System) -> None:
    owner, job = _owner(), str(uuid.uuid4())
    event = json.dumps({"id": "pforged0unknown0000", "status": "processing"}).encode()
    calls = {
        "GetGeneration": lambda s: s.GetGeneration(
            gpb.GetGenerationRequest(owner_id=owner, job_id=job), timeout=10
        ),
        "CancelGeneration": lambda s: s.CancelGeneration(
            gpb.CancelGenerationRequest(owner_id=owner, job_id=job), timeout=10
        ),
        "DeleteGeneration": lambda s: s.DeleteGeneration(
            gpb.DeleteGenerationRequest(owner_id=owner, job_id=job), timeout=10
        ),
        "ApplyProviderEvent": lambda s: s.ApplyProviderEvent(
            gpb.ApplyProviderEventRequest(payload=event, delivery_id="msg_1"), timeout=10
        ),
        "ListJobOutcomes": lambda s: s.ListJobOutcomes(
            gpb.ListJobOutcomesRequest(page_size=10), timeout=10
        ),
        "SubmitGeneration": _submit_malformed,
        "ListGenerations": lambda s: s.ListGenerations(
            gpb.ListGenerationsRequest(owner_id=owner, page_size=5), timeout=10
        ),
        "WatchJobs": _first_change,
        "GetJobs": _read_jobs,
    }
    assert set(calls) == set(GENERATION_CALLERS) == set(_methods(gpb, "GenerationService"))
    for method, call in calls.items():
        for caller in sorted(IDENTITIES):
            code = await _code(call(system.generation_stub(caller)))
            if caller in GENERATION_CALLERS[method]:
                assert code not in DENIED, (method, caller, code)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (method, caller, code)


async def test_the_edge_cannot_apply_a_provider_result(system: System) -> None:
    event = json.dumps({"id": "pforged0edge000000", "status": "processing"}).encode()
    request = gpb.ApplyProviderEventRequest(payload=event, delivery_id="msg_forged")
    edge = system.generation_stub(EDGE_API)
    assert await _code(edge.ApplyProviderEvent(request, timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    gateway = system.generation_stub(WEBHOOK_GATEWAY)
    answer = await gateway.ApplyProviderEvent(request, timeout=10)
    assert answer.outcome == gpb.EVENT_OUTCOME_UNKNOWN_PREDICTION


async def test_the_edge_streams_a_submission_through_a_signed_channel(system: System) -> None:
    """The write() style of the edge (client streaming) carries the token too."""
    stub = system.generation_stub(EDGE_API)
    # Past the identity check, the servicer itself refuses the malformed stream.
    assert await _code(_submit_malformed(stub)) == grpc.StatusCode.INVALID_ARGUMENT


async def _submit_malformed(stub: generation_pb2_grpc.GenerationServiceAsyncStub) -> object:
    """A stream that starts with a chunk instead of the request, written like the edge."""
    call = stub.SubmitGeneration(timeout=10)
    # A refusal can land before the write: then write() raises it, with the status.
    await call.write(gpb.SubmitGenerationPart(chunk=gpb.InputChunk(data=b"not a request first")))
    await call.done_writing()
    return await call


def _methods(module: object, service: str) -> list[str]:
    descriptor = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    return [method.name for method in descriptor.methods]


# -- tokens that are not good enough


def _token(key: Ed25519PrivateKey, **claims: object) -> str:
    now = int(time.time())
    body: dict[str, object] = {"iss": EDGE_API, "aud": USAGE, "iat": now, "exp": now + 60}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="EdDSA")


async def _quota_with(system: System, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    async with create_channel(system.usage_target) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        request = upb.GetQuotaRequest(owner_id=_owner())
        return await _code(stub.GetQuota(request, timeout=10, metadata=metadata))


async def test_forged_or_stale_tokens_are_unauthenticated(system: System) -> None:
    edge_key = load_private_key(system.keys.private(EDGE_API))
    stranger = Ed25519PrivateKey.generate()
    now = int(time.time())
    cases = {
        "no token": (),
        "not bearer": (("authorization", "Basic abc"),),
        "garbage": (("authorization", "Bearer not.a.jwt"),),
        "bad signature": (("authorization", f"Bearer {_token(stranger)}"),),
        "wrong audience": (("authorization", f"Bearer {_token(edge_key, aud=GENERATION)}"),),
        "expired": (("authorization", f"Bearer {_token(edge_key, iat=now - 600, exp=now - 300)}"),),
        "too long-lived": (("authorization", f"Bearer {_token(edge_key, exp=now + 24 * 3600)}"),),
        "no expiry": (("authorization", f"Bearer {_token(edge_key, exp=None)}"),),
        "unknown caller": (("authorization", f"Bearer {_token(edge_key, iss='intruder')}"),),
        "hs256 with the public key": (
            ("authorization", "Bearer " + _hs256_with_public_key(system)),
        ),
    }
    for case, metadata in cases.items():
        assert await _quota_with(system, metadata) == grpc.StatusCode.UNAUTHENTICATED, case
    good = (("authorization", f"Bearer {_token(edge_key)}"),)
    assert await _quota_with(system, good) == grpc.StatusCode.OK


def _hs256_with_public_key(system: System) -> str:
    """The classic algorithm confusion: the public key used as an HMAC secret."""
    secret = (system.keys.trust_dir / f"{EDGE_API}.pub").read_bytes()
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": EDGE_API, "aud": USAGE, "iat": now, "exp": now + 60}
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_key_that_is_not_trusted_is_refused(system: System) -> None:
    stray = system.keys.make(OPERATOR, trusted=False, file_name="stray-operator")
    stub = system.usage(OPERATOR, key=stray)
    request = upb.SetPlanRequest(owner_id=_owner(), price_id="price_pro_monthly")
    assert await _code(stub.SetPlan(request, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED


# -- health, reflection


async def test_health_needs_no_token(system: System) -> None:
    for target in (system.usage_target, system.generation_target):
        async with create_channel(target) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def _reflection_code(target: str) -> grpc.StatusCode:
    """How a reflection call that sends nothing ends: OK where reflection is served.

    Nothing is written: a write racing the server's early UNIMPLEMENTED can turn it
    into INTERNAL (grpc/grpc#36066, grpcio's aio client), which would make this flaky.
    """
    async with create_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        try:
            async for _ in stub.ServerReflectionInfo(iter(()), timeout=5):
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def _reflected_services(target: str) -> list[str]:
    async with create_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in stub.ServerReflectionInfo(iter((request,)), timeout=5):
            return [service.name for service in answer.list_services_response.service]
    return []


async def test_reflection_is_on_in_development_only(
    database_factory: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(tmp_path)
    keys.make(USAGE)
    url = database_factory("identity_reflection")
    await migrate(url)
    for env, expected in (
        ("development", grpc.StatusCode.OK),
        ("production", grpc.StatusCode.UNIMPLEMENTED),
    ):
        monkeypatch.setenv("APP_ENV", env)
        server, _ = build_server(
            UsageSettings(
                USAGE_DATABASE_URL=url,
                USAGE_GRPC_PORT=0,
                SERVICE_KEY_FILE=str(keys.private(USAGE)),
                SERVICE_TRUST_DIR=str(keys.trust_dir),
            )
        )
        port = await server.start()
        try:
            target = f"127.0.0.1:{port}"
            assert await _reflection_code(target) == expected, env
            if env == "development":
                assert "interior.usage.v1.UsageService" in await _reflected_services(target)
        finally:
            await server.stop(0)


# -- rotation without restart


async def test_keys_rotate_without_a_restart(system: System) -> None:
    keys = system.keys
    old_copy = keys.root / "old-operator.key"
    write_private_key(old_copy, keys.private(OPERATOR).read_bytes())
    stub = system.usage(OPERATOR)  # one channel (and signer), kept through the rotation
    old_stub = system.usage(OPERATOR, key=old_copy)
    request = upb.SetPlanRequest(owner_id=_owner(), price_id="price_pro_monthly")
    assert await _code(stub.SetPlan(request, timeout=10)) == grpc.StatusCode.OK

    # 1. The new public key joins the trust dir next to the old one.
    new_private, new_public = generate_key_pair()
    (keys.trust_dir / f"{OPERATOR}.next.pub").write_bytes(new_public)
    # 2. The client's key file is switched in place: its calls keep working.
    write_private_key(keys.private(OPERATOR), new_private)
    assert await _code(stub.SetPlan(request, timeout=10)) == grpc.StatusCode.OK
    assert await _code(old_stub.SetPlan(request, timeout=10)) == grpc.StatusCode.OK
    # 3. The old public key is removed: the old key is refused, the new one works.
    (keys.trust_dir / f"{OPERATOR}.pub").unlink()
    assert await _code(old_stub.SetPlan(request, timeout=10)) == (grpc.StatusCode.UNAUTHENTICATED)
    assert await _code(stub.SetPlan(request, timeout=10)) == grpc.StatusCode.OK
    # The switched signer really signs with the new key (not a cached old token).
    signed = keys.signer(OPERATOR).token(USAGE)
    jwt.decode(signed, load_public_from(new_public), algorithms=["EdDSA"], audience=USAGE)


def load_public_from(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, Ed25519PublicKey)
    return key


# -- the operator CLI


def test_the_operator_cli_refuses_a_bad_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "operator.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    code = usage_cli(["--target", "127.0.0.1:1", "--key-file", str(bad), "audit"])
    assert code == 2
    assert "BAD_KEY_FILE" in capsys.readouterr().err


def test_the_operator_cli_names_the_server_it_could_not_reach(
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = f"127.0.0.1:{free_port()}"
    code = usage_cli(["--target", target, "--timeout", "2", "audit"])
    error = json.loads(capsys.readouterr().err)["error"]
    assert code == 2
    assert error["code"] in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert f"The usage service at {target} did not answer" in error["message"]


async def test_the_operator_cli_signs_as_the_operator(system: System) -> None:
    target = ["--target", system.usage_target]
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(usage_cli, [*target, "audit"], out, err)
    assert code == 2
    assert json.loads(err.getvalue())["error"]["code"] == "UNAUTHENTICATED"
    assert "OPERATOR_KEY_FILE" in err.getvalue()

    key = str(system.keys.private(OPERATOR))
    owner = _owner()
    out, err = io.StringIO(), io.StringIO()
    argv = [*target, "--key-file", key, "set-plan", owner, "price_pro_monthly"]
    assert await asyncio.to_thread(usage_cli, argv, out, err) == 0, err.getvalue()
    assert json.loads(out.getvalue())["plan"] == "pro"

    edge_key = str(system.keys.private(EDGE_API))  # not the operator: refused
    out, err = io.StringIO(), io.StringIO()
    argv = [*target, "--key-file", edge_key, "set-plan", owner, "price_pro_monthly"]
    assert await asyncio.to_thread(usage_cli, argv, out, err) == 2
    assert json.loads(err.getvalue())["error"]["code"] == "UNAUTHENTICATED"


# The policy written out by hand, apart from the code's own tables: the tests above prove
# the interceptor enforces whatever a table says, so only this catches a table widened
# (an edge allowed to debit or credit hands out generations; a gateway allowed to follow
# the change feed reads every owner's jobs).
EXPECTED_GENERATION_CALLERS = {
    "SubmitGeneration": {"edge-api"},
    "GetGeneration": {"edge-api"},
    "CancelGeneration": {"edge-api"},
    "DeleteGeneration": {"edge-api"},
    "ListGenerations": {"edge-api"},
    "WatchJobs": {"edge-api"},
    "GetJobs": {"edge-api"},
    "ApplyProviderEvent": {"webhook-gateway"},
    "ListJobOutcomes": {"usage", "operator"},
}
EXPECTED_USAGE_CALLERS = {
    "GetQuota": {"edge-api", "generation"},
    "Debit": {"generation"},
    "Credit": {"generation", "operator"},
    "SetPlan": {"operator"},
    "AuditLedger": {"operator"},
}


def test_each_rpc_allows_exactly_the_documented_callers() -> None:
    assert {m: set(c) for m, c in GENERATION_CALLERS.items()} == EXPECTED_GENERATION_CALLERS
    assert {m: set(c) for m, c in USAGE_CALLERS.items()} == EXPECTED_USAGE_CALLERS
