"""A full run of the real system, then a scan of every service's log.

``python -m launcher`` starts every part as a subprocess (PostgreSQL, S3, the
emulator, the four services, Envoy) with secrets made up for this run and
LOG_LEVEL=DEBUG. Users then go through Envoy: submissions with marker prompts
(one with an input image, so signed URLs are made), polling, a render download,
a cancel, a delete, a moderation refusal, forged and misplaced tokens, a stale
webhook. After a clean stop, the logs of our services and Envoy must hold none
of the secrets, tokens, prompts, signed-URL signatures or e-mail addresses, and
every job transition line must carry ownerId, jobId, predictionId and status.

The emulator, PostgreSQL and the S3 server are stand-ins for outside systems:
their logs are not ours, so they are not scanned.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text as sql
from standardwebhooks import Webhook

from kit.logging import configure_logging
from launcher.components import ChildProcess
from launcher.config import Ports
from replicate_emulator.control import ControlClient
from testkit.stack import Stack
from tests.e2e.harness import User, jpeg_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXTERNAL_VARIABLES = (
    "DATABASE_URL", "GENERATION_DATABASE_URL", "USAGE_DATABASE_URL", "S3_ENDPOINT",
    "REPLICATE_API_BASE_URL", "WEBHOOK_BASE_URL", "GENERATION_GRPC_TARGET", "USAGE_GRPC_TARGET",
)  # fmt: skip
OUR_LOGS = ("generation.log", "usage.log", "edge-api.log", "webhook-gateway.log", "envoy.log")
EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Events that record a job's state: each must say whose job, which job and prediction, and
# where. Every ``job.*`` event is held to it; these must also appear in the run.
TRANSITIONS = {
    "job.submitted",
    "job.provider_accepted",
    "job.transition",
}
# The user's cancel ends the job as "job.canceled", or, when the provider's canceled
# webhook is applied first (a race either may win), as a "job.transition" to canceled.
CANCEL_ENDS = {("job.canceled", "canceled"), ("job.transition", "canceled")}
CONTEXT_KEYS = ("ownerId", "jobId", "predictionId", "status")


@dataclass
class FullRun:
    """What the run used (to search for) and what it logged."""

    forbidden: dict[str, str] = field(default_factory=dict)  # label -> text
    logs: dict[str, list[str]] = field(default_factory=dict)  # file -> lines
    job_ids: set[str] = field(default_factory=set)

    def forbid(self, label: str, text: str) -> None:
        self.forbidden[label] = text


def _token(user_id: uuid.UUID, secret: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "exp": now + timedelta(hours=1),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _wait(client: httpx.Client, job_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/v1/generations/{job_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def _scenario(run: FullRun, public_url: str, emulator_url: str, secrets_: dict[str, str]) -> None:
    """Everything a few users do in a day, through Envoy."""
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alice_token = _token(alice, secrets_["AUTH_JWT_SECRET"])
    bob_token = _token(bob, secrets_["AUTH_JWT_SECRET"])
    forged = _token(alice, "not-the-secret-but-long-enough-0123456789")
    for label, token in (
        ("alice token", alice_token),
        ("bob token", bob_token),
        ("forged", forged),
    ):
        run.forbid(label, token)
        run.forbid(f"{label} signature", token.rsplit(".", 1)[1])
    markers = {name: f"Quokkamarker{secrets.token_hex(4)}" for name in ("p1", "p2", "p3", "p4")}
    for name, marker in markers.items():
        run.forbid(f"prompt {name}", marker)
    email_key = f"jane.doe+{secrets.token_hex(3)}@example.com"
    email_prompt = f"email me at kim.{secrets.token_hex(3)}@example.org"
    run.forbid("e-mail in an idempotency key", email_key)
    run.forbid("e-mail in a prompt", email_prompt.rsplit(" ", 1)[1])

    control = ControlClient(emulator_url)
    with (
        httpx.Client(base_url=public_url, timeout=30, trust_env=False) as anonymous,
        httpx.Client(
            base_url=public_url,
            timeout=30,
            trust_env=False,
            headers={"Authorization": f"Bearer {alice_token}"},
        ) as a,
        httpx.Client(
            base_url=public_url,
            timeout=30,
            trust_env=False,
            headers={"Authorization": f"Bearer {bob_token}"},
        ) as b,
    ):
        first = a.post(
            "/api/v1/generations",
            json={"mode": "imagine", "prompt": f"A sunny living room, {markers['p1']} style"},
            headers={"Idempotency-Key": email_key},
        )
        assert first.status_code == 202, first.text
        done = _wait(a, first.json()["id"], {"succeeded"})
        run.job_ids.add(done["id"])
        render = anonymous.get(urlpath(done["variants"][0]["url"]))
        assert render.status_code == 200

        second = a.post(
            "/api/v1/generations",
            data={"mode": "redesign", "prompt": f"Warm timber, {markers['p2']} accents"},
            files={"input1": ("room.jpg", jpeg_bytes(), "image/jpeg")},
        )
        assert second.status_code == 202, second.text
        run.job_ids.add(_wait(a, second.json()["id"], {"succeeded"})["id"])

        control.set_faults(hold=True)
        third = b.post(
            "/api/v1/generations",
            json={"mode": "imagine", "prompt": f"A calm bedroom, {markers['p3']} linen"},
        )
        assert third.status_code == 202, third.text
        _wait(b, third.json()["id"], {"processing"})
        assert (
            b.patch(
                f"/api/v1/generations/{third.json()['id']}", json={"action": "cancel"}
            ).status_code
            == 200
        )
        control.set_faults(hold=False)
        run.job_ids.add(third.json()["id"])

        control.set_faults(fail_next=1)
        fourth = b.post(
            "/api/v1/generations",
            json={"mode": "imagine", "prompt": f"A bold hallway, {markers['p4']} tiles"},
        )
        assert fourth.status_code == 202, fourth.text
        assert _wait(b, fourth.json()["id"], {"failed", "succeeded"})["status"] == "failed"
        run.job_ids.add(fourth.json()["id"])

        assert a.delete(f"/api/v1/generations/{done['id']}").status_code == 200
        assert b.get(f"/api/v1/generations/{done['id']}").status_code == 404
        refused = b.post("/api/v1/generations", json={"mode": "imagine", "prompt": email_prompt})
        assert refused.status_code == 400
        assert (
            anonymous.get(
                "/api/v1/usage", headers={"Authorization": f"Bearer {forged}"}
            ).status_code
            == 401
        )
        assert (
            anonymous.get("/api/v1/usage", params={"access_token": alice_token}).status_code == 401
        )

        prediction = control.prediction(second.json()["predictionId"])
        body = json.dumps(prediction).encode()  # Replicate's webhook body, prompt and URLs included
        stale = datetime.now(UTC) - timedelta(minutes=6)
        signature = Webhook(secrets_["REPLICATE_WEBHOOK_SECRET"]).sign(
            "msg_stale", stale, body.decode()
        )
        replay = anonymous.post(
            "/api/v1/webhooks/replicate",
            content=body,
            headers={
                "webhook-id": "msg_stale",
                "webhook-timestamp": str(int(stale.timestamp())),
                "webhook-signature": signature,
                "content-type": "application/json",
            },
        )
        assert replay.status_code == 401
    control.close()


def urlpath(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


# Printed by the launcher once every part is ready.
READY_MARKER = "Ctrl-C stops everything."
START_TIMEOUT = 120.0


def _wait_ready(launcher: ChildProcess, output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if READY_MARKER in output.read_text(encoding="utf-8", errors="replace"):
            return
        if not launcher.alive():
            break
        time.sleep(0.2)
    raise AssertionError("the launcher did not start:\n" + output.read_text(errors="replace"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> FullRun:
    data_dir = tmp_path_factory.mktemp("full-run")
    made_up = {
        "AUTH_JWT_SECRET": secrets.token_urlsafe(40),
        "REPLICATE_API_TOKEN": "r8_" + secrets.token_hex(18),
        "REPLICATE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        "S3_SECRET_KEY": secrets.token_urlsafe(30),
    }
    ports = Ports.free()
    env = {
        **made_up,
        **ports.env(),
        "LAUNCHER_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "DEBUG",
        "EMULATOR_START_DELAY_MS": "50",
        "EMULATOR_RUN_DELAY_MS": "300",
        # Empty means unset: every part is the embedded one.
        **{variable: "" for variable in EXTERNAL_VARIABLES},
    }
    run = FullRun()
    for name, value in made_up.items():
        run.forbid(name, value)
    run.forbid("webhook key", made_up["REPLICATE_WEBHOOK_SECRET"].removeprefix("whsec_"))
    # `python -m launcher` in its own process, as `make run` does. (Forking PostgreSQL's
    # tools from this busy test process, full of gRPC threads, is not safe.)
    output = data_dir / "launcher.out"
    launcher = ChildProcess("launcher", [sys.executable, "-m", "launcher"], env, output)
    launcher.start()
    try:
        _wait_ready(launcher, output)
        _scenario(
            run,
            f"http://127.0.0.1:{ports.public}",
            f"http://127.0.0.1:{ports.emulator}",
            made_up,
        )
    finally:
        launcher.stop(grace=60)  # SIGTERM: the launcher stops every part; logs are complete
    run.logs = {
        name: (data_dir / "logs" / name).read_text(encoding="utf-8", errors="replace").splitlines()
        for name in OUR_LOGS
    }
    return run


def test_logs_hold_no_secrets_tokens_prompts_or_signatures(full_run: FullRun) -> None:
    assert all(full_run.logs.values()), {name: len(lines) for name, lines in full_run.logs.items()}
    leaks: list[str] = []
    for name, lines in full_run.logs.items():
        for number, line in enumerate(lines, 1):
            for label, text in full_run.forbidden.items():
                if text in line:
                    leaks.append(f"{name}:{number} {label}")
            for pattern in ("X-Amz-Signature", "X-Amz-Credential", "Bearer ey", "whsec_"):
                if pattern.lower() in line.lower():
                    leaks.append(f"{name}:{number} {pattern}")
            for address in EMAIL.findall(line):
                leaks.append(f"{name}:{number} e-mail {address}")
    assert leaks == []


def test_every_line_of_our_logs_is_one_json_object(full_run: FullRun) -> None:
    """One event a line, JSON: a plain-text line (a traceback, a library's print, a
    child process's stderr) is missed by every log pipeline that parses them, and its
    text escapes the redaction that runs on fields."""
    plain = []
    for name, lines in full_run.logs.items():
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                plain.append(f"{name}:{number} {line[:120]}")
    assert plain == []


def _events(full_run: FullRun) -> list[dict[str, Any]]:
    return [json.loads(line) for line in full_run.logs["generation.log"]]


def test_every_job_transition_line_carries_its_context(full_run: FullRun) -> None:
    job_events = [e for e in _events(full_run) if str(e.get("event", "")).startswith("job.")]
    missing = [
        (e["event"], [key for key in CONTEXT_KEYS if key not in e])
        for e in job_events
        if any(key not in e for key in CONTEXT_KEYS)
    ]
    assert missing == []
    assert {e["event"] for e in job_events} >= TRANSITIONS
    assert {(e["event"], e["status"]) for e in job_events} & CANCEL_ENDS
    # Every job of the run shows up, from submission to its end.
    seen = {(e["jobId"], e["event"], e["status"]) for e in job_events}
    ends: set[str] = set()
    for job_id in full_run.job_ids:
        assert (job_id, "job.submitted", "starting") in seen, job_id
        [end] = {s for j, _, s in seen if j == job_id} & {"succeeded", "canceled", "failed"}
        ends.add(end)
    assert ends == {"succeeded", "canceled", "failed"}
    # Once a prediction exists, the line names it.
    assert all(
        e["predictionId"]
        for e in job_events
        if e["event"] in (TRANSITIONS | {"job.canceled"}) - {"job.submitted"}
    )


# A database failure in the middle of a submission: the statement that fails carries
# the prompt as a parameter, and the request carried a bearer token.
_FAILING_INSERT = (
    """CREATE FUNCTION refuse_marked_jobs() RETURNS trigger AS $$
    BEGIN
        IF NEW.prompt LIKE '%Failmarker%' THEN
            RAISE EXCEPTION 'the test refuses this job';
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER refuse_marked_jobs BEFORE INSERT ON generation_jobs
    FOR EACH ROW EXECUTE FUNCTION refuse_marked_jobs()""",
)
_DROP_TRIGGER = (
    "DROP TRIGGER refuse_marked_jobs ON generation_jobs",
    "DROP FUNCTION refuse_marked_jobs()",
)


async def _execute(stack: Stack, *statements: str) -> None:
    async with stack.ctx.sessions() as session, session.begin():
        for statement in statements:
            await session.execute(sql(statement))


async def test_a_database_failure_mid_submission_logs_no_prompt_and_no_token(
    stack: Stack, user: User, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = f"Failmarker{secrets.token_hex(6)}"
    token = user.headers["Authorization"].removeprefix("Bearer ")
    # A caller that puts its token in the request id too: too long to be kept.
    user.headers["X-Request-ID"] = token
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # The stdlib handler writes to the stream of its configuration: the captured one.
    configure_logging("tests", "DEBUG")
    await _execute(stack, *_FAILING_INSERT)
    try:
        answer = await user.submit("imagine", prompt=f"A quiet study, {marker} oak")
    finally:
        await _execute(stack, *_DROP_TRIGGER)
        output = capsys.readouterr()
        configure_logging("tests", "INFO")
        root.handlers[:] = handlers
        root.setLevel(level)
    logged = output.out + output.err

    assert answer.status_code >= 500, answer.text  # the failure really happened
    assert "rpc.unexpected_error" in logged  # ... and was logged, traceback included
    assert marker not in logged
    assert token not in logged
    assert token.rsplit(".", 1)[1] not in logged
