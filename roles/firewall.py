"""firewall: one nftables ruleset per host, generated from the service catalogue.

Input and forward drop by default; each catalogue service of the host's roles opened to its
exposure (public, management, peer gateway, or the hosts of its client roles, as a named set of
addresses); addresses that keep failing to log in dropped (bulwark.bruteforce); gateways forward
only between their site's LAN and the tunnel. Applied safely: checked, old ruleset saved,
rollback armed, applied atomically, confirmed over a fresh SSH connection, then the rollback is
disarmed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, deploy, operation
from pyinfra.api.facts import FactBase

from bulwark import bruteforce, catalogue, registry
from bulwark.catalogue import Exposure
from bulwark.deploying import install, packages, render_for_deploy, service
from bulwark.exposure import (
    VPN_INTERFACE,
    Opening,
    host_openings,
    management_sources,
    port_runs,
    public_ports,
    site_lans,
)
from bulwark.hoststate import host_state
from bulwark.livecheck import Difference, Finding, HostContext, LiveCheck, Reading, Verdict
from bulwark.operations import STAGED, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Unit, Units
from bulwark.render import RenderedFile
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
PACKAGES: tuple[str, ...] = ("nftables",)
# Loads RULESET at boot.
NFTABLES_UNIT = "nftables.service"
# The candidate is checked by nft itself, against this kernel, before it may be applied.
CANDIDATE_CHECK = Check(CANDIDATE, ("nft", "-c", "-f", STAGED))
# The digest of the live ruleset recorded right after each successful apply: a live ruleset
# that no longer matches it (a rule added by hand, a flush) is applied again.
APPLIED_DIGEST_DIR = "/var/lib/bulwark/firewall"
APPLIED_DIGEST = f"{APPLIED_DIGEST_DIR}/applied.sha256"
# The dynamic set the SSH rate limit fills (templates/firewall/nftables.conf.j2 names it so).
SSH_METER_SET = "ssh_new_v4"
# The live ruleset as its digest compares: `nft -s` leaves counters out; the elements the
# kernel adds to dynamic sets (the SSH meter's addresses) change by the minute and are left
# out too. Everything else, static set elements included, counts.
_NORMALISE = (
    r"/^\tset / { dynamic = 0 } "
    r"/^\t\tflags .*dynamic/ { dynamic = 1 } "
    r"dynamic && /^\t\telements = / { skip = 1 } "
    r"!skip { print } "
    r"skip && /[}]$/ { skip = 0 }"
)
LIVE_DIGEST = StringCommand(
    "nft", "-s", "list", "ruleset", "2>/dev/null",
    "|", "awk", QuoteString(_NORMALISE),
    "|", "sha256sum", "|", "cut", "-d' '", "-f1",
)  # fmt: skip


@dataclass(frozen=True)
class RulesetState:
    """The live ruleset's digest and the one recorded after the last apply (None: never)."""

    live: str
    applied: str | None


