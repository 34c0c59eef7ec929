"""free_port: ports no outgoing connection can take, never the same one twice."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from launcher import components
from launcher.components import ephemeral_ports, free_port


def test_ports_come_from_outside_the_kernels_ephemeral_range() -> None:
    # A port from bind(0) is one the kernel may give the next outgoing connection:
    # a server told to listen there could fail with "Address already in use".
    ephemeral = ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert not [port for port in ports if port in ephemeral]
    assert all(port >= 10_000 for port in ports)


def test_a_port_is_handed_out_once_and_can_be_listened_on() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    with socket.create_server(("0.0.0.0", ports[0])), socket.create_server(("0.0.0.0", ports[-1])):
        pass


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = free_port()
    components._handed_out.discard(taken)
    with socket.create_server(("127.0.0.1", taken)):
        # The taken port is the first candidate every time.
        monkeypatch.setattr(random, "shuffle", lambda items: items.insert(0, taken))
        assert free_port() != taken


def test_the_kernel_picks_when_every_port_is_ephemeral(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = tmp_path / "ip_local_port_range"
    whole.write_text("1024\t65535\n")
    monkeypatch.setattr(components, "_EPHEMERAL_RANGE", whole)
    assert ephemeral_ports() == range(1024, 65536)
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_an_unreadable_range_falls_back_to_linuxs_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(components, "_EPHEMERAL_RANGE", tmp_path / "missing")
    assert ephemeral_ports() == range(32_768, 61_000)
    assert free_port() not in ephemeral_ports()
