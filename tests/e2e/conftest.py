"""Session fixture: the whole system, real parts, started once for the e2e suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from kit.runtime_config import Plan, load_runtime_config
from replicate_emulator.config import EmulatorConfig
from testkit.config import REPO_RUNTIME_CONFIG
from testkit.plugin import S3Endpoint
from testkit.stack import InProcessOptions, Stack, in_process_stack
from tests.e2e.harness import User, signed_base_url


def _options(keys: Path, s3: S3Endpoint) -> InProcessOptions:
    base = load_runtime_config(REPO_RUNTIME_CONFIG)
    # Tiny plans so quota tests do not need many generations.
    plans = {
        **base.plans,
        "price_test_one": Plan(name="one", monthly_generations=1),
        "price_test_two": Plan(name="two", monthly_generations=2),
    }
    return InProcessOptions(
        config=base.model_copy(update={"plans": plans}),
        emulator=EmulatorConfig(
            port=0,
            start_delay_seconds=0.05,
            run_delay_seconds=0.25,
            webhook_retry_base_seconds=0.05,
            webhook_max_attempts=5,
            # Every event of a run reaches the backend (Replicate drops logs/output
            # events within 500 ms of the last one; the emulator's own tests prove
            # that): intermediate events, duplicated or reordered, must change nothing.
            webhook_throttle_seconds=0,
            log_level="WARNING",
        ),
        identity_keys=keys,
        # These suites fire many parallel submits by one user to prove the
        # database's one-job-in-flight rule; the edge's per-user upload limit
        # (tested on its own) would refuse most of them before they got there.
        edge={"MAX_UPLOADS_PER_USER": 64, "S3_SIGNED_BASE_URL": signed_base_url(s3)},
        # Signed input URLs name the S3 server as localhost while the services reach
        # it as 127.0.0.1, as a deployment's public name and in-network name differ:
        # the provider (the emulator) and callers fetch every input through them.
        generation={"S3_SIGNED_BASE_URL": signed_base_url(s3)},
    )


@pytest.fixture(scope="session")
async def stack(
    database_factory: Callable[[str], str],
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    options = _options(tmp_path_factory.mktemp("service-keys"), s3_server)
    async with in_process_stack(options, database_factory, s3_server) as started:
        yield started


@pytest.fixture(scope="session", autouse=True)
async def books_balance_at_the_end(stack: Stack) -> AsyncIterator[None]:
    """After every end-to-end test has run, whatever their order: the books must balance.

    A failure here is reported as an error at teardown and fails the run.
    """
    yield
    discrepancies = await stack.audit()
    assert [(d.kind, d.job_id, d.detail) for d in discrepancies] == []


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
async def reset_emulator(stack: Stack) -> AsyncIterator[None]:
    await stack.control("reset")
    yield
    await stack.control("reset")


@pytest.fixture
def user(stack: Stack, http: httpx.AsyncClient, reset_emulator: None) -> User:
    return User(stack, http)


@pytest.fixture
def other_user(stack: Stack, http: httpx.AsyncClient) -> User:
    return User(stack, http)
