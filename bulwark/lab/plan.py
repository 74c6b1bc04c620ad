"""The lab's plan: which namespaces, links, addresses and routes the inventory asks for.

Pure: built from the validated topology and the inventory's `lab_*` / `ssh_*` data, so the
naming and address rules are unit-tested without root. Every name the lab creates on the
controller starts with `bulwark-` (namespaces) or `bwl-` (links), which is how `down` finds
leftovers of an unclean stop.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bulwark.errors import BulwarkError
from bulwark.topology import Topology

IPv4Interface = ipaddress.IPv4Interface
IPv4Network = ipaddress.IPv4Network

NETNS_PREFIX = "bulwark-"
LINK_PREFIX = "bwl-"
MANAGEMENT_BRIDGE = f"{LINK_PREFIX}mgmt"
# Inside each switch namespace the segment's bridge has this name.
SWITCH_BRIDGE = "br0"
INTERNET_NETNS = f"{NETNS_PREFIX}internet"
WAN_NETNS = f"{NETNS_PREFIX}wan"
# The kernel's interface names hold 15 characters.
_IFNAME_MAX = 15
# Routes the lab adds to the controller carry this protocol number: `down` flushes exactly them.
ROUTE_PROTOCOL = 199
# Blackholes lose to any real route of the same prefix: the management ranges stay reachable
# over the bridge while it exists and fall into the blackhole once it is gone.
BLACKHOLE_METRIC = 4242

_LAB_FIELDS = ("lab_management_bridge", "lab_wan", "lab_internet_address")
_SSH_FIELDS = ("ssh_user", "ssh_config_file", "ssh_known_hosts_file", "ssh_key")


@dataclass(frozen=True)
class LabHost:
    """One container: its namespace and its three interfaces' addresses."""

    name: str
    site: str
    lan: IPv4Interface
    management: IPv4Interface
    public: IPv4Interface | None
    extra_public: tuple[IPv4Interface, ...] = ()  # a proxy host's own addresses, on wan0 too

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}host-{self.name}"

    @property
    def management_port(self) -> str:
        """The controller-side end of the host's mgmt0, a port of the management bridge."""
        return link_name(f"{LINK_PREFIX}m-", self.name)

    @property
    def switch_port(self) -> str:
        """The switch-side end of the host's lan0 and wan0 (each in its own switch)."""
        return link_name("", self.name)


@dataclass(frozen=True)
class LabSite:
    name: str

    @property
    def netns(self) -> str:
        """The namespace holding the site LAN's bridge."""
        return f"{NETNS_PREFIX}lan-{self.name}"


@dataclass(frozen=True)
class SshSettings:
    user: str
    config_file: str
    known_hosts_file: str
    key: str


