"""firewall: one nftables ruleset per host, generated from the service catalogue.

Input and forward drop by default; each catalogue service of the host's roles opened to its
exposure (public, site LANs, management, peer gateway); gateways forward only between their
site's LAN and the tunnel. Applied safely: checked, old ruleset saved, rollback armed, applied
atomically, confirmed over a fresh SSH connection, then the rollback is disarmed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, deploy, operation
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, systemd

from bulwark import catalogue
from bulwark.deploying import put_file, render_for_deploy
from bulwark.exposure import (
    VPN_INTERFACE,
    host_openings,
    management_sources,
    port_span,
    site_lans,
)
from bulwark.plan import ManagedFile
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "firewall"

RULESET = "/etc/nftables.conf"  # what nftables.service loads at boot
CANDIDATE = "/etc/bulwark/nftables.candidate"  # uploaded and checked before it goes live
ROLLBACK = "/run/bulwark/nftables.rollback"  # the live ruleset saved just before the switch
ROLLBACK_UNIT = "bulwark-nft-rollback"  # transient timer + service made by systemd-run
ROLLBACK_TIMER = "bulwark-nft-rollback.timer"
ROLLBACK_SERVICE = "bulwark-nft-rollback.service"
# Seconds after which the armed rollback restores the previous ruleset unless disarmed. The
# confirmation takes one SSH handshake; the margin covers a slow link.
ROLLBACK_AFTER_SECONDS = 60
# New SSH connections per source address before further ones are dropped for a minute. pyinfra,
# testinfra and the apply's confirmation each open one per host; scanners open many.
SSH_NEW_CONNECTION_RATE = "30/minute burst 30 packets"
# ICMP (ping, path MTU, unreachables) answered up to this rate; the rest is dropped.
ICMP_RATE = "20/second burst 50 packets"


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (ManagedFile(RULESET, "nftables.conf.j2", mode="0600", checker="nft"),)


def nft_ports(ports: Iterable[int]) -> str:
    """nftables port syntax: `993`, `50000-50100` or `{ 21, 25, 80 }`."""
    ports = sorted(set(ports))
    if len(ports) == 1:
        return str(ports[0])
    if span := port_span(ports):
        return f"{span[0]}-{span[1]}"
    return "{ " + ", ".join(str(port) for port in ports) + " }"


def _source_match(topology: Topology, sources) -> str:
    if sources is None:
        return ""
    if tuple(sources) == management_sources(topology):
        return "ip saddr @management_v4 "
    if tuple(sources) == site_lans(topology):
        return "ip saddr @site_lans_v4 "
    return "ip saddr { " + ", ".join(str(network) for network in sources) + " } "


def input_rules(topology: Topology, host: Host) -> list[str]:
    """One accept rule per distinct (sources, transport, ports); services sharing one merged."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for opening in host_openings(topology, host):
        key = (
            _source_match(topology, opening.sources),
            str(opening.service.transport),
            nft_ports(opening.ports),
        )
        merged.setdefault(key, []).append(opening.service.name)
    return [
        f'{source}{transport} dport {ports} ct state new accept comment "{", ".join(names)}"'
        for (source, transport, ports), names in merged.items()
    ]


def forward_rules(topology: Topology, host: Host) -> list[str]:
    """Gateways only: their LAN to the other sites' LANs through the tunnel, and back."""
    if not host.has_role("vpn"):
        return []
    own = topology.site(host.site).lan
    peers = ", ".join(str(site.lan) for site in topology.peer_sites(host.site))
    return [
        f'ip saddr {own} ip daddr {{ {peers} }} oifname "{VPN_INTERFACE}" accept',
        f'iifname "{VPN_INTERFACE}" ip saddr {{ {peers} }} ip daddr {own} accept',
    ]


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        "host": host.name,
        "site": host.site,
        "roles": host.roles,
        "management": [str(network) for network in management_sources(topology)],
        "site_lans": [str(network) for network in site_lans(topology)],
        "ssh_port": catalogue.service("ssh").port,
        "ssh_rate": SSH_NEW_CONNECTION_RATE,
        "icmp_rate": ICMP_RATE,
        "input_rules": input_rules(topology, host),
        "forward_rules": forward_rules(topology, host),
    }