class LiveRuleset(FactBase):
    """Whether the live ruleset is still the one the last apply left (see LIVE_DIGEST)."""

    def command(self) -> StringCommand:
        return StringCommand(LIVE_DIGEST, ";", "cat", APPLIED_DIGEST, "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> RulesetState:
        return RulesetState("", None)

    def process(self, output: list[str]) -> RulesetState:
        lines = [line.strip() for line in output if line.strip()]
        return RulesetState(lines[0] if lines else "", lines[1] if len(lines) > 1 else None)


@dataclass(frozen=True)
class LiveRulesetCheck(LiveCheck):
    """The live ruleset, read as the deploy reads it (LiveRuleset): status says whether our
    table is loaded and still as the last apply left it; drift reports a live ruleset that is
    not (a rule added or removed by hand, a flush), and compares the staged candidate too (a
    deploy compares it with the rendered ruleset)."""

    table: str = f"inet {bruteforce.TABLE}"

    def _script(self) -> str:
        return (
            f"if nft list table {self.table} >/dev/null 2>&1; then echo loaded; "
            "else echo missing; fi\n" + LiveRuleset().command().get_raw_value()
        )

    def status_script(self) -> str:
        return self._script()

    def drift_script(self, context: HostContext) -> str:
        return self._script()

    def _read(self, reading: Reading) -> tuple[bool, RulesetState]:
        lines = [line.strip() for line in reading.lines if line.strip()]
        loaded = bool(lines) and lines[0] == "loaded"
        return loaded, LiveRuleset().process(lines[1:])

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        loaded, ruleset = self._read(reading)
        if not loaded:
            return [Finding("firewall", Verdict.FAIL, f"table {self.table} not loaded")]
        if ruleset.applied is None:
            return [
                Finding("firewall", Verdict.WARN, f"{self.table} loaded, never applied by bulwark")
            ]
        if ruleset.live != ruleset.applied:
            return [
                Finding(
                    "firewall",
                    Verdict.WARN,
                    f"{self.table} loaded, changed since the last apply (bulwark drift shows it)",
                )
            ]
        return [Finding("firewall", Verdict.OK, f"{self.table} loaded, as the last apply left it")]

    def drift(self, reading: Reading, context: HostContext) -> list[Difference]:
        loaded, ruleset = self._read(reading)
        if not loaded:
            return [Difference("nft ruleset", f"table {self.table} not loaded")]
        if ruleset.applied is None:
            return [
                Difference("nft ruleset", f"never applied by bulwark ({APPLIED_DIGEST} missing)")
            ]
        if ruleset.live != ruleset.applied:
            return [
                Difference(
                    "nft ruleset",
                    "the live ruleset is not the one the last apply left (a rule added or "
                    "removed by hand, or a flush); the next deploy applies the rendered one",
                )
            ]
        return []

    def expected_files(self, rendered: Mapping[str, RenderedFile]) -> list[RenderedFile]:
        if RULESET not in rendered:
            return []
        return [replace(rendered[RULESET], path=CANDIDATE)]


@operation()
def safe_ruleset(candidate: str = CANDIDATE, target: str = RULESET):
    """Apply `candidate` if it differs from `target` or the live ruleset is no longer the one the
    last apply left, without ever locking the operator out: check, save, arm rollback, apply,
    confirm over a fresh connection, disarm, install, record the live ruleset's digest.

    + candidate: the checked, uploaded ruleset to apply
    + target: the ruleset nftables.service loads at boot

    **Example:**

    .. code:: python

        safe_ruleset(name="firewall: apply the ruleset safely")
    """
    found = host_state(paths=(candidate, target)).files
    wanted, installed = (found[path] and found[path].sha256 for path in (candidate, target))
    ruleset = current_host.get_fact(LiveRuleset)
    if wanted == installed and ruleset.applied is not None and ruleset.live == ruleset.applied:
        current_host.noop("ruleset unchanged and live as applied")
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
    yield StringCommand("install", "-d", "-m", "0700", APPLIED_DIGEST_DIR)
    yield StringCommand(LIVE_DIGEST, ">", APPLIED_DIGEST)


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (ManagedFile(RULESET, "nftables.conf.j2", mode="0600", checker="nft"),)


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        "host": host.name,
        "site": host.site,
        "roles": [role.name for role in registry.deployed_roles(host) if not role.every_host],
        "ssh_meter_set": SSH_METER_SET,
        "management": [str(network) for network in management_sources(topology)],
        "site_lans": [str(network) for network in site_lans(topology)],
        "ssh_port": catalogue.service("ssh").port,
        "ssh_rate": SSH_NEW_CONNECTION_RATE,
        "icmp_rate": ICMP_RATE,
        "client_sets": client_sets(topology, host),
        "ban": ban(topology, host),
        "input_rules": input_rules(topology, host),
        "nat_rules": nat_rules(topology, host),
        "forward_rules": forward_rules(topology, host),
        "output_rules": output_rules(topology, host),
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """The ruleset loaded and as applied (LiveRulesetCheck), loaded at boot."""
    return (Units((Unit(NFTABLES_UNIT),)), LiveRulesetCheck())


@deploy("firewall")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """Stage and check the ruleset, apply it safely, and load it at boot (never `restart`: stop
    flushes)."""
    (rendered,) = render_for_deploy(ROLE, topology, host, secrets).values()
    packages(ROLE, PACKAGES)
    install(ROLE, [replace(rendered, path=CANDIDATE)], check=CANDIDATE_CHECK)
    safe_ruleset(name="firewall: apply the ruleset safely")
    service("firewall: load at boot", NFTABLES_UNIT)


def nft_ports(ports: Iterable[int]) -> str:
    """nftables port syntax: `993`, `50000-50100` or `{ 21, 80, 50000-50100 }` (each run of
    consecutive ports written as a range)."""
    runs = port_runs(ports)
    text = ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)
    return text if len(runs) == 1 else "{ " + text + " }"


