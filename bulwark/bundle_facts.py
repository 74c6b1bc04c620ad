"""What `bulwark audit diff` compares first: the platform's promises, as data both bundles carry.

A render writes `facts.json` beside `ports.json`: per host its site, roles, encrypted volumes
(device, mount point, cipher, key slots by kind, unlock paths, header escrow), the retention
settings of its rendered journald and logrotate files and the VPN peers of its
rendered WireGuard configs, plus the TLS mode of every deployed service. Together with the port
matrix (`ports.json`), `semantic_changes` turns two bundles into one line per change: ports
opened or closed per host first, then sources and exposure, TLS modes, VPN peers, volumes,
retention, hosts and roles.

Everything here is read from data that holds no secret: the rendered files carry placeholders
only, and the one placeholder a WireGuard peer has (its pre-shared key) is left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from bulwark.audit import tls_table
from bulwark.render import RenderedFile
from bulwark.topology import Topology
from bulwark.volume_audit import host_volumes

# 2: each volume is an object (bulwark.volume_audit), no longer its name alone.
FACTS_FORMAT = 2

# Where the files are (prefixes of their paths).
JOURNALD_PATHS = ("/etc/systemd/journald.conf",)  # the file and journald.conf.d/
LOGROTATE_PATHS = ("/etc/logrotate.conf", "/etc/logrotate.d/")
WIREGUARD_DIR = "/etc/wireguard/"
# journald settings that decide how long logs are kept, and how much of them.
JOURNALD_KEYS = ("Storage", "MaxRetentionSec", "MaxFileSec", "SystemMaxUse", "SystemKeepFree")
# logrotate directives that decide how long rotated logs are kept.
LOGROTATE_PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
LOGROTATE_KEYS = ("rotate", "maxage")
# WireGuard peer fields an auditor cares about (never PresharedKey: a secret's placeholder).
WIREGUARD_KEYS = {
    "PublicKey": "public_key",
    "Endpoint": "endpoint",
    "AllowedIPs": "allowed_ips",
    "PersistentKeepalive": "keepalive",
}


def bundle_facts(topology: Topology, files: Iterable[RenderedFile]) -> dict[str, Any]:
    """The facts of one render, sorted, as `facts.json` holds them."""
    by_host: dict[str, list[RenderedFile]] = {}
    for rendered in files:
        by_host.setdefault(rendered.host, []).append(rendered)
    addresses = {
        str(host.public_address): host.name for host in topology.hosts if host.public_address
    }
    hosts = {}
    for host in sorted(topology.hosts, key=lambda host: host.name):
        mine = sorted(by_host.get(host.name, []), key=lambda rendered: rendered.path)
        hosts[host.name] = {
            "site": host.site,
            "roles": sorted(host.roles),
            "volumes": [found.facts() for found in host_volumes(topology, host)],
            "retention": retention(mine),
            "vpn_peers": vpn_peers(mine, addresses),
        }
    return {
        "format": FACTS_FORMAT,
        "domain": topology.domain,
        "hosts": hosts,
        "tls": {
            row["service"]: {"ports": row["ports"], "tls": row["tls"]}
            for row in sorted(tls_table(topology), key=lambda row: row["service"])
        },
    }


def retention(files: Iterable[RenderedFile]) -> dict[str, str]:
    """`PATH: SETTING` -> value for the journald and logrotate files among `files`."""
    found: dict[str, str] = {}
    for rendered in files:
        if rendered.path.startswith(JOURNALD_PATHS):
            found.update(_journald(rendered))
        elif rendered.path.startswith(LOGROTATE_PATHS):
            found.update(_logrotate(rendered))
    return dict(sorted(found.items()))


def _journald(rendered: RenderedFile) -> dict[str, str]:
    found = {}
    for line in rendered.content.splitlines():
        key, equals, value = line.strip().partition("=")
        if equals and key.strip() in JOURNALD_KEYS:
            found[f"{rendered.path}: {key.strip()}"] = value.strip()
    return found


def _logrotate(rendered: RenderedFile) -> dict[str, str]:
    """Global directives as `PATH: rotate`; those of a block as `PATH [PATTERN]: rotate`."""
    found = {}
    block = None
    for raw in rendered.content.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.endswith("{"):
            block = line[:-1].strip()
            continue
        if line == "}":
            block = None
            continue
        words = line.split()
        if not words:
            continue
        where = rendered.path if block is None else f"{rendered.path} [{block}]"
        if words[0] in LOGROTATE_PERIODS:
            found[f"{where}: period"] = words[0]
        elif words[0] in LOGROTATE_KEYS and len(words) == 2:
            found[f"{where}: {words[0]}"] = words[1]
    return found


def vpn_peers(files: Iterable[RenderedFile], addresses: Mapping[str, str]) -> list[dict]:
    """The [Peer] sections of the WireGuard configs among `files`, each named by the host whose
    public address is its endpoint (`addresses`: address -> host name)."""
    peers = []
    for rendered in files:
        if not rendered.path.startswith(WIREGUARD_DIR) or not rendered.path.endswith(".conf"):
            continue
        path = PurePosixPath(rendered.path)
        for section in _peer_sections(rendered.content):
            endpoint = section.get("endpoint", "")
            address = endpoint.rsplit(":", 1)[0]
            peers.append(
                {
                    "interface": path.stem,
                    "peer": addresses.get(address, endpoint or section.get("public_key", "?")),
                    **section,
                }
            )
    return sorted(peers, key=lambda peer: (peer["interface"], peer["peer"]))


def _peer_sections(content: str) -> list[dict[str, str]]:
    sections: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for raw in content.splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = {} if line.lower() == "[peer]" else None
            if current is not None:
                sections.append(current)
            continue
        key, equals, value = line.partition("=")
        if current is not None and equals and key.strip() in WIREGUARD_KEYS:
            current[WIREGUARD_KEYS[key.strip()]] = value.strip()
    return sections


# --- comparing two bundles --------------------------------------------------------------------


def semantic_changes(
    old_ports: list[dict] | None,
    new_ports: list[dict] | None,
    old_facts: dict | None,
    new_facts: dict | None,
) -> list[str]:
    """One line per change, ports opened and closed first. `None`: that bundle lacks the file
    (a note says what could not be compared)."""
    lines = []
    if old_ports is not None and new_ports is not None:
        lines += _port_changes(old_ports, new_ports)
    if old_facts is not None and new_facts is not None:
        lines += _tls_changes(old_facts.get("tls", {}), new_facts.get("tls", {}))
        old_hosts, new_hosts = old_facts.get("hosts", {}), new_facts.get("hosts", {})
        lines += _vpn_changes(old_hosts, new_hosts)
        lines += _volume_changes(old_hosts, new_hosts)
        lines += _retention_changes(old_hosts, new_hosts)
        lines += _host_changes(old_hosts, new_hosts)
    elif old_ports is not None and new_ports is not None:
        lines += _tls_changes(_tls_from_ports(old_ports), _tls_from_ports(new_ports))
    return lines


def _port_items(ports: str) -> list[str]:
    """`21, 25, 80` -> each port; `50000-50100` stays one range."""
    return [item.strip() for item in ports.split(",") if item.strip()]


def _port_key(item: str) -> int:
    match = re.match(r"\d+", item)
    return int(match.group()) if match else 0


def _openings(rows: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(host, transport, port) -> its row of ports.json; a proxy's rows are on an address of
    their own, which then follows the host's name."""
    found = {}
    for row in rows:
        where = " ".join(str(row[key]) for key in ("host", "address") if key in row)
        for item in _port_items(str(row.get("ports", ""))):
            found[(where, str(row.get("transport")), item)] = row
    return found


