"""The lab's own containment, seen from inside each host: nothing leaves but SSH replies and apt."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

_TIMEOUT = "1"


def _reaches(host, address: str, port: int) -> bool:
    return host.run(f"nc -z -w {_TIMEOUT} {address} {port}").rc == 0


@pytest.fixture
def controller_listener() -> Iterator[int]:
    """A port the controller listens on at every address, as its own services might."""
    with socket.create_server(("0.0.0.0", 0)) as server:  # noqa: S104 - the point of the test
        yield server.getsockname()[1]


def test_hosts_have_no_default_route(host):
    assert host.check_output("ip -4 route show default") == ""


def test_apt_proxy_is_reachable(host, lab_plan):
    assert _reaches(host, str(lab_plan.bridge.ip), lab_plan.apt_proxy_port)


def test_other_controller_ports_are_not(host, lab_plan, controller_listener):
    assert not _reaches(host, str(lab_plan.bridge.ip), controller_listener)


def test_hosts_cannot_reach_each_other_over_management(host, lab_plan):
    """Each host tries its neighbour in inventory order (an unreachable try costs the timeout)."""
    names = [lab_host.name for lab_host in lab_plan.hosts]
    neighbour = lab_plan.hosts[(names.index(host.check_output("hostname")) + 1) % len(names)]
    assert not _reaches(host, str(neighbour.management.ip), 22)
