"""A full TCP scan of every public address, from the internet: exactly the catalogue is open.

A port opens only if the host's firewall allows it (the catalogue's public services of the host's
roles) and a daemon listens. Roles that have no module yet leave their ports allowed but closed;
every implemented role's public ports must answer.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from bulwark import catalogue, registry
from bulwark.exposure import host_openings

_CONCURRENCY = 400
_CONNECT_TIMEOUT = 3


async def _open_ports(address: str, ports: range) -> set[int]:
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def probe(port: int) -> int | None:
        async with gate:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, port), _CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                return None
            writer.close()
            return port

    found = await asyncio.gather(*(probe(port) for port in ports))
    return {port for port in found if port is not None}


def _expected_open(topology, host) -> set[int]:
    """Public TCP ports of the host's services whose role is implemented, but those that
    listen only on a client's demand (FTP's passive range) and the proxies (on addresses of
    their own)."""
    return {
        port
        for service in catalogue.services_for_roles(host.roles)
        if service.exposure is catalogue.Exposure.PUBLIC
        and service.transport is catalogue.Transport.TCP
        and registry.role(service.role).implemented
        and not service.on_demand
        and service.listen is None
        for port in service.ports
    }


def test_every_tcp_port_scanned_only_the_catalogue_answers(topology, public_host):
    opened = asyncio.run(_open_ports(str(public_host.public_address), range(1, 65536)))
    allowed = {
        port
        for opening in host_openings(topology, public_host)
        if opening.sources is None and opening.address is None
        and opening.service.transport is catalogue.Transport.TCP
        for port in opening.ports
    }  # fmt: skip
    assert opened <= allowed, f"open beyond the catalogue: {sorted(opened - allowed)}"
    missing = _expected_open(topology, public_host) - opened
    assert not missing, f"catalogue ports of deployed roles not answering: {sorted(missing)}"


def test_every_tcp_port_of_a_proxy_address_answers_but_ssh(topology):
    """A proxy's own address: each of its 65,534 ports is the proxy (tests/e2e/test_proxy.py
    shows what answers on sampled ports of every proxy address), SSH's is not. One address per
    gateway, a different proxy at each site: a full scan through a proxy leaves two connection
    tracking entries per port on the gateway (client to proxy, proxy to mail host) for two
    minutes, and three scans in a row would fill the lab kernel's table (262,144)."""
    for gateway, service in zip(
        topology.hosts_with_role("proxy"), catalogue.proxies(), strict=False
    ):
        address = str(gateway.proxy_address(service.name))
        opened = asyncio.run(_open_ports(address, range(1, 65536)))
        assert opened == set(service.ports), (address, sorted(set(range(1, 65536)) - opened))


def test_wireguard_refuses_the_internet(public_host):
    """UDP 51820 is for the peer gateway only: from here the firewall rejects it outright."""
    port = catalogue.service("wireguard").port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((str(public_host.public_address), port))
        sock.send(b"\x01" + bytes(147))  # the size of a WireGuard handshake initiation
        with pytest.raises(OSError) as refused:
            sock.recv(64)
    assert not isinstance(refused.value, TimeoutError), "dropped silently instead of refused"
