"""A typed client generated from the served OpenAPI document drives the real stack.

The document is fetched from the running edge, ``openapi-python-client`` turns it
into a package in a fresh temporary directory (a subprocess, nothing cached
between runs), and the tests call the API only through that package: if the
document stops being good enough for a generated client, these fail.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from edge_api.openapi import OPERATION_IDS
from tests.e2e.harness import Stack, User, jpeg_bytes, make_token

PACKAGE = "interior_client"
# The generator's own documented escape hatch: it has no response type for image/*, and
# the document must keep saying image/jpeg (that is what the server sends).
# post_hooks: none, so the run neither needs ruff on PATH nor warns about it.
GENERATOR_CONFIG = f"""\
project_name_override: {PACKAGE}
package_name_override: {PACKAGE}
post_hooks: []
content_type_overrides:
  image/jpeg: application/octet-stream
"""
# Generating and type-checking take about four CPU seconds together; the bound leaves
# room and still keeps the suite from paying ~20 s for it (CPU seconds, which a busy
# machine does not inflate the way it does wall time).
MAX_CHILD_CPU_SECONDS = 15.0
# A hang (not a slow machine) is what this catches; the CPU bound is the real check.
SUBPROCESS_TIMEOUT_SECONDS = 120.0
# Calls as an application would write them: mypy --strict fails if any of these
# results were Any (warn_return_any) or of another type than the document promises.
TYPED_USAGE = f"""\
from {PACKAGE}.api.generations import get_generation, list_generations, submit_generation
from {PACKAGE}.client import AuthenticatedClient
from {PACKAGE}.models.error_body import ErrorBody
from {PACKAGE}.models.job_out import JobOut
from {PACKAGE}.models.job_page_out import JobPageOut
from {PACKAGE}.models.job_status import JobStatus
from {PACKAGE}.models.mode import Mode
from {PACKAGE}.models.submit_generation_json_body import SubmitGenerationJsonBody
from {PACKAGE}.types import UNSET


async def submit(client: AuthenticatedClient) -> JobOut | ErrorBody | None:
    body = SubmitGenerationJsonBody(mode=Mode.IMAGINE, prompt="p")
    return await submit_generation.asyncio(client=client, body=body)


def again(job: JobOut) -> SubmitGenerationJsonBody:
    # A job's settings are the very types a submission takes (shared enums).
    settings = job.settings
    return SubmitGenerationJsonBody(
        mode=settings.mode, style=settings.style or UNSET, room_type=settings.room_type or UNSET
    )


async def status(client: AuthenticatedClient, job_id: str) -> JobStatus | None:
    job = await get_generation.asyncio(job_id=job_id, client=client)
    return job.status if isinstance(job, JobOut) else None


async def page(client: AuthenticatedClient) -> JobPageOut | ErrorBody | None:
    return await list_generations.asyncio(client=client, limit=5)
