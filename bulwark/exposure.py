"""What each host lets in: the catalogue's services of its deployed roles, as firewall openings.

One pure function of (topology, host) feeds the nftables ruleset, the audit's port matrix and
the lab's scan expectations, so the three can never disagree. Only roles with a module count
(bulwark.registry): no port is ever open that no daemon of ours serves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bulwark import catalogue, registry
from bulwark.catalogue import Exposure, Service
from bulwark.topology import Host, Topology

Network = ipaddress.IPv4Network

# The WireGuard interface on gateways: the only way between the sites' LANs.
VPN_INTERFACE = "wg0"


@dataclass(frozen=True)
class Opening:
    """One service's ports opened on a host, to `sources` (None: from anywhere)."""

    service: Service
    sources: tuple[Network, ...] | None

    @property
    def ports(self) -> tuple[int, ...]:
        return self.service.ports


def port_span(ports: tuple[int, ...] | list[int]) -> tuple[int, int] | None:
    """(first, last) when `ports` are one contiguous run of two or more, else None."""
    if len(ports) > 1 and list(ports) == list(range(ports[0], ports[-1] + 1)):
        return ports[0], ports[-1]
    return None


def management_sources(topology: Topology) -> tuple[Network, ...]:
    """Who may SSH in: every site's management network and the inventory's admin networks."""
    networks = {site.management for site in topology.sites} | set(topology.admin_networks)
    return tuple(sorted(networks))


def site_lans(topology: Topology) -> tuple[Network, ...]:
    """Every site's LAN; the other site's arrives through the VPN."""
    return tuple(sorted(site.lan for site in topology.sites))


def peer_gateways(topology: Topology, host: Host) -> tuple[Network, ...]:
    """The other sites' gateways' public addresses, as /32 networks."""
    return tuple(
        sorted(
            Network(f"{gateway.public_address}/32")
            for gateway in topology.hosts_with_role("gateway")
            if gateway.site != host.site and gateway.public_address is not None
        )
    )


def _sources(topology: Topology, host: Host, service: Service) -> tuple[Network, ...] | None:
    if service.exposure is Exposure.PUBLIC:
        return None
    if service.exposure is Exposure.MANAGEMENT:
        return management_sources(topology)
    if service.exposure is Exposure.SITE:
        return site_lans(topology)
    if service.exposure is Exposure.PEER_GATEWAY:
        return peer_gateways(topology, host)
    raise ValueError(f"{service.name}: exposure {service.exposure} is never opened")


def host_openings(topology: Topology, host: Host) -> tuple[Opening, ...]:
    """The openings of `host`'s deployed roles, in catalogue order; local-only services are
    left out."""
    roles = [role.name for role in registry.deployed_roles(host)]
    return tuple(
        Opening(service, _sources(topology, host, service))
        for service in catalogue.services_for_roles(roles)
        if service.exposure is not Exposure.LOCAL
    )


def public_ports(topology: Topology, host: Host) -> dict[str, tuple[int, ...]]:
    """Transport -> sorted ports anyone on the internet can reach on `host`."""
    ports: dict[str, set[int]] = {}
    for opening in host_openings(topology, host):
        if opening.sources is None:
            ports.setdefault(opening.service.transport, set()).update(opening.ports)
    return {transport: tuple(sorted(found)) for transport, found in sorted(ports.items())}
