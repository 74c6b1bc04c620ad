"""What each host lets in: the catalogue's services of its deployed roles, as firewall openings.

One pure function of (topology, host) feeds the nftables ruleset, the audit's port matrix and
the lab's scan expectations, so the three can never disagree. Only roles with a module count
(bulwark.registry): no port is ever open that no daemon of ours serves, and an internal service
(Exposure.ROLE) opens only to the LAN addresses of the hosts whose deployed roles use it; when
no such host exists it is not opened at all.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from bulwark import catalogue, registry
from bulwark.catalogue import Clients, Exposure, Scope, Service
from bulwark.topology import Host, Topology

Network = ipaddress.IPv4Network

# The WireGuard interface on gateways: the only way between the sites' LANs.
VPN_INTERFACE = "wg0"
# The units that make the other sites' LANs reachable (roles/vpn.py): the tunnel on a gateway,
# the routes through it on every other host. What needs the other site waits for them.
VPN_UNIT = f"wg-quick@{VPN_INTERFACE}.service"
SITE_ROUTES_UNIT = "bulwark-site-routes.service"


@dataclass(frozen=True)
class Opening:
    """One service's ports opened on a host, to `sources` (None: from anywhere; never empty).
    `address`: a proxy's own address, the only one its ports open on (None: any of the host's)."""

    service: Service
    sources: tuple[Network, ...] | None
    address: ipaddress.IPv4Address | None = None

    @property
    def ports(self) -> tuple[int, ...]:
        return self.service.ports


def port_span(ports: tuple[int, ...] | list[int]) -> tuple[int, int] | None:
    """(first, last) when `ports` are one contiguous run of two or more, else None."""
    if len(ports) > 1 and list(ports) == list(range(ports[0], ports[-1] + 1)):
        return ports[0], ports[-1]
    return None


def port_runs(ports: Iterable[int]) -> list[tuple[int, int]]:
    """Each run of consecutive ports as (first, last), in order: a proxy's 65,534 ports are
    two runs."""
    runs: list[list[int]] = []
    for port in sorted(set(ports)):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return [(first, last) for first, last in runs]


@functools.cache
def ports_text(ports: tuple[int, ...]) -> str:
    """`993`, `50000-50100`, `21, 25, 80` or `1-21, 23-65535`: ports as an auditor reads them.

    Cached: the reports write a service's ports once per host that opens them, and a proxy's
    are 65,534."""
    return ", ".join(
        str(first) if first == last else f"{first}-{last}" for first, last in port_runs(ports)
    )


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


def client_hosts(topology: Topology, host: Host, clients: Clients) -> tuple[Host, ...]:
    """The hosts deploying `clients.role` in `host`'s own site (SAME_SITE, `host` included) or
    in the other sites (PEER_SITE), in inventory order."""
    same_site = clients.scope is Scope.SAME_SITE
    # What registry.deployed_roles says of each candidate, asked once rather than per host:
    # this runs for every internal service of every host (quadratic in the inventory's size).
    role = registry.role(clients.role)
    if not role.implemented:
        return ()
    return tuple(
        candidate
        for candidate in topology.hosts
        if (candidate.site == host.site) == same_site
        and (role.every_host or candidate.has_role(role.name))
    )


@functools.lru_cache(maxsize=65536)
def host_network(address: ipaddress.IPv4Address) -> Network:
    """`address` as a /32 network (made once per address: the rulesets of a large inventory
    name the same hosts thousands of times)."""
    return Network((address, 32))


# role_sources per topology (by identity: hashing a topology walks all its hosts), then per
# site and service: every host of a site gets the same answer, and a ruleset, the audit and the
# HTML report each ask it for every internal service of every host.
_SOURCES: dict[int, tuple[Topology, dict[tuple[str, Service], tuple[Network, ...]]]] = {}
_SOURCES_TOPOLOGIES = 8


def role_sources(topology: Topology, host: Host, service: Service) -> tuple[Network, ...]:
    """The LAN addresses (as /32) of every host of `service.clients`; empty when none exists.
    LAN addresses: the same site's hosts reach `host` on the LAN, the other sites' through the
    VPN, which routes their LANs without translating addresses."""
    held = _SOURCES.get(id(topology))
    if held is None or held[0] is not topology:
        if len(_SOURCES) >= _SOURCES_TOPOLOGIES:
            _SOURCES.clear()
        held = _SOURCES[id(topology)] = (topology, {})
    key = (host.site, service)
    if key not in held[1]:
        held[1][key] = tuple(
            sorted(
                {
                    host_network(client.lan_address)
                    for clients in service.clients
                    for client in client_hosts(topology, host, clients)
                }
            )
        )
    return held[1][key]


def _sources(topology: Topology, host: Host, service: Service) -> tuple[Network, ...] | None:
    if service.exposure is Exposure.PUBLIC:
        return None
    if service.exposure is Exposure.MANAGEMENT:
        return management_sources(topology)
    if service.exposure is Exposure.ROLE:
        return role_sources(topology, host, service)
    if service.exposure is Exposure.PEER_GATEWAY:
        return peer_gateways(topology, host)
    raise ValueError(f"{service.name}: exposure {service.exposure} is never opened")


def host_openings(topology: Topology, host: Host) -> tuple[Opening, ...]:
    """The openings of `host`'s deployed roles, in catalogue order; local-only services, and
    services whose allowed sources resolve to nobody (a client role without a host), are left
    out: no source, no rule."""
    roles = [role.name for role in registry.deployed_roles(host)]
    openings = (
        Opening(
            service,
            _sources(topology, host, service),
            host.own_address(service),
        )
        for service in catalogue.services_for_roles(roles)
        if service.exposure is not Exposure.LOCAL
    )
    return tuple(opening for opening in openings if opening.sources != ())


def public_ports(topology: Topology, host: Host) -> dict[str, tuple[int, ...]]:
    """Transport -> sorted ports anyone on the internet can reach on `host`."""
    ports: dict[str, set[int]] = {}
    for opening in host_openings(topology, host):
        if opening.sources is None:
            ports.setdefault(opening.service.transport, set()).update(opening.ports)
    return {transport: tuple(sorted(found)) for transport, found in sorted(ports.items())}


def exempt_networks(topology: Topology) -> tuple[str, ...]:
    """Never banned nor rate-limited: who manages the platform, and the sites' own hosts."""
    networks = {*management_sources(topology), *site_lans(topology)}
    return tuple(str(network) for network in sorted(networks))