"""


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _snake(operation_id: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation_id)


async def _run(*args: str, cwd: Path) -> str:
    """Run ``python -m <args>`` in ``cwd``; its combined output (it must succeed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SUBPROCESS_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


async def _generate(document: bytes, root: Path) -> None:
    """Generate the package into ``root/src``, failing on any generator warning."""
    (root / "openapi.json").write_bytes(document)
    (root / "config.yaml").write_text(GENERATOR_CONFIG)
    output = await _run(
        "openapi_python_client", "generate",
        "--path", "openapi.json",
        "--config", "config.yaml",
        # The generator refuses to write into an existing directory: a fresh one each run.
        "--output-path", f"src/{PACKAGE}",
        "--meta", "none",
        "--fail-on-warning",
        cwd=root,
    )  # fmt: skip
    assert "warning" not in output.lower(), output


async def _type_check(src: Path) -> None:
    """mypy --strict on the generated package and on typed calls into it (no cache kept)."""
    (src / "typed_usage.py").write_text(TYPED_USAGE)
    await _run(
        "mypy", "--strict", "--no-incremental", "--cache-dir", "/dev/null",
        PACKAGE, "typed_usage.py",
        cwd=src,
    )  # fmt: skip


@pytest.fixture(scope="module")
async def client_package(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Callable[[str], ModuleType]]:
    """A loader of the generated package's modules (by dotted name under it)."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        response = await http.get(f"{stack.api}/openapi.json")
    assert response.status_code == 200, response.text
    root = tmp_path_factory.mktemp("generated-client")
    before = _children_cpu_seconds()
    await _generate(response.content, root)
    await _type_check(root / "src")
    assert _children_cpu_seconds() - before < MAX_CHILD_CPU_SECONDS
    sys.path.insert(0, str(root / "src"))
    try:
        yield lambda name: importlib.import_module(f"{PACKAGE}.{name}")
    finally:
        sys.path.remove(str(root / "src"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@pytest.fixture
async def api(
    client_package: Callable[[str], ModuleType], stack: Stack, user: User
) -> AsyncIterator[Any]:
    """The generated AuthenticatedClient, signed in as ``user``."""
    client_module = client_package("client")
    client = client_module.AuthenticatedClient(
        base_url=stack.edge.base_url,
        token=make_token(user.id),
        raise_on_unexpected_status=True,
        timeout=httpx.Timeout(30.0),
    )
    async with client:
        yield client


def test_every_operation_id_is_a_generated_function(
    client_package: Callable[[str], ModuleType],
) -> None:
    generated = {
        path.stem
        for path in Path(client_package("api").__path__[0]).glob("*/*.py")
        if path.stem != "__init__"
    }

    assert generated == {_snake(name) for name in OPERATION_IDS.values()}
    assert {"submit_generation", "get_generation", "list_generations", "delete_generation"} <= (
        generated
    )


async def _wait_until_succeeded(
    load: Callable[[str], ModuleType], api: Any, job_id: str, timeout: float = 15.0
) -> Any:
    get_generation = load("api.generations.get_generation")
    succeeded = load("models.job_status").JobStatus.SUCCEEDED
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = await get_generation.asyncio(job_id=job_id, client=api)
        if job.status == succeeded:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last state {job}")


async def test_a_job_lives_and_is_deleted_through_the_generated_client(
    client_package: Callable[[str], ModuleType], api: Any
) -> None:
    load = client_package
    submit = load("api.generations.submit_generation")
    body_module = load("models.submit_generation_json_body")
    job_out = load("models.job_out").JobOut
    style = load("models.style").Style("japandi")
    body = body_module.SubmitGenerationJsonBody(
        mode=load("models.mode").Mode.IMAGINE, prompt="A calm reading nook", style=style
    )

    submitted = await submit.asyncio_detailed(client=api, body=body)
    assert submitted.status_code == 202, submitted.content
    assert isinstance(submitted.parsed, job_out)
    job_id = submitted.parsed.id

    finished = await _wait_until_succeeded(load, api, job_id)
    assert finished.variants
    assert finished.settings.style is style  # the job's settings use the submit's enum

    page = await load("api.generations.list_generations").asyncio(client=api, limit=1)
    assert isinstance(page, load("models.job_page_out").JobPageOut)
    assert [item.id for item in page.items] == [job_id]
    assert page.next_cursor is None

    deleted = await load("api.generations.delete_generation").asyncio_detailed(
        job_id=job_id, client=api
    )
    assert deleted.status_code == 200, deleted.content
    assert isinstance(deleted.parsed, job_out)

    after = await load("api.generations.get_generation").asyncio(job_id=job_id, client=api)
    assert isinstance(after, job_out)
    assert after.variants == []


async def test_a_photo_upload_and_its_render_go_through_the_generated_client(
    client_package: Callable[[str], ModuleType], api: Any, http: httpx.AsyncClient
) -> None:
    load = client_package
    body = load("models.submit_generation_files_body").SubmitGenerationFilesBody(
        mode=load("models.mode").Mode("redesign"),
        room_type=load("models.room_type").RoomType("living_room"),
        style=load("models.style").Style("coastal_au"),
        input1=load("types").File(
            payload=io.BytesIO(jpeg_bytes()), file_name="room.jpg", mime_type="image/jpeg"
        ),
    )

    submitted = await load("api.generations.submit_generation").asyncio_detailed(
        client=api, body=body
    )
    assert submitted.status_code == 202, submitted.content
    finished = await _wait_until_succeeded(load, api, submitted.parsed.id)
    assert finished.settings.mode.value == "redesign"
    assert len(finished.inputs) == 1

    [variant] = finished.variants
    render_id, file_name = httpx.URL(variant.url).path.split("/")[-2:]
    render = await load("api.public.get_render_file").asyncio_detailed(
        render_id=render_id, file_name=file_name, client=api
    )
    assert render.status_code == 200
    assert isinstance(render.parsed, load("types").File)
    assert render.parsed.payload.read() == (await http.get(variant.url)).content


async def test_an_unknown_job_decodes_as_the_error_body(
    client_package: Callable[[str], ModuleType], api: Any
) -> None:
    get_generation = client_package("api.generations.get_generation")

    answer = await get_generation.asyncio_detailed(job_id=str(uuid.uuid4()), client=api)

    assert answer.status_code == 404
    assert isinstance(answer.parsed, client_package("models.error_body").ErrorBody)
    code = client_package("models.error_detail_code").ErrorDetailCode
    assert answer.parsed.error.code == code.NOT_FOUND
    assert answer.parsed.error.message