def _opening_text(host: str, transport: str, port: str, row: dict) -> str:
    return (
        f"{host} {transport} {port} ({row.get('service')}; {row.get('exposure')}; "
        f"sources {row.get('sources')}; tls {row.get('tls')})"
    )


def _port_changes(old_rows: list[dict], new_rows: list[dict]) -> list[str]:
    old, new = _openings(old_rows), _openings(new_rows)

    def order(key: tuple[str, str, str]) -> tuple:
        host, transport, port = key
        return (host, _port_key(port), transport, port)

    opened = [
        f"port opened: {_opening_text(*key, new[key])}"
        for key in sorted(new.keys() - old, key=order)
    ]
    closed = [
        f"port closed: {_opening_text(*key, old[key])}"
        for key in sorted(old.keys() - new, key=order)
    ]
    moved = [
        f"port service changed: {key[0]} {key[1]} {key[2]}: "
        f"{old[key].get('service')} -> {new[key].get('service')}"
        for key in sorted(old.keys() & new.keys(), key=order)
        if old[key].get("service") != new[key].get("service")
    ]
    attributes = []
    old_services = {(row.get("host"), row.get("service")): row for row in old_rows}
    new_services = {(row.get("host"), row.get("service")): row for row in new_rows}
    for key in sorted(old_services.keys() & new_services.keys(), key=str):
        before, after = old_services[key], new_services[key]
        where = f"{key[0]} {after.get('service')} ({after.get('transport')} {after.get('ports')})"
        for field, label in (("exposure", "exposure"), ("sources", "firewall sources")):
            if before.get(field) != after.get(field):
                attributes.append(
                    f"{label} changed: {where}: {before.get(field)} -> {after.get(field)}"
                )
    return opened + closed + moved + attributes


def _tls_from_ports(rows: list[dict]) -> dict[str, dict]:
    return {
        str(row.get("service")): {"ports": row.get("ports"), "tls": row.get("tls")} for row in rows
    }


def _tls_changes(old: Mapping[str, dict], new: Mapping[str, dict]) -> list[str]:
    lines = []
    for service in sorted(old.keys() | new.keys()):
        before, after = old.get(service), new.get(service)
        if before is None:
            lines.append(f"service added: {service} ({after['ports']}), TLS {after['tls']}")
        elif after is None:
            lines.append(f"service removed: {service} ({before['ports']}), TLS {before['tls']}")
        elif before.get("tls") != after.get("tls"):
            lines.append(
                f"TLS mode changed: {service} ({after['ports']}): {before['tls']} -> {after['tls']}"
            )
    return lines