def _confirm_fresh_connection(state, host) -> bool:
    """Open a NEW SSH connection (the deploy's own survives via conntrack) and run `true`.

    On failure, restore the saved ruleset through the old connection at once and fail the
    operation with a clear message; the armed timer is the backstop if even that is cut.
    """
    fresh = host.connector_cls(state, host)
    try:
        fresh.connect()
        confirmed, _ = fresh.run_shell_command(StringCommand("true"))
    except Exception:  # any failure to get in is a lock-out
        confirmed = False
    finally:
        if getattr(fresh, "client", None) is not None:
            fresh.client.close()
    if confirmed:
        return True
    # If even the deploy's own connection is cut, this answers only once the timer has fired.
    armed, _ = host.run_shell_command(
        StringCommand("systemctl", "is-active", "--quiet", ROLLBACK_TIMER)
    )
    if not armed:
        return _fail(
            host,
            "the new ruleset cut this deploy host off: the armed rollback restored the previous "
            f"ruleset after {ROLLBACK_AFTER_SECONDS} s; the new one was not installed",
        )
    host.run_shell_command(StringCommand("nft", "-f", ROLLBACK))
    host.run_shell_command(StringCommand("systemctl", "stop", ROLLBACK_TIMER))
    return _fail(
        host,
        "the new ruleset blocked a fresh SSH connection from this deploy host: the previous "
        "ruleset was restored at once; the new one was not installed",
    )


def _disarm_rollback(state, host) -> bool:
    """Stop the armed rollback; if it already fired, the new ruleset is gone: fail loudly."""
    armed, _ = host.run_shell_command(
        StringCommand("systemctl", "is-active", "--quiet", ROLLBACK_TIMER)
    )
    if armed:
        stopped, _ = host.run_shell_command(StringCommand("systemctl", "stop", ROLLBACK_TIMER))
        return stopped
    return _fail(
        host,
        f"the rollback fired before the new ruleset was confirmed (no answer within "
        f"{ROLLBACK_AFTER_SECONDS} s): the previous ruleset is back in place",
    )


def _fail(host, message: str) -> bool:
    host.log_styled(message, fg="red", log_func=logger.error)
    return False


@operation()
def safe_ruleset(candidate: str = CANDIDATE, target: str = RULESET):
    """Apply `candidate` if it differs from `target` or the live table is gone, without ever
    leaving the operator locked out: check, save, arm rollback, apply, confirm, disarm, install.
    """
    wanted = current_host.get_fact(Sha256File, path=candidate)
    installed = current_host.get_fact(Sha256File, path=target)
    live = current_host.get_fact(
        Command, command="nft list table inet bulwark >/dev/null 2>&1 && echo live || echo gone"
    )
    if wanted == installed and live == "live":
        current_host.noop("ruleset unchanged and live")
        return
    yield StringCommand("nft", "-c", "-f", QuoteString(candidate))
    yield StringCommand(
        "mkdir", "-p", "/run/bulwark", "&&",
        "{", "echo", "'flush ruleset';", "nft", "list", "ruleset;", "}", ">", ROLLBACK,
    )  # fmt: skip
    yield StringCommand(
        "systemctl",
        "stop",
        ROLLBACK_TIMER,
        ROLLBACK_SERVICE,
        "2>/dev/null",
        "||",
        "true",
    )
    yield StringCommand(
        "systemd-run",
        "--quiet",
        "--unit",
        ROLLBACK_UNIT,
        "--on-active",
        str(ROLLBACK_AFTER_SECONDS),
        "nft",
        "-f",
        ROLLBACK,
    )
    yield StringCommand("nft", "-f", QuoteString(candidate))
    yield FunctionCommand(_confirm_fresh_connection, (), {})
    yield FunctionCommand(_disarm_rollback, (), {})
    yield StringCommand("install", "-m", "0600", QuoteString(candidate), QuoteString(target))


@deploy("firewall")
def converge(secrets: SecretStore) -> None:
    """Stage the ruleset, apply it safely, and load it at boot (never `restart`: stop flushes)."""
    (rendered,) = render_for_deploy(ROLE, secrets)
    put_file(replace(rendered, path=CANDIDATE))
    apt.packages(name="firewall: nftables", packages=["nftables"], _retries=2)
    safe_ruleset()
    systemd.service(name="firewall: load at boot", service="nftables.service", enabled=True)
