"""What an outsider must not reach on the hosts' public addresses."""

from __future__ import annotations

import socket
import subprocess

import pytest

from bulwark import catalogue

# Long enough for a SYN-ACK across the lab's WAN bridge; a drop or reject ends sooner or so.
_CONNECT_TIMEOUT = 3


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=_CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def test_ssh_is_not_reachable_from_the_internet(public_host):
    ssh = catalogue.service("ssh")
    assert ssh.exposure is catalogue.Exposure.MANAGEMENT
    assert not _connects(str(public_host.public_address), ssh.port)


@pytest.mark.parametrize("port", catalogue.FORBIDDEN_PORTS)
def test_plaintext_twins_are_not_reachable(public_host, port):
    assert not _connects(str(public_host.public_address), port)


def test_the_internet_namespace_has_no_route_out():
    """Only the lab's WAN is connected here: nothing the clients send can leave the lab."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "default"], capture_output=True, text=True, check=True
    )
    assert routes.stdout == ""
