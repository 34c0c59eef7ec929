"""What crosses to a decode worker: the upload's name (no copy) and the checks' answer."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import IO

import pytest
from PIL import Image

from generation.domain import decoder as decoder_module
from generation.domain import image_clean, image_worker
from generation.domain.decoder import ImageDecoder
from generation.domain.image_clean import ImageLimits
from generation.domain.image_worker import clean_in_worker
from kit.runtime_config import Uploads
from testkit.recording import record_results
from tests.badinput import hostile

SMALL_JPEG = hostile.jpeg()


@pytest.fixture(autouse=True)
def _no_cpu_limit_on_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """``clean_in_worker`` called here runs in pytest's own process: its CPU budget
    (RLIMIT_CPU, meant for a worker) would end the whole test run with SIGXCPU a few
    CPU seconds later."""
    monkeypatch.setattr(image_worker, "limit_cpu", lambda seconds: None)


async def test_a_named_upload_is_read_by_the_worker_in_place_others_are_copied(
    decoder: ImageDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = record_results(monkeypatch, decoder_module, "_named_copy")
    with tempfile.NamedTemporaryFile() as named:
        named.write(SMALL_JPEG)
        image = await decoder.clean(named, "input1")
        image.close()
        assert (image.mime_type, image.width, image.height) == ("image/jpeg", 64, 48)
        assert copies == []
    image = await decoder.clean(io.BytesIO(SMALL_JPEG), "input1")
    image.close()
    assert len(copies) == 1


def test_a_worker_given_the_checks_answer_does_not_scan_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "upload"
    source.write_bytes(SMALL_JPEG)
    out = tmp_path / "clean"
    out.write_bytes(b"")
    limits = ImageLimits.of(Uploads())
    with source.open("rb") as file:
        checked = image_clean.check_before_decoding(file, limits, "input1")

    def scanned_again(*args: object) -> tuple[str, int, int]:
        raise AssertionError("the pre-decode checks ran twice")

    monkeypatch.setattr(image_clean, "check_before_decoding", scanned_again)
    kind, _, width, height, size = clean_in_worker(
        str(source), str(out), limits, 5, "input1", checked
    )
    assert (kind, width, height) == ("image/jpeg", 64, 48)
    assert out.stat().st_size == size > 0


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (SMALL_JPEG, "image/jpeg"),  # stripped losslessly
        (hostile.encode(Image.new("RGB", (40, 30), "teal"), "WEBP"), "image/webp"),  # re-encoded
    ],
    ids=["lossless", "reencoded"],
)
def test_a_worker_writes_the_cleaned_image_straight_into_the_services_file(
    data: bytes, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_copy_first() -> IO[bytes]:
        raise AssertionError("the cleaned image went through a spool of the worker's own")

    monkeypatch.setattr(image_clean, "memory_spool", no_copy_first)
    source = tmp_path / "upload"
    source.write_bytes(data)
    out = tmp_path / "clean"
    out.write_bytes(b"stale bytes of an earlier attempt, longer than nothing")
    result = clean_in_worker(str(source), str(out), ImageLimits.of(Uploads()), 5, "input1")
    assert result[0] == kind
    assert out.stat().st_size == result[4]
    with Image.open(out) as cleaned:
        cleaned.load()
        assert not cleaned.getexif()
