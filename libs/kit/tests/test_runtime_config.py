"""The runtime config file: the repo's file loads; a bad one names the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.runtime_config import RuntimeConfigError, load_runtime_config
from testkit.config import REPO_RUNTIME_CONFIG


def test_repository_file_loads_with_the_seed_styles() -> None:
    config = load_runtime_config(REPO_RUNTIME_CONFIG)
    assert set(config.styles) >= {
        "coastal_au",
        "contemporary_au",
        "japandi",
        "scandi_au",
        "minimal_au",
        "midcentury_au",
        "industrial_au",
        "hamptons_au",
    }
    assert config.plans["free"].monthly_generations > 0
    assert config.uploads.max_bytes == 10 * 1024 * 1024
    assert config.uploads.signed_url_ttl_seconds == 300
    assert config.timings.stale_after_ms == 5000
    assert config.replicate.model == "google/nano-banana"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runtime.toml"
    path.write_text(REPO_RUNTIME_CONFIG.read_text() + "\n" + text)
    return path


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (
            '[plans.broken]\nname = "x"\nmonthly_generations = -1\n',
            "plans.broken.monthly_generations",
        ),
        ('[styles.bad]\nlabel = ""\nseed = "x"\n', "styles.bad.label"),
        ("[surprise]\nvalue = 1\n", "surprise"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, extra: str, named: str) -> None:
    with pytest.raises(RuntimeConfigError, match=named.replace(".", r"\.")):
        load_runtime_config(_write(tmp_path, extra))


def test_bad_value_in_known_table_is_named(tmp_path: Path) -> None:
    text = REPO_RUNTIME_CONFIG.read_text().replace("max_bytes = 10485760", "max_bytes = 0")
    path = tmp_path / "runtime.toml"
    path.write_text(text)
    with pytest.raises(RuntimeConfigError, match=r"uploads\.max_bytes"):
        load_runtime_config(path)


@pytest.mark.parametrize(
    ("line", "replacement", "named"),
    [
        # Each loaded, then failed on every request that used it: S3 signs for 7 days at
        # most; the quota's monthly figure is an int32 on the wire.
        ("signed_url_ttl_seconds = 300", "signed_url_ttl_seconds = 700000", "uploads"),
        ("monthly_generations = 200", "monthly_generations = 3000000000", "plans"),
        ("overall_timeout_ms = 600000", "overall_timeout_ms = 100000000000000", "timings"),
        ("request_timeout_seconds = 10.0", "request_timeout_seconds = inf", "replicate"),
    ],
)
def test_a_value_that_could_only_fail_later_is_refused_now(
    tmp_path: Path, line: str, replacement: str, named: str
) -> None:
    text = REPO_RUNTIME_CONFIG.read_text()
    assert line in text
    path = tmp_path / "runtime.toml"
    path.write_text(text.replace(line, replacement, 1))
    with pytest.raises(RuntimeConfigError, match=named):
        load_runtime_config(path)


def test_missing_free_plan_is_refused(tmp_path: Path) -> None:
    text = REPO_RUNTIME_CONFIG.read_text().replace("[plans.free]", "[plans.gratis]")
    path = tmp_path / "runtime.toml"
    path.write_text(text)
    with pytest.raises(RuntimeConfigError, match="free"):
        load_runtime_config(path)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("plans = [")
    with pytest.raises(RuntimeConfigError, match="not valid TOML"):
        load_runtime_config(broken)
    with pytest.raises(RuntimeConfigError, match="cannot read"):
        load_runtime_config(tmp_path / "absent.toml")


def test_empty_public_base_url_means_unset() -> None:
    from kit.settings import S3Settings

    settings = S3Settings(
        S3_ENDPOINT="s3:9000", S3_ACCESS_KEY="a", S3_SECRET_KEY="b", S3_PUBLIC_BASE_URL=" "
    )
    assert settings.s3_public_base_url is None


def test_output_hosts_default_to_replicates_delivery_hosts() -> None:
    config = load_runtime_config(REPO_RUNTIME_CONFIG)
    assert config.replicate.output_hosts == ("replicate.delivery", "*.replicate.delivery")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "cdn.example:8080", "*", "*.*.example.com", "Replicate.Delivery", ""],
)
def test_output_hosts_are_names_never_addresses_or_ports(tmp_path: Path, host: str) -> None:
    text = REPO_RUNTIME_CONFIG.read_text().replace(
        'output_hosts = ["replicate.delivery", "*.replicate.delivery"]',
        f'output_hosts = ["replicate.delivery", "{host}"]',
    )
    path = tmp_path / "runtime.toml"
    path.write_text(text)
    with pytest.raises(RuntimeConfigError, match=r"replicate\.output_hosts"):
        load_runtime_config(path)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("unsubmitted_grace_ms = 120000", "unsubmitted_grace_ms = 60000"),
        # A slower provider's create outlasts the default grace: refused, not shortened.
        ("request_timeout_seconds = 10.0", "request_timeout_seconds = 30.0"),
    ],
)
def test_a_grace_a_live_submission_could_outlast_is_refused(
    tmp_path: Path, before: str, after: str
) -> None:
    path = tmp_path / "runtime.toml"
    text = REPO_RUNTIME_CONFIG.read_text()
    assert before in text
    path.write_text(text.replace(before, after))
    with pytest.raises(RuntimeConfigError, match=r"timings\.unsubmitted_grace_ms"):
        load_runtime_config(path)


def test_the_longest_provider_call_counts_every_attempt_and_wait() -> None:
    config = load_runtime_config(REPO_RUNTIME_CONFIG)
    assert config.replicate.longest_call_seconds == 4 * 10.0 + 3 * 8.0
    assert config.timings.unsubmitted_grace_ms > config.replicate.longest_call_seconds * 1000
