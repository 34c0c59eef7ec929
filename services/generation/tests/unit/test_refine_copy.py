"""Refine copies its source variant, then reads the source again (domain/refine.py):
whatever fails after the copy began, the copy is removed with the uploads."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from generation.domain.context import GenerationContext
from generation.domain.input_storage import with_source
from generation.domain.jobs import VariantRef
from generation.domain.refine import SourceRef
from generation.domain.states import JobStatus
from generation.domain.submit_request import SubmitCommand
from kit.errors import NotFound, UpstreamError
from kit.storage import StorageError
from services.generation.tests.rpc.fakes import make_job

OWNER = uuid.uuid4()


class DatabaseGone(Exception):
    """What a dropped connection raises (sqlalchemy's DBAPIError, OSError...)."""


async def _refine(source: uuid.UUID, **stores: Any) -> list[str]:
    """``with_source`` for a refine of ``source``'s variant 0, with the storage's ``copy``
    and ``remove`` and the ``reads`` given."""
    ctx = SimpleNamespace(
        storage=SimpleNamespace(copy=stores["copy"], remove=stores["remove"]),
        private_bucket="private",
        public_bucket="public",
        reads=stores["reads"],
        config=SimpleNamespace(replicate=SimpleNamespace(output_max_bytes=1024)),
    )
    refine = SubmitCommand(
        OWNER, None, "redesign", None, None, None, (), None, source=SourceRef(source, 0)
    )
    return await with_source(cast("GenerationContext", ctx), refine, [])


async def test_a_failed_reread_after_the_copy_leaves_no_object() -> None:
    source = uuid.uuid4()
    view = dataclasses.replace(
        make_job(OWNER, JobStatus.SUCCEEDED, id=source).view(),
        variants=(VariantRef(0, f"renders/{uuid.uuid4()}/0.jpg"),),
    )
    stored: dict[str, bytes] = {}
    reads_opened = 0

    @contextlib.asynccontextmanager
    async def reads() -> AsyncIterator[SimpleNamespace]:
        nonlocal reads_opened
        reads_opened += 1
        if reads_opened > 1:
            raise DatabaseGone("connection reset")

        async def view_of(owner_id: uuid.UUID, job_id: uuid.UUID) -> object:
            return view

        yield SimpleNamespace(reads=SimpleNamespace(view=view_of))

    async def copy(source_ref: tuple[str, str], dest: tuple[str, str], *rest: object) -> bool:
        stored[dest[1]] = b"copied"
        return True

    async def remove(bucket: str, keys: list[str]) -> None:
        for key in keys:
            stored.pop(key, None)

    with pytest.raises(DatabaseGone):
        await _refine(source, copy=copy, remove=remove, reads=reads)
    assert reads_opened == 2
    assert stored == {}, "the copied input is left in the private bucket, named by no job"


@pytest.mark.parametrize(("deleted", "answer"), [(True, NotFound), (False, UpstreamError)])
async def test_a_copy_cut_short_by_its_source_deletion_is_a_404(
    deleted: bool, answer: type[Exception]
) -> None:
    """The source's DELETE removed its file while the copy read it (the stream was cut):
    the source is gone, so the refine is a 404 like any deleted source, not a 502
    (seen in CI's refine race). A storage failure of a source still there stays a 502."""
    source = uuid.uuid4()
    live = dataclasses.replace(
        make_job(OWNER, JobStatus.SUCCEEDED, id=source).view(),
        variants=(VariantRef(0, f"renders/{uuid.uuid4()}/0.jpg"),),
    )
    views = iter([live, dataclasses.replace(live, variants=()) if deleted else live])

    @contextlib.asynccontextmanager
    async def reads() -> AsyncIterator[SimpleNamespace]:
        async def view_of(owner_id: uuid.UUID, job_id: uuid.UUID) -> object:
            return next(views)

        yield SimpleNamespace(reads=SimpleNamespace(view=view_of))

    async def copy(*args: object) -> bool:
        raise StorageError("object storage call failed: ProtocolError")

    async def remove(bucket: str, keys: list[str]) -> None:
        pass

    with pytest.raises(answer):
        await _refine(source, copy=copy, remove=remove, reads=reads)


def _reads_of(view: object) -> Any:
    @contextlib.asynccontextmanager
    async def reads() -> AsyncIterator[SimpleNamespace]:
        async def view_of(owner_id: uuid.UUID, job_id: uuid.UUID) -> object:
            return view

        yield SimpleNamespace(reads=SimpleNamespace(view=view_of))

    return reads


async def _nothing_removed(bucket: str, keys: list[str]) -> None:
    return None


async def test_a_source_variant_missing_from_storage_is_not_found() -> None:
    """The copy finds no object (its files removed) while the row still names the
    variant: a 404 like any deleted source, not a job charged for an input that is not
    there."""
    source = uuid.uuid4()
    view = dataclasses.replace(
        make_job(OWNER, JobStatus.SUCCEEDED, id=source).view(),
        variants=(VariantRef(0, f"renders/{uuid.uuid4()}/0.jpg"),),
    )

    async def copy(*_: object) -> bool:
        return False

    with pytest.raises(NotFound):
        await _refine(source, copy=copy, remove=_nothing_removed, reads=_reads_of(view))


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELED, JobStatus.PROCESSING])
async def test_a_source_that_did_not_succeed_is_not_found_even_with_variants(
    status: JobStatus,
) -> None:
    source = uuid.uuid4()
    view = dataclasses.replace(
        make_job(OWNER, status, id=source).view(),
        variants=(VariantRef(0, f"renders/{uuid.uuid4()}/0.jpg"),),
    )
    copied: list[object] = []

    async def copy(*args: object) -> bool:
        copied.append(args)
        return True

    with pytest.raises(NotFound):
        await _refine(source, copy=copy, remove=_nothing_removed, reads=_reads_of(view))
    assert copied == []