def _vpn_changes(old_hosts: Mapping[str, dict], new_hosts: Mapping[str, dict]) -> list[str]:
    lines = []
    for host in sorted(old_hosts.keys() | new_hosts.keys()):
        old = _peers(old_hosts.get(host))
        new = _peers(new_hosts.get(host))
        for key in sorted(old.keys() | new.keys()):
            interface, peer = key
            where = f"{host} {interface} peer {peer}"
            if key not in old:
                lines.append(f"VPN peer added: {where} ({_peer_text(new[key])})")
            elif key not in new:
                lines.append(f"VPN peer removed: {where} ({_peer_text(old[key])})")
            else:
                for field in sorted(old[key].keys() | new[key].keys()):
                    before, after = old[key].get(field), new[key].get(field)
                    if before != after:
                        lines.append(f"VPN peer changed: {where}: {field} {before} -> {after}")
    return lines


def _peers(host: dict | None) -> dict[tuple[str, str], dict]:
    if not host:
        return {}
    return {
        (peer.get("interface", "?"), peer.get("peer", "?")): {
            key: value for key, value in peer.items() if key not in ("interface", "peer")
        }
        for peer in host.get("vpn_peers", [])
    }


def _peer_text(peer: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(peer.items()))


def _volume_changes(old_hosts: Mapping[str, dict], new_hosts: Mapping[str, dict]) -> list[str]:
    """Volumes added and removed per host, then each field changed of those in both."""
    lines = []
    for host in sorted(old_hosts.keys() | new_hosts.keys()):
        old, new = _volumes(old_hosts.get(host)), _volumes(new_hosts.get(host))
        lines += [
            f"volume added: {host} {name}{_volume_text(new[name])}"
            for name in sorted(new.keys() - old.keys())
        ]
        lines += [
            f"volume removed: {host} {name}{_volume_text(old[name])}"
            for name in sorted(old.keys() - new.keys())
        ]
        for name in sorted(old.keys() & new.keys()):
            before, after = old[name], new[name]
            if not before or not after:  # a format 1 bundle names its volumes only
                continue
            for field in sorted(before.keys() | after.keys()):
                if before.get(field) != after.get(field):
                    lines.append(
                        f"volume changed: {host} {name}: {field} "
                        f"{_field_text(before.get(field))} -> {_field_text(after.get(field))}"
                    )
    return lines


def _volumes(host: dict | None) -> dict[str, dict]:
    """Volume name -> its fields; {} for a format 1 bundle's, which lists names only."""
    found = {}
    for entry in (host or {}).get("volumes", []):
        if isinstance(entry, str):
            found[entry] = {}
        else:
            found[str(entry.get("name"))] = {k: v for k, v in entry.items() if k != "name"}
    return found


def _volume_text(fields: dict) -> str:
    if not fields:
        return ""
    return (
        f" ({fields.get('device')} on {fields.get('mount_point')}, {fields.get('cipher')} "
        f"{fields.get('key_bits')} bits)"
    )


def _field_text(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return "; ".join(map(str, value)) or "(none)"
    return str(value)


def _retention_changes(old_hosts: Mapping[str, dict], new_hosts: Mapping[str, dict]) -> list[str]:
    """Of the hosts in both (a host added or removed is one line of its own)."""
    lines = []
    for host in sorted(old_hosts.keys() & new_hosts.keys()):
        old = (old_hosts.get(host) or {}).get("retention", {})
        new = (new_hosts.get(host) or {}).get("retention", {})
        for setting in sorted(old.keys() | new.keys()):
            before, after = old.get(setting, "(unset)"), new.get(setting, "(unset)")
            if before != after:
                lines.append(f"retention changed: {host} {setting}: {before} -> {after}")
    return lines


def _host_changes(old_hosts: Mapping[str, dict], new_hosts: Mapping[str, dict]) -> list[str]:
    lines = []
    for verb, names, hosts in (
        ("added", new_hosts.keys() - old_hosts.keys(), new_hosts),
        ("removed", old_hosts.keys() - new_hosts.keys(), old_hosts),
    ):
        for host in sorted(names):
            roles = ", ".join(hosts[host].get("roles", []))
            lines.append(f"host {verb}: {host} (site {hosts[host].get('site')}; roles {roles})")
    for host in sorted(old_hosts.keys() & new_hosts.keys()):
        before, after = old_hosts[host], new_hosts[host]
        if before.get("site") != after.get("site"):
            lines.append(f"site changed: {host}: {before.get('site')} -> {after.get('site')}")
        if before.get("roles") != after.get("roles"):
            lines.append(
                f"roles changed: {host}: {', '.join(before.get('roles', []))} -> "
                f"{', '.join(after.get('roles', []))}"
            )
    return lines
