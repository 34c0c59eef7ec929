"""Where a service finds its runtime config: RUNTIME_CONFIG_FILE, else ./config/runtime.toml.

kit does not know where it is installed, so the default is relative to the
working directory (the repository root in development, /app in the image).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kit.opscli import EXIT_BAD_CONFIG, check_config
from kit.settings import ServiceSettings
from testkit.config import REPO_RUNTIME_CONFIG


@pytest.fixture
def no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_CONFIG_FILE", raising=False)


@pytest.mark.usefixtures("no_variable")
def test_the_default_is_config_runtime_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config").mkdir()
    shutil.copy(REPO_RUNTIME_CONFIG, tmp_path / "config" / "runtime.toml")
    monkeypatch.chdir(tmp_path)

    assert not ServiceSettings().runtime_config_file.is_absolute()
    assert check_config("svc", ServiceSettings) == 0
    capsys.readouterr()


@pytest.mark.usefixtures("no_variable")
def test_elsewhere_the_missing_file_is_named_with_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not found through kit's own location: only the working directory counts.
    monkeypatch.chdir(tmp_path)

    assert check_config("svc", ServiceSettings) == EXIT_BAD_CONFIG
    message = capsys.readouterr().err
    assert str(tmp_path / "config" / "runtime.toml") in message
    assert "RUNTIME_CONFIG_FILE" in message


def test_the_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_CONFIG_FILE", str(tmp_path / "mounted.toml"))

    assert ServiceSettings().runtime_config_file == tmp_path / "mounted.toml"