def client_set_name(opening: Opening) -> str:
    """The named set holding the addresses allowed to reach an Exposure.ROLE service."""
    return f"{opening.service.name.replace('-', '_')}_clients_v4"


def client_sets(topology: Topology, host: Host) -> list[dict[str, Any]]:
    """One set of host addresses per internal service `host` opens: its name, the service, the
    client roles it stands for (a comment) and the addresses (never none: bulwark.exposure
    opens nothing for a role without a host)."""
    return [
        {
            "name": client_set_name(opening),
            "service": opening.service.name,
            "clients": ", ".join(str(clients) for clients in opening.service.clients),
            "elements": [str(network.network_address) for network in opening.sources or ()],
        }
        for opening in host_openings(topology, host)
        if opening.service.exposure is Exposure.ROLE
    ]


def ban(topology: Topology, host: Host) -> dict[str, str] | None:
    """The set of banned addresses and the public ports they are dropped on, on a host whose
    logins are watched (bulwark.bruteforce); None elsewhere."""
    ports = public_ports(topology, host).get("tcp")
    if not bruteforce.protects(host) or not ports:
        return None
    return {
        "set": bruteforce.BAN_SET,
        "timeout": f"{bruteforce.BAN_MINUTES}m",
        "ports": nft_ports(ports),
    }


def _source_match(opening: Opening) -> str:
    if opening.sources is None:
        return ""
    if opening.service.exposure is Exposure.MANAGEMENT:
        return "ip saddr @management_v4 "
    if opening.service.exposure is Exposure.ROLE:
        return f"ip saddr @{client_set_name(opening)} "
    return "ip saddr { " + ", ".join(str(network) for network in opening.sources) + " } "


def nat_rules(topology: Topology, host: Host) -> list[str]:
    """A proxy host's translations: every port of a proxy's range on the proxy's own address
    goes to its one listener there (`dnat`, not `redirect`, which would rewrite the address to
    the interface's first and lose which proxy was asked)."""
    return [
        f"ip daddr {opening.address} tcp dport {nft_ports(opening.ports)} "
        f'dnat ip to {opening.address}:{opening.service.listen} comment "{opening.service.name}"'
        for opening in host_openings(topology, host)
        if opening.address is not None
    ]


def input_rules(topology: Topology, host: Host) -> list[str]:
    """One accept rule per distinct (sources, transport, ports); services sharing one merged.
    A proxy's rule accepts its listener on its own address alone: the input hook sees the
    translated port (nat_rules run first, at prerouting)."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for opening in host_openings(topology, host):
        if opening.address is not None:
            key = (
                f"ip daddr {opening.address} ",
                str(opening.service.transport),
                str(opening.service.listen),
            )
        else:
            key = (
                _source_match(opening),
                str(opening.service.transport),
                nft_ports(opening.ports),
            )
        merged.setdefault(key, []).append(opening.service.name)
    return [
        f'{source}{transport} dport {ports} ct state new accept comment "{", ".join(names)}"'
        for (source, transport, ports), names in merged.items()
    ]


def output_rules(topology: Topology, host: Host) -> list[str]:
    """What this host may not start: on an FTP server, a data connection to the client
    (active mode, from catalogue.FTP_ACTIVE_DATA_PORT): passive mode is the only one, in the
    range the input rules open."""
    deployed = {role.name for role in registry.deployed_roles(host)}
    if "ftp" not in {service.name for service in catalogue.services_for_roles(deployed)}:
        return []
    return [
        f"tcp sport {catalogue.FTP_ACTIVE_DATA_PORT} ct state new counter reject with tcp reset "
        'comment "ftp active mode: passive only"'
    ]


def forward_rules(topology: Topology, host: Host) -> list[str]:
    """Gateways only: their LAN to the other sites' LANs through the tunnel, and back."""
    if not host.has_role("gateway"):
        return []
    own = topology.site(host.site).lan
    peers = ", ".join(str(site.lan) for site in topology.peer_sites(host.site))
    return [
        f'ip saddr {own} ip daddr {{ {peers} }} oifname "{VPN_INTERFACE}" accept',
        f'iifname "{VPN_INTERFACE}" ip saddr {{ {peers} }} ip daddr {own} accept',
    ]


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