@dataclass(frozen=True)
class LabPlan:
    domain: str
    sites: tuple[LabSite, ...]
    hosts: tuple[LabHost, ...]
    bridge: IPv4Interface  # the controller's address on the management bridge
    wan: IPv4Network
    internet: IPv4Interface
    apt_proxy_port: int
    ssh: SshSettings
    # Every range the lab uses: blackholed in the controller's namespace while the lab exists.
    ranges: tuple[IPv4Network, ...]
    # Management ranges narrower than the bridge's: routed onto the bridge explicitly, so their
    # blackholes (more specific than the bridge's connected route) do not swallow SSH.
    management_routes: tuple[IPv4Network, ...]

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(host.name for host in self.hosts)
        raise BulwarkError(f"no lab host {name!r} (hosts: {known})")

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace the lab creates, switches first (hosts' veths land in them)."""
        return (
            *(site.netns for site in self.sites),
            WAN_NETNS,
            INTERNET_NETNS,
            *(host.netns for host in self.hosts),
        )


def link_name(prefix: str, name: str) -> str:
    """`prefix + name`, or `prefix` + a digest of `name` when that would not fit IFNAMSIZ."""
    candidate = f"{prefix}{name}"
    if len(candidate) <= _IFNAME_MAX:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"{prefix}{digest[: _IFNAME_MAX - len(prefix)]}"


def build_plan(topology: Topology, data: Mapping[str, Any]) -> LabPlan:
    """The plan for `topology`; `data` is the inventory's platform data (`lab_*`, `ssh_*`).

    Raises BulwarkError naming every missing or inconsistent field at once.
    """
    problems: list[str] = []
    missing = [name for name in (*_LAB_FIELDS, *_SSH_FIELDS, "apt_proxy") if not data.get(name)]
    if missing:
        raise BulwarkError(f"inventory data lacks the lab's fields: {', '.join(missing)}")
    try:
        bridge = IPv4Interface(data["lab_management_bridge"])
        wan = IPv4Network(data["lab_wan"], strict=True)
        internet_address = ipaddress.IPv4Address(data["lab_internet_address"])
    except ValueError as error:
        raise BulwarkError(f"inventory lab fields: {error}") from None
    internet = IPv4Interface(f"{internet_address}/{wan.prefixlen}")

    hosts = []
    for host in topology.hosts:
        site = topology.site(host.site)
        if host.management_address not in bridge.network:
            problems.append(
                f"{host.name}.management_address {host.management_address} is outside "
                f"lab_management_bridge {bridge.network}"
            )
        if host.public_address is not None and host.public_address not in wan:
            problems.append(
                f"{host.name}.public_address {host.public_address} is outside lab_wan {wan}"
            )
        public = (
            IPv4Interface(f"{host.public_address}/{wan.prefixlen}")
            if host.public_address is not None
            else None
        )
        for label, address in host.proxy_addresses:
            if address not in wan:
                problems.append(
                    f"{host.name}.proxy_addresses.{label} {address} is outside lab_wan {wan}"
                )
        hosts.append(
            LabHost(
                name=host.name,
                site=host.site,
                lan=IPv4Interface(f"{host.lan_address}/{site.lan.prefixlen}"),
                management=IPv4Interface(f"{host.management_address}/{bridge.network.prefixlen}"),
                public=public,
                extra_public=tuple(
                    IPv4Interface(f"{address}/{wan.prefixlen}")
                    for _, address in host.proxy_addresses
                ),
            )
        )
    if bridge.ip in {host.management.ip for host in hosts}:
        problems.append(f"lab_management_bridge {bridge.ip} is also a host's management_address")
    if internet_address not in wan or internet_address in (
        wan.network_address,
        wan.broadcast_address,
    ):
        problems.append(f"lab_internet_address {internet_address} is not a host address of {wan}")
    if internet_address in {host.public.ip for host in hosts if host.public}:
        problems.append(f"lab_internet_address {internet_address} is also a host's public_address")
    if internet_address in {extra.ip for host in hosts for extra in host.extra_public}:
        problems.append(f"lab_internet_address {internet_address} is also a host's proxy address")
    proxy = urlsplit(data["apt_proxy"])
    if proxy.hostname != str(bridge.ip):
        problems.append(
            f"apt_proxy {data['apt_proxy']} must be on lab_management_bridge {bridge.ip}: "
            "the lab's apt-cacher-ng listens there"
        )
    if problems:
        raise BulwarkError("; ".join(problems))

    ranges = {wan, bridge.network}
    for site in topology.sites:
        ranges.update((site.lan, site.public, site.management))
    return LabPlan(
        domain=topology.domain,
        sites=tuple(LabSite(site.name) for site in topology.sites),
        hosts=tuple(hosts),
        bridge=bridge,
        wan=wan,
        internet=internet,
        apt_proxy_port=proxy.port or 80,
        ssh=SshSettings(*(str(data[name]) for name in _SSH_FIELDS)),
        ranges=tuple(sorted(ranges)),
        management_routes=tuple(
            sorted(
                {site.management for site in topology.sites} - {bridge.network},
            )
        ),
    )
