"""The lab's networks: switch namespaces with bridges, veths into each host, the management bridge.

Every segment but management lives in namespaces the lab creates, so the controller's routing
table only ever sees the management bridge and the blackholes that keep lab ranges from leaking
out through the controller's uplink.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bulwark.errors import BulwarkError
from bulwark.lab import paths
from bulwark.lab.plan import (
    BLACKHOLE_METRIC,
    INTERNET_NETNS,
    LINK_PREFIX,
    MANAGEMENT_BRIDGE,
    NETNS_PREFIX,
    ROUTE_PROTOCOL,
    SWITCH_BRIDGE,
    WAN_NETNS,
    IPv4Network,
    LabPlan,
)
from bulwark.lab.system import installed, run

# The internet namespace's port on the WAN switch.
_INTERNET_PORT = "internet"


@dataclass(frozen=True)
class ControllerRoute:
    """A route of the controller's, as `ip -j route show table all` lists it."""

    dst: str
    dev: str | None
    protocol: str | None

    @property
    def is_lab(self) -> bool:
        return self.protocol == str(ROUTE_PROTOCOL) or (self.dev or "").startswith(LINK_PREFIX)


def foreign_overlaps(
    ranges: Iterable[IPv4Network],
    addresses: Iterable[tuple[str, ipaddress.IPv4Interface]],
    routes: Iterable[ControllerRoute],
    nameservers: Iterable[ipaddress.IPv4Address],
) -> list[str]:
    """What on the controller, not made by the lab, overlaps a lab range (pure, for `up`).

    The default route is not an overlap: it is exactly what the blackholes keep lab traffic
    away from.
    """
    found = []
    ranges = list(ranges)
    for ifname, interface in addresses:
        if ifname.startswith(LINK_PREFIX):
            continue
        for lab_range in ranges:
            if interface.network.overlaps(lab_range):
                found.append(f"address {interface} on {ifname} overlaps lab range {lab_range}")
    for route in routes:
        if route.is_lab or route.dst == "default":
            continue
        network = ipaddress.IPv4Network(route.dst, strict=False)
        for lab_range in ranges:
            if network.overlaps(lab_range):
                via = f" dev {route.dev}" if route.dev else f" ({route.protocol or 'static'})"
                found.append(f"route {route.dst}{via} overlaps lab range {lab_range}")
    for nameserver in nameservers:
        for lab_range in ranges:
            if nameserver in lab_range:
                found.append(f"nameserver {nameserver} is inside lab range {lab_range}")
    return sorted(set(found))


def check_no_overlap(plan: LabPlan) -> None:
    """Refuse to build a lab whose ranges collide with the controller's own networks."""
    addresses = [
        (link["ifname"], ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
        for link in json.loads(run(["ip", "-j", "-4", "addr", "show"]))
        for info in link.get("addr_info", [])
    ]
    routes = [
        ControllerRoute(route["dst"], route.get("dev"), _protocol(route))
        for route in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]))
    ]
    overlaps = foreign_overlaps(plan.ranges, addresses, routes, _nameservers())
    if overlaps:
        raise BulwarkError(
            "refusing to build the lab: "
            + "; ".join(overlaps)
            + " (change the lab ranges in the inventory)"
        )


def _protocol(route: dict) -> str | None:
    protocol = route.get("protocol")
    return None if protocol is None else str(protocol)


def _nameservers() -> list[ipaddress.IPv4Address]:
    found = []
    resolv = Path("/etc/resolv.conf")
    for line in resolv.read_text().splitlines() if resolv.exists() else []:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append(ipaddress.IPv4Address(words[1]))
            except ValueError:
                continue
    return found


def add_blackholes(plan: LabPlan) -> None:
    """First thing up, last thing down: no lab range can leave through the uplink meanwhile."""
    for lab_range in plan.ranges:
        _ip("route", "replace", "blackhole", str(lab_range), *_lab_route_tags())


def _lab_route_tags() -> tuple[str, ...]:
    return ("proto", str(ROUTE_PROTOCOL), "metric", str(BLACKHOLE_METRIC))


def add_management_bridge(plan: LabPlan) -> None:
    """The controller's bridge for SSH and the apt proxy: ports isolated, no IPv6."""
    _ip("link", "add", MANAGEMENT_BRIDGE, "type", "bridge")
    _disable_ipv6(MANAGEMENT_BRIDGE)
    _ip("addr", "add", str(plan.bridge), "dev", MANAGEMENT_BRIDGE)
    _ip("link", "set", MANAGEMENT_BRIDGE, "up")
    for network in plan.management_routes:
        _ip(
            "route",
            "replace",
            str(network),
            "dev",
            MANAGEMENT_BRIDGE,
            "src",
            str(plan.bridge.ip),
            "proto",
            str(ROUTE_PROTOCOL),
        )


