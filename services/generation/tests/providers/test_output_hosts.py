"""Which output URLs may be fetched: delivery host names, schemes, ports, user info."""

from __future__ import annotations

import pytest

from generation.domain.provider import OutputRefused
from generation.providers.output_hosts import Origin, OutputHosts

DELIVERY = ("replicate.delivery", "*.replicate.delivery")
EMULATOR = "http://127.0.0.1:8090"


@pytest.fixture
def hosts() -> OutputHosts:
    """The production allow-list with the emulator as API base URL."""
    return OutputHosts(DELIVERY, api_base_url=EMULATOR)


@pytest.mark.parametrize(
    "url",
    [
        "https://replicate.delivery/xezq/abc/out.jpg",
        "https://pbxt.replicate.delivery/abc/out.jpg?sig=1",
        "https://a.b.replicate.delivery/out.jpg",
        "https://REPLICATE.DELIVERY/out.jpg",
        "https://replicate.delivery./out.jpg",
        "https://replicate.delivery:443/out.jpg",
        "http://127.0.0.1:8090/files/p/out.jpg",
    ],
)
def test_delivery_hosts_and_the_emulator_origin_are_allowed(hosts: OutputHosts, url: str) -> None:
    assert hosts.checked_url(url).path.endswith(".jpg")


@pytest.mark.parametrize(
    "url",
    [
        # Other hosts, look-alikes and suffix tricks.
        "https://evil.example/out.jpg",
        "https://replicate.delivery.evil.example/out.jpg",
        "https://evilreplicate.delivery/out.jpg",
        "https://replicate.deliveryx/out.jpg",
        "https://r\u0435plicate.delivery/out.jpg",  # a Cyrillic look-alike "e"
        "https://api.replicate.com/out.jpg",
        # Plain HTTP or another port on a delivery host.
        "http://replicate.delivery/out.jpg",
        "https://replicate.delivery:8443/out.jpg",
        # User info naming the delivery host in front of another one.
        "https://replicate.delivery@127.0.0.1/out.jpg",
        "https://replicate.delivery:x@169.254.169.254/latest/meta-data",
        "https://user@replicate.delivery/out.jpg",
        # Loopback, private and metadata literals in every spelling.
        "https://127.0.0.1/out.jpg",
        "https://2130706433/out.jpg",
        "https://0x7f000001/out.jpg",
        "https://0177.0.0.1/out.jpg",
        "https://0x7f.1/out.jpg",
        "https://[::1]/out.jpg",
        "https://[::ffff:127.0.0.1]/out.jpg",
        "https://[::ffff:7f00:1]/out.jpg",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/latest/meta-data",
        "https://localhost/out.jpg",
        # The emulator's host on another port or scheme is not the emulator.
        "http://127.0.0.1:8091/files/p/out.jpg",
        "https://127.0.0.1:8090/files/p/out.jpg",
        "http://127.0.0.1/files/p/out.jpg",
        # Not URLs an output can be fetched from at all.
        "file:///etc/passwd",
        "ftp://replicate.delivery/out.jpg",
        "data:,abc",
        "not a url",
        "https://",
    ],
)
def test_everything_else_is_refused(hosts: OutputHosts, url: str) -> None:
    with pytest.raises(OutputRefused):
        hosts.checked_url(url)


def test_the_refusal_names_the_host_but_never_the_signature(hosts: OutputHosts) -> None:
    with pytest.raises(OutputRefused) as refused:
        hosts.checked_url("https://evil.example/out.jpg?X-Amz-Signature=secret")

    assert refused.value.host == "evil.example"
    assert "secret" not in str(refused.value)


def test_replicates_real_api_is_not_an_output_origin() -> None:
    hosts = OutputHosts(DELIVERY, api_base_url="https://api.replicate.com")

    assert hosts.trusted_origin is None
    with pytest.raises(OutputRefused):
        hosts.checked_url("https://api.replicate.com/v1/files/x")


def test_the_api_origin_is_trusted_exactly() -> None:
    hosts = OutputHosts(DELIVERY, api_base_url="http://LocalHost:9000/")

    assert hosts.trusted_origin == Origin("http", "localhost", 9000)
    hosts.checked_url("http://localhost:9000/files/x.jpg")
    with pytest.raises(OutputRefused):
        hosts.checked_url("http://localhost:9001/files/x.jpg")


def test_an_empty_allow_list_refuses_delivery_hosts_too() -> None:
    with pytest.raises(OutputRefused):
        OutputHosts(()).checked_url("https://replicate.delivery/out.jpg")