def add_segments(plan: LabPlan) -> None:
    """Namespaces, switch bridges and every host's lan0, wan0 and mgmt0 with its address."""
    for netns in plan.namespaces:
        _ip("netns", "add", netns)
        _ip("-n", netns, "link", "set", "lo", "up")
    for switch in (*(site.netns for site in plan.sites), WAN_NETNS):
        _ip("-n", switch, "link", "add", SWITCH_BRIDGE, "type", "bridge")
        _ip("-n", switch, "link", "set", SWITCH_BRIDGE, "up")
    sites = {site.name: site for site in plan.sites}
    for host in plan.hosts:
        _switch_port(host.netns, "lan0", sites[host.site].netns, host.switch_port)
        _ip("-n", host.netns, "addr", "add", str(host.lan), "dev", "lan0")
        if host.public is not None:
            _switch_port(host.netns, "wan0", WAN_NETNS, host.switch_port)
            _ip("-n", host.netns, "addr", "add", str(host.public), "dev", "wan0")
            for extra in host.extra_public:  # a proxy's own address, after the host's own
                _ip("-n", host.netns, "addr", "add", str(extra), "dev", "wan0")
        _management_port(host.netns, host.management_port)
        _ip("-n", host.netns, "addr", "add", str(host.management), "dev", "mgmt0")
    _switch_port(INTERNET_NETNS, "wan0", WAN_NETNS, _INTERNET_PORT)
    _ip("-n", INTERNET_NETNS, "addr", "add", str(plan.internet), "dev", "wan0")


def _switch_port(netns: str, ifname: str, switch: str, port: str) -> None:
    _ip(
        "link", "add", ifname, "netns", netns, "type", "veth", "peer", "name", port, "netns", switch
    )
    _ip("-n", switch, "link", "set", port, "master", SWITCH_BRIDGE, "up")
    _ip("-n", netns, "link", "set", ifname, "up")


def _management_port(netns: str, port: str) -> None:
    _ip("link", "add", "mgmt0", "netns", netns, "type", "veth", "peer", "name", port)
    _disable_ipv6(port)
    _ip("link", "set", port, "master", MANAGEMENT_BRIDGE, "up")
    run(["bridge", "link", "set", "dev", port, "isolated", "on"])
    _ip("-n", netns, "link", "set", "mgmt0", "up")


def _disable_ipv6(ifname: str) -> None:
    """The controller's lab links carry IPv4 only: no link-local path around the blackholes."""
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")


def write_hosts_file(text: str) -> None:
    """`ip netns exec` bind-mounts this over /etc/hosts inside the internet namespace."""
    directory = paths.NETNS_ETC / INTERNET_NETNS
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts").write_text(text)


def lab_namespaces() -> list[str]:
    """Namespaces named like the lab's, whoever left them."""
    if not installed("ip"):
        return []
    listing = run(["ip", "-j", "netns", "list"]).strip()
    names = [entry["name"] for entry in json.loads(listing)] if listing else []
    return sorted(name for name in names if name.startswith(NETNS_PREFIX))


def lab_links() -> list[str]:
    if not installed("ip"):
        return []
    links = json.loads(run(["ip", "-j", "link", "show"]))
    return sorted(link["ifname"] for link in links if link["ifname"].startswith(LINK_PREFIX))


def lab_routes() -> list[str]:
    if not installed("ip"):
        return []
    listing = run(["ip", "-4", "route", "show", "table", "all", "proto", str(ROUTE_PROTOCOL)])
    return [line.strip() for line in listing.splitlines() if line.strip()]


def remove_all() -> None:
    """Remove every namespace, link, route and /etc/netns entry of the lab (leftovers too).

    Routes go last: the blackholes stay until nothing of the lab can carry traffic.
    """
    if not installed("ip"):
        return
    for netns in lab_namespaces():
        _ip("netns", "delete", netns)
    for link in lab_links():
        run(["ip", "link", "delete", link], check=False)
    for directory in paths.NETNS_ETC.glob(f"{NETNS_PREFIX}*"):
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    if paths.NETNS_ETC.is_dir() and not any(paths.NETNS_ETC.iterdir()):
        paths.NETNS_ETC.rmdir()
    _ip("route", "flush", "table", "all", "proto", str(ROUTE_PROTOCOL))


def _ip(*args: str) -> None:
    run(["ip", *args])
