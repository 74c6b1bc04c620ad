"""The check kinds roles declare (bulwark.livecheck): each a read-only command and its judgement.

A role module's `live_checks(topology, host)` returns instances of these, e.g.
`Units((Unit("dovecot.service"),))` or `Certificate(pki.HOST_CERT_PATH, "host")`; two kinds
are the commands' own and need no declaration: `ManagedFiles` (drift: every rendered file and
the pending markers, through bulwark.hoststate) and `Listening` (the catalogue's sockets).

Every command here only reads: `systemctl show`, `ss`, `df`, `stat`, `openssl x509`,
`wg show`, `doveadm replicator status`, `timedatectl show`, `apt list` (the cached lists,
never an update), `sysctl -n`, `awk` over a file. tests/unit/test_livecheck.py refuses a
script that names a command outside this list.
"""

from __future__ import annotations

import ipaddress
import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from bulwark import catalogue, registry
from bulwark.catalogue import Exposure
from bulwark.exposure import role_sources
from bulwark.hoststate import FileState, HostState, sysctl_settings
from bulwark.livecheck import Difference, Finding, HostContext, LiveCheck, Reading, Verdict
from bulwark.render import RenderedFile
from bulwark.topology import Host, Topology


def _quote(values: Sequence[str]) -> str:
    return " ".join(shlex.quote(value) for value in values)


def duration(seconds: float) -> str:
    """`42 s`, `3 min`, `5 h 2 min`, `3 d 4 h`: an age as an operator reads it."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def worst(*verdicts: Verdict) -> Verdict:
    return max(verdicts, default=Verdict.OK)


def above(value: float, warn: float, fail: float) -> Verdict:
    """FAIL at or above `fail`, WARN at or above `warn`."""
    if value >= fail:
        return Verdict.FAIL
    if value >= warn:
        return Verdict.WARN
    return Verdict.OK


def older(age: float, warn: float, fail: float | None = None) -> Verdict:
    """FAIL beyond `fail`, WARN beyond `warn` (seconds)."""
    if fail is not None and age > fail:
        return Verdict.FAIL
    if age > warn:
        return Verdict.WARN
    return Verdict.OK


# --- units ------------------------------------------------------------------------------------

# What counts as running and as enabled: pyinfra's SystemdStatus and SystemdEnabled, as the
# deploy compares them (bulwark.hoststate).
RUNNING_STATES = ("running", "waiting", "exited", "listening", "mounted")
ENABLED_STATES = ("enabled", "static")
_UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState")


@dataclass(frozen=True)
class Unit:
    """A unit as a role keeps it (bulwark.deploying.service): running or stopped, enabled or
    disabled at boot; None: the role leaves that as it is."""

    name: str
    running: bool | None = True
    enabled: bool | None = True


@dataclass(frozen=True)
class UnitState:
    load: str
    active: str
    sub: str
    file_state: str

    @property
    def running(self) -> bool:
        return self.sub in RUNNING_STATES

    @property
    def enabled(self) -> bool:
        return self.file_state in ENABLED_STATES

    def __str__(self) -> str:
        if self.load == "not-found":
            return "no such unit"
        return f"{self.active} ({self.sub}), {self.file_state or 'no unit file'}"


def parse_units(lines: Sequence[str]) -> dict[str, UnitState]:
    """`systemctl show` blocks, each starting with Id=."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key == "Id":
            current = blocks.setdefault(value, {})
        else:
            current[key] = value
    return {
        name: UnitState(
            found.get("LoadState", ""),
            found.get("ActiveState", ""),
            found.get("SubState", ""),
            found.get("UnitFileState", ""),
        )
        for name, found in blocks.items()
    }


@dataclass(frozen=True)
class Units(LiveCheck):
    """Units running (or stopped) and enabled (or not) as the roles keep them. Status: a unit
    not running as wanted is FAIL, not enabled as wanted WARN (it is right until the next
    boot). Drift: each difference a deploy would put right."""

    units: tuple[Unit, ...]

    MERGED = True
    RANK = 10

    @classmethod
    def merge(cls, checks: Sequence[LiveCheck]) -> Units:
        wanted: dict[str, Unit] = {}
        for check in checks:
            assert isinstance(check, Units)
            for unit in check.units:
                known = wanted.get(unit.name)
                if known is None:
                    wanted[unit.name] = unit
                    continue
                running = _agree(unit.name, "running", known.running, unit.running)
                enabled = _agree(unit.name, "enabled", known.enabled, unit.enabled)
                wanted[unit.name] = Unit(unit.name, running, enabled)
        return cls(tuple(wanted.values()))

    def _script(self) -> str:
        properties = " ".join(f"--property {name}" for name in _UNIT_PROPERTIES)
        return f"systemctl show --all {properties} -- {_quote([u.name for u in self.units])}"

    def status_script(self) -> str:
        return self._script()

    def drift_script(self, context: HostContext) -> str:
        return self._script()

    def _states(self, reading: Reading) -> dict[str, UnitState]:
        found = parse_units(reading.lines)
        return {
            unit.name: found.get(unit.name, UnitState("not-found", "", "", ""))
            for unit in self.units
        }

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        states = self._states(reading)
        findings = []
        for unit in self.units:
            state = states[unit.name]
            verdict = Verdict.OK
            notes = []
            if unit.running is not None and state.running != unit.running:
                verdict = Verdict.FAIL
                notes.append("want running" if unit.running else "want stopped")
            if unit.enabled is not None and state.enabled != unit.enabled:
                verdict = worst(verdict, Verdict.WARN)
                notes.append("want enabled at boot" if unit.enabled else "want disabled at boot")
            figure = str(state) + (f"; {', '.join(notes)}" if notes else "")
            findings.append(Finding(f"unit {unit.name}", verdict, figure))
        return findings

    def drift(self, reading: Reading, context: HostContext) -> list[Difference]:
        states = self._states(reading)
        differences = []
        for unit in self.units:
            state = states[unit.name]
            if unit.running is not None and state.running != unit.running:
                want = "running" if unit.running else "stopped"
                differences.append(
                    Difference(f"unit {unit.name}", f"{state}; the roles want it {want}")
                )
            if unit.enabled is not None and state.enabled != unit.enabled:
                want = "enabled" if unit.enabled else "disabled"
                differences.append(
                    Difference(f"unit {unit.name}", f"{state}; the roles want it {want} at boot")
                )
        return differences


def _agree(unit: str, what: str, one: bool | None, other: bool | None) -> bool | None:
    if one is None or other is None or one == other:
        return one if other is None else other
    raise ValueError(f"{unit}: two roles disagree on whether it is {what}")


# --- files, directories, pending actions (drift) ------------------------------------------------


def file_differences(rendered: RenderedFile, found: FileState | None) -> list[Difference]:
    """How a managed file on the host differs from what a deploy would write; a file holding
    secrets only ever as "differs" (neither its content nor a digest of it)."""
    subject = f"file {rendered.path}"
    if found is None:
        return [Difference(subject, "missing")]
    if found.sha256 is None:
        return [Difference(subject, "not a regular file")]
    differences = []
    if found.sha256 != rendered.sha256:
        if rendered.holds_secrets:
            detail = "content differs (it holds secrets: not shown)"
        else:
            detail = (
                f"content differs (sha256 {found.sha256[:12]} on the host, "
                f"{rendered.sha256[:12]} rendered)"
            )
        differences.append(Difference(subject, detail))
    if (found.user, found.group) != (rendered.user, rendered.group):
        differences.append(
            Difference(
                subject,
                f"owner {found.user}:{found.group}, want {rendered.user}:{rendered.group}",
            )
        )
    if int(found.mode, 8) != int(rendered.mode, 8):
        differences.append(
            Difference(subject, f"mode {int(found.mode, 8):04o}, want {int(rendered.mode, 8):04o}")
        )
    return differences


@dataclass(frozen=True)
class ManagedFiles(LiveCheck):
    """Drift of every file a deploy writes (content hash, owner, mode) and the pending markers
    an interrupted deploy left (a daemon that never took its new file), in one round trip with
    bulwark.hoststate's reader."""

    RANK = 0

    def drift_script(self, context: HostContext) -> str:
        command = HostState().command(tuple(sorted(context.expected)), (), ())
        return "{ " + command.get_raw_value() + "; } 2>/dev/null"

    def drift(self, reading: Reading, context: HostContext) -> list[Difference]:
        found = HostState().process(list(reading.lines))
        differences = [
            Difference(
                f"pending {action}",
                "a deploy was cut short before this action ran: the daemon or kernel still "
                "runs the previous configuration",
            )
            for action in sorted(found.pending)
        ]
        for path in sorted(context.expected):
            differences += file_differences(context.expected[path], found.files.get(path))
        return differences


@dataclass(frozen=True)
class Directory:
    """A directory a role makes (bulwark.deploying.directory): owner and mode."""

    path: str
    user: str
    group: str
    mode: str


@dataclass(frozen=True)
class Directories(LiveCheck):
    """Drift of the directories the roles make."""

    directories: tuple[Directory, ...]

    MERGED = True

    @classmethod
    def merge(cls, checks: Sequence[LiveCheck]) -> Directories:
        found: dict[str, Directory] = {}
        for check in checks:
            assert isinstance(check, Directories)
            found.update((item.path, item) for item in check.directories)
        return cls(tuple(found.values()))

    def drift_script(self, context: HostContext) -> str:
        paths = _quote([item.path for item in self.directories])
        return (
            f'for path in {paths}; do if [ -d "$path" ]; then '
            'printf \'%s\\t%s\\n\' "$(stat -c \'%U %G %a\' "$path")" "$path"; '
            "else printf 'missing\\t%s\\n' \"$path\"; fi; done"
        )

    def drift(self, reading: Reading, context: HostContext) -> list[Difference]:
        found = dict(reversed(line.split("\t", 1)) for line in reading.lines if "\t" in line)
        differences = []
        for item in self.directories:
            state = found.get(item.path, "missing")
            subject = f"directory {item.path}"
            if state == "missing":
                differences.append(Difference(subject, "missing"))
                continue
            user, group, mode = state.split()
            if (user, group) != (item.user, item.group):
                differences.append(
                    Difference(subject, f"owner {user}:{group}, want {item.user}:{item.group}")
                )
            if int(mode, 8) != int(item.mode, 8):
                differences.append(
                    Difference(subject, f"mode {int(mode, 8):04o}, want {int(item.mode, 8):04o}")
                )
        return differences


# --- kernel parameters (drift) ------------------------------------------------------------------


@dataclass(frozen=True)
class Sysctl(LiveCheck):
    """Drift of a sysctl.d file a role writes: each setting's live value (`sysctl -n`), so a
    value reverted at runtime, or a file never applied, shows even though the file is right.
    `in_containers` False: the file is not applied in a container (the kernel's own settings
    are the machine's business there, as the base role says)."""

    path: str
    in_containers: bool = True

    def drift_script(self, context: HostContext) -> str | None:
        rendered = context.expected.get(self.path)
        if rendered is None:
            return None
        keys = _quote(list(sysctl_settings(rendered.content)))
        return (
            f"for key in {keys}; do "
            "printf '%s\\t%s\\n' \"$key\" \"$(sysctl -n \"$key\" 2>&1 | tr '\\t\\n' '  ')\"; done"
        )

    def drift(self, reading: Reading, context: HostContext) -> list[Difference]:
        if context.container and not self.in_containers:
            return []
        wanted = sysctl_settings(context.expected[self.path].content)
        live = {}
        for line in reading.lines:
            key, sep, value = line.partition("\t")
            if sep:
                live[key] = " ".join(value.split())
        differences = []
        for key, want in wanted.items():
            value = live.get(key)
            if value is None or value.startswith("sysctl:"):
                detail = f"unreadable ({value or 'no answer'}); {self.path} sets {want}"
            elif value != want:
                detail = f"{value} live, {self.path} sets {want}: not applied"
            else:
                continue
            differences.append(Difference(f"sysctl {key}", detail))
        return differences


# --- listening sockets (status and drift) ------------------------------------------------------

# How ss shows a socket bound to every address.
WILDCARDS = ("*", "0.0.0.0", "::")  # noqa: S104 - compared with, never bound


@dataclass(frozen=True)
class Socket:
    """A listening socket as `ss -Hlntup` shows it."""

    transport: str
    address: str
    port: int
    process: str = ""

    @property
    def wildcard(self) -> bool:
        return self.address in WILDCARDS

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        where = f"{address}:{self.port}/{self.transport}"
        return f"{where} ({self.process})" if self.process else where


def parse_ss(lines: Sequence[str]) -> list[Socket]:
    """`ss -Hlntup` lines: Netid State Recv-Q Send-Q Local:Port Peer:Port [Process]."""
    sockets = []
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        address, _, port = fields[4].rpartition(":")
        address = address.strip("[]").split("%", 1)[0]
        if not port.isdigit():
            continue
        processes = sorted(set(re.findall(r'\("([^"]+)"', line)))
        sockets.append(Socket(fields[0], address or "*", int(port), ",".join(processes)))
    return sockets


@dataclass(frozen=True)
class Port:
    """Where a catalogue service must listen on a host: on one of `addresses`, or on every
    address (`wildcard`) where that is as good; `required` False for a range opened on demand
    (FTP's passive ports)."""

    service: str
    transport: str
    port: int
    addresses: tuple[str, ...]
    wildcard: bool
    required: bool = True

    def accepts(self, socket: Socket) -> bool:
        return socket.address in self.addresses or (self.wildcard and socket.wildcard)


def expected_ports(topology: Topology, host: Host) -> tuple[Port, ...]:
    """The catalogue's sockets for `host`'s deployed roles: public services on its public
    address (or every address: the firewall keeps the rest out), internal ones on its LAN
    address only, management ones on its management address or every address, local ones on
    loopback. An internal service no deployed host may reach (a proxied listener in a site
    without a proxy) is not configured, so not expected."""
    roles = [role.name for role in registry.deployed_roles(host)]
    public = (str(host.public_address),) if host.public_address else ()
    addresses = {
        Exposure.PUBLIC: (public, True),
        Exposure.PEER_GATEWAY: (public, True),
        Exposure.MANAGEMENT: ((str(host.management_address),), True),
        Exposure.ROLE: ((str(host.lan_address),), False),
        Exposure.LOCAL: (("127.0.0.1", "::1"), False),
    }
    ports = []
    for service in catalogue.services_for_roles(roles):
        if service.listen is not None:  # a proxy: one socket, on its own address
            own = host.own_address(service)
            where = (str(own),) if own else ()
            ports.append(Port(service.name, str(service.transport), service.listen, where, False))
            continue
        if service.exposure is Exposure.ROLE and not role_sources(topology, host, service):
            continue
        where, wildcard = addresses[service.exposure]
        required = not service.on_demand
        ports += [
            Port(service.name, str(service.transport), port, where, wildcard, required)
            for port in service.ports
        ]
    return tuple(ports)


@dataclass(frozen=True)
class ServiceSockets:
    """One catalogue service's sockets on a host: the right ones, and problems."""

    service: str
    transport: str
    ports: tuple[int, ...]
    good: tuple[Socket, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Listening(LiveCheck):
    """Each catalogue service of the host listening where it must, and nothing else listening
    on the public address or every address (nor the plaintext ports the platform never opens,
    anywhere but loopback). Built from the catalogue (`for_host`), never declared by a role."""

    ports: tuple[Port, ...]
    public: tuple[str, ...]  # the host's public address and its proxy addresses

    RANK = 20

    @classmethod
    def for_host(cls, topology: Topology, host: Host) -> Listening:
        public = (host.public_address,) if host.public_address else ()
        public += tuple(address for _, address in host.proxy_addresses)
        return cls(expected_ports(topology, host), tuple(str(address) for address in public))

    def _script(self) -> str:
        return "ss -Hlntup"

    def status_script(self) -> str:
        return self._script()

    def drift_script(self, context: HostContext) -> str:
        return self._script()

    def judge(self, sockets: Sequence[Socket]) -> tuple[list[ServiceSockets], list[Socket]]:
        """Per service: its right sockets and its problems; and the sockets that must not be."""
        services: dict[str, list[Port]] = {}
        for port in self.ports:
            services.setdefault(port.service, []).append(port)
        results = []
        claimed: set[Socket] = set()
        for name, ports in services.items():
            good: list[Socket] = []
            problems: list[str] = []
            for port in ports:
                same = [s for s in sockets if (s.transport, s.port) == (port.transport, port.port)]
                right = [s for s in same if port.accepts(s)]
                wrong = [s for s in same if not port.accepts(s) and not s.loopback]
                claimed.update(same)
                good += right
                want = ", ".join(port.addresses) + (" or every address" if port.wildcard else "")
                if port.required and not right:
                    problems.append(f"{port.port}/{port.transport} not listening (want {want})")
                problems += [f"{socket} listening, want {want}" for socket in wrong]
            results.append(
                ServiceSockets(
                    name,
                    ports[0].transport,
                    tuple(port.port for port in ports),
                    tuple(good),
                    tuple(problems),
                )
            )
        stray = [
            socket
            for socket in sockets
            if socket not in claimed
            and (
                (self.public and (socket.wildcard or socket.address in self.public))
                or (socket.port in catalogue.FORBIDDEN_PORTS and not socket.loopback)
            )
        ]
        return results, stray

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        if reading.rc != 0:
            return [Finding("sockets", Verdict.FAIL, f"ss failed: {reading.last_line()}")]
        results, stray = self.judge(parse_ss(reading.lines))
        findings = []
        for result in results:
            if result.problems:
                findings.append(
                    Finding(f"port {result.service}", Verdict.FAIL, "; ".join(result.problems))
                )
                continue
            shown = ", ".join(sorted({str(socket) for socket in result.good})) or "on demand"
            findings.append(Finding(f"port {result.service}", Verdict.OK, shown))
        if stray:
            figure = "not in the catalogue: " + ", ".join(sorted(str(s) for s in stray))
            findings.append(Finding("public sockets", Verdict.FAIL, figure, len(stray)))
        elif self.public:
            findings.append(
                Finding("public sockets", Verdict.OK, "only the catalogue's services", 0)
            )
        return findings

    def drift(self, reading: Reading, context: HostContext) -> list[Difference]:
        if reading.rc != 0:
            return [Difference("sockets", f"ss failed: {reading.last_line()}")]
        results, stray = self.judge(parse_ss(reading.lines))
        differences = [
            Difference(f"socket {result.service}", problem)
            for result in results
            for problem in result.problems
        ]
        differences += [
            Difference(f"socket {socket}", "listening publicly, not in the catalogue")
            for socket in sorted(stray, key=str)
        ]
        return differences


# --- certificates -------------------------------------------------------------------------------


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def first_certificate_end(text: str) -> datetime | None:
    """When the first PEM certificate of `text` ends (None: there is none, or it is not one)."""
    match = _PEM.search(text)
    if match is None:
        return None
    try:
        return x509.load_pem_x509_certificate(match.group().encode()).not_valid_after_utc
    except ValueError:
        return None


@dataclass(frozen=True)
class Certificate(LiveCheck):
    """Days a certificate on the host has left (the first one of the file: the leaf). The file
    is public: it is read as it is and parsed here (an `openssl` per certificate cost more than
    every other check together)."""

    path: str
    label: str

    def status_script(self) -> str:
        return f"cat {shlex.quote(self.path)}"

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        check = f"certificate {self.label}"
        end = first_certificate_end("\n".join(reading.lines)) if reading.rc == 0 else None
        if end is None:
            why = reading.last_line() if reading.rc else "no certificate in it"
            return [Finding(check, Verdict.FAIL, f"{self.path}: {why}")]
        days = (end.timestamp() - context.now) / 86400
        verdict = Verdict.OK
        if days < context.limits["cert-fail"]:
            verdict = Verdict.FAIL
        elif days < context.limits["cert-warn"]:
            verdict = Verdict.WARN
        left = (
            f"{math.floor(days)} days left" if days >= 0 else f"expired {math.ceil(-days)} days ago"
        )
        return [Finding(check, verdict, f"{left} (until {end:%Y-%m-%d})", math.floor(days))]


# --- WireGuard ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshakes(LiveCheck):
    """Age of the latest handshake with each peer gateway of a WireGuard interface; a peer is
    recognised by the site LAN in its allowed IPs. Private keys never leave the host (the
    interface's line of `wg show dump` is dropped there)."""

    interface: str
    peers: tuple[tuple[str, str], ...]  # (site, site LAN)

    def status_script(self) -> str:
        interface = shlex.quote(self.interface)
        return (
            f"if ! ip link show {interface} >/dev/null 2>&1; then "
            f"echo '{self.interface}: no such interface'; exit 1; fi\n"
            f"wg show {interface} dump | awk -F '\\t' "
            '\'NR > 1 { print $1 "\\t" $3 "\\t" $4 "\\t" $5 }\''
        )

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        if reading.rc != 0:
            return [
                Finding(f"wireguard {site}", Verdict.FAIL, reading.last_line())
                for site, _ in self.peers
            ]
        dumped = [line.split("\t") for line in reading.lines if line.count("\t") == 3]
        findings = []
        for site, lan in self.peers:
            check = f"wireguard {site}"
            peer = next((fields for fields in dumped if lan in fields[2].split(",")), None)
            if peer is None:
                findings.append(
                    Finding(
                        check,
                        Verdict.FAIL,
                        f"no peer with {lan} in its allowed IPs",
                    )
                )
                continue
            latest = int(peer[3]) if peer[3].isdigit() else 0
            if latest == 0:
                findings.append(Finding(check, Verdict.FAIL, f"no handshake yet with {peer[1]}"))
                continue
            age = context.age(latest)
            verdict = older(age, context.limits["handshake-warn"], context.limits["handshake-fail"])
            findings.append(
                Finding(
                    check, verdict, f"latest handshake {duration(age)} ago ({peer[1]})", round(age)
                )
            )
        return findings


# --- mail replication ---------------------------------------------------------------------------


def parse_hms(text: str) -> int | None:
    """doveadm's `HH:MM:SS` ago (hours may exceed 99); None for `-` (never)."""
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d)", text.strip())
    if not match:
        return None
    hours, minutes, seconds = (int(group) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class MailUser:
    user: str
    priority: str
    last_success: int | None  # seconds ago; None: never
    failed: bool


def parse_replicator(lines: Sequence[str]) -> list[MailUser]:
    """`doveadm -f tab replicator status '*'`: a title line, then username, priority, fast
    sync, full sync, success sync, failed (y or -), next sync secs (Dovecot 2.3); columns
    found by their titles."""
    rows = [line.split("\t") for line in lines if "\t" in line]
    if not rows:
        return []
    titles = [title.strip() for title in rows[0]]
    if "username" not in titles:
        return []
    column = {title: index for index, title in enumerate(titles)}
    success = column.get("success sync", column.get("fast sync"))
    users = []
    for row in rows[1:]:
        if len(row) < len(titles):
            continue
        users.append(
            MailUser(
                row[column["username"]],
                row[column["priority"]].strip(),
                parse_hms(row[success]) if success is not None else None,
                row[column["failed"]].strip() == "y",
            )
        )
    return users


@dataclass(frozen=True)
class MailReplication(LiveCheck):
    """dsync replication with the other site's mail store, as Dovecot's replicator sees it:
    users whose last sync failed (FAIL), users queued for a sync whose last success is old
    (mail-queued-warn/-fail), a last success older than the daily full sync (mail-idle-warn)."""

    peer: str

    def status_script(self) -> str:
        return "doveadm -f tab replicator status '*'"

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        check = f"mail replication {self.peer}"
        if reading.rc != 0:
            return [Finding(check, Verdict.FAIL, f"replicator unreachable: {reading.last_line()}")]
        users = parse_replicator(reading.lines)
        if not users:
            return [Finding(check, Verdict.WARN, "the replicator knows no user yet")]
        limits = context.limits
        verdict = Verdict.OK
        notes = []
        failed = [user.user for user in users if user.failed]
        if failed:
            verdict = Verdict.FAIL
            notes.append(f"last sync failed: {', '.join(failed)}")
        for user in users:
            if user.priority not in ("none", "") and not user.failed:
                age = user.last_success if user.last_success is not None else math.inf
                state = older(age, limits["mail-queued-warn"], limits["mail-queued-fail"])
                if state is not Verdict.OK:
                    verdict = worst(verdict, state)
                    since = _ago(user.last_success)
                    notes.append(f"{user.user} queued ({user.priority}), last success {since}")
        never = [user.user for user in users if user.last_success is None]
        if never:
            verdict = worst(verdict, Verdict.WARN)
            notes.append(f"never synced: {', '.join(never)}")
        synced = [user.last_success for user in users if user.last_success is not None]
        oldest = max(synced) if synced else None
        if oldest is not None and oldest > limits["mail-idle-warn"]:
            verdict = worst(verdict, Verdict.WARN)
        summary = f"{len(users)} users, oldest last success {_ago(oldest)}"
        return [Finding(check, verdict, "; ".join([summary, *notes]), oldest)]


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{duration(seconds)} ago"


# --- one-way replication (dav; files next) -------------------------------------------------------


@dataclass(frozen=True)
class Replica(LiveCheck):
    """A role's one-way replication (bulwark.replication). On a replica: the age of its last
    successful pull (replica-warn/-fail; never: FAIL). On the primary: whether it still owes
    its final pull from the former primary (then it refuses writes: WARN)."""

    role: str
    primary: bool
    synced: str  # touched after each successful pull
    state_file: str  # names the host followed; on a primary: a final pull is owed

    def status_script(self) -> str:
        if self.primary:
            state = shlex.quote(self.state_file)
            return f'if [ -s {state} ]; then echo "owed $(cat {state})"; else echo none; fi'
        return f"stat -c %Y {shlex.quote(self.synced)}"

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        check = f"{self.role} replication"
        if self.primary:
            words = reading.last_line().split(maxsplit=1)
            if words and words[0] == "owed":
                source = words[1] if len(words) > 1 else "?"
                return [
                    Finding(
                        check,
                        Verdict.WARN,
                        f"primary, still owes its final pull from {source}: writes refused "
                        "until it succeeds (README: switching the primary site)",
                    )
                ]
            return [Finding(check, Verdict.OK, "primary site: takes writes, follows nobody")]
        if reading.rc != 0 or not reading.last_line().isdigit():
            return [Finding(check, Verdict.FAIL, f"never pulled ({reading.last_line()})")]
        age = context.age(int(reading.last_line()))
        verdict = older(age, context.limits["replica-warn"], context.limits["replica-fail"])
        return [Finding(check, verdict, f"last pull {duration(age)} ago", round(age))]


@dataclass(frozen=True)
class Refresh(LiveCheck):
    """A periodic oneshot unit's last run (the directory's rebuild from the CardDAV books, a
    backup, a prune, a drill): its result, and how long ago it ended (`<limit>-warn/-fail`;
    never ran: FAIL)."""

    name: str  # what it refreshes, in the operator's words
    unit: str
    limit: str = "refresh"  # the thresholds' prefix (bulwark.livecheck.THRESHOLDS)
    label: str = ""  # the check's name in the report; "<name> refresh" without it

    def status_script(self) -> str:
        return (
            "systemctl show --timestamp=unix --property Result --property ExecMainExitTimestamp "
            f"-- {shlex.quote(self.unit)}"
        )

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        check = self.label or f"{self.name} refresh"
        shown = dict(line.partition("=")[::2] for line in reading.lines)
        ended = shown.get("ExecMainExitTimestamp", "").removeprefix("@")
        if not ended.isdigit():
            return [Finding(check, Verdict.FAIL, f"{self.unit} never ran")]
        age = context.age(int(ended))
        if shown.get("Result") != "success":
            return [Finding(check, Verdict.FAIL, f"last run {duration(age)} ago failed "
                            f"({shown.get('Result')}): journalctl -u {self.unit}")]  # fmt: skip
        limits = context.limits
        verdict = older(age, limits[f"{self.limit}-warn"], limits[f"{self.limit}-fail"])
        return [Finding(check, verdict, f"last run {duration(age)} ago", round(age))]


@dataclass(frozen=True)
class WriteSwitch(LiveCheck):
    """Whether the site's write switch (an nginx map's default, 1: refuse writes) agrees with
    `site_primary`: the primary takes writes, replicas refuse them."""

    role: str
    path: str
    variable: str
    takes_writes: bool

    def status_script(self) -> str:
        pattern = re.escape(self.variable)
        return (
            f'awk \'/{pattern}/ {{ found = 1; next }} found && $1 == "default" '
            f"{{ print $2; exit }}' {shlex.quote(self.path)}"
        )

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        check = f"{self.role} writes"
        value = reading.last_line("").rstrip(";")
        if reading.rc != 0 or value not in ("0", "1"):
            return [Finding(check, Verdict.FAIL, f"{self.path}: {reading.last_line()}")]
        refuses = value == "1"
        site = "primary site" if self.takes_writes else "replica"
        if refuses == self.takes_writes:
            state = "refuses writes" if refuses else "takes writes"
            return [Finding(check, Verdict.FAIL, f"{state}, but this is the {site}")]
        return [
            Finding(check, Verdict.OK, f"{'read-only' if refuses else 'takes writes'} ({site})")
        ]


# --- base: disks, clock, updates -----------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """df's view of the filesystem holding a path."""

    mount: str
    used_percent: float
    free_bytes: int
    inodes_percent: float | None


def parse_df(lines: Sequence[str]) -> dict[str, Usage | str]:
    """`path P` then `df -P P` and `df -Pi P` output, for each path: its usage, or df's
    error."""
    found: dict[str, Usage | str] = {}
    path = None
    rows: list[list[str]] = []

    def close() -> None:
        if path is None:
            return
        if len(rows) < 2 or len(rows[0]) < 6:
            found[path] = errors[-1] if errors else "df printed nothing"
            return
        blocks, inodes = rows[0], rows[1]
        used, available = int(blocks[2]), int(blocks[3])
        percent = 100.0 * used / (used + available) if used + available else 0.0
        inode_total = int(inodes[1]) if inodes[1].isdigit() else 0
        inode_percent = (
            100.0 * int(inodes[2]) / inode_total if inode_total and inodes[2].isdigit() else None
        )
        found[path] = Usage(blocks[5], round(percent, 1), available * 1024, inode_percent)

    errors: list[str] = []
    for line in lines:
        if line.startswith("path "):
            close()
            path, rows, errors = line[5:], [], []
        elif line.startswith("Filesystem"):
            continue
        elif line.startswith("df:"):
            errors.append(line)
        elif line.strip():
            rows.append(line.split(maxsplit=5))
    close()
    return found


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    raise AssertionError


@dataclass(frozen=True)
class Disk(LiveCheck):
    """Disk and inode use of the filesystems holding the data paths (disk-warn/-fail); paths on
    one filesystem are one line."""

    paths: tuple[str, ...]

    MERGED = True

    @classmethod
    def merge(cls, checks: Sequence[LiveCheck]) -> Disk:
        paths: dict[str, None] = {}
        for check in checks:
            assert isinstance(check, Disk)
            paths.update(dict.fromkeys(check.paths))
        return cls(tuple(paths))

    def status_script(self) -> str:
        return (
            f'for path in {_quote(self.paths)}; do echo "path $path"; '
            'df -P "$path"; df -Pi "$path"; done'
        )

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        found = parse_df(reading.lines)
        mounts: dict[str, list[str]] = {}
        findings = []
        for path in self.paths:
            usage = found.get(path, "no answer")
            if isinstance(usage, str):
                findings.append(Finding(f"disk {path}", Verdict.FAIL, usage))
                continue
            mounts.setdefault(usage.mount, []).append(path)
        warn, fail = context.limits["disk-warn"], context.limits["disk-fail"]
        for mount, paths in mounts.items():
            usage = found[paths[0]]
            assert isinstance(usage, Usage)
            verdict = above(usage.used_percent, warn, fail)
            figure = f"{usage.used_percent:.1f} % used, {size(usage.free_bytes)} free"
            if usage.inodes_percent is not None:
                verdict = worst(verdict, above(usage.inodes_percent, warn, fail))
                figure += f"; inodes {usage.inodes_percent:.1f} % used"
            held = f" (holds {', '.join(paths)})" if paths != [mount] else ""
            findings.append(Finding(f"disk {mount}", verdict, figure + held, usage.used_percent))
        return findings


@dataclass(frozen=True)
class Clock(LiveCheck):
    """Whether the clock is synchronised (timedatectl's NTPSynchronized) and how far it is
    from this machine's (clock-warn/-fail; bounded by the session's own duration). In a
    container the clock is the machine's kernel's: only the distance is judged."""

    def status_script(self) -> str:
        return (
            "virt=$(systemd-detect-virt --container 2>/dev/null)\n"
            'if [ "${virt:-none}" = none ]; then '
            "timedatectl show --property NTP --property NTPSynchronized; "
            "else echo container; fi"
        )

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        low, high = context.clock_offset()
        offset = low if low > 0 else high if high < 0 else 0.0
        verdict = above(abs(offset), context.limits["clock-warn"], context.limits["clock-fail"])
        apart = f"within {max(abs(low), abs(high)):.1f} s of this machine"
        if offset:
            apart = f"{offset:+.1f} s from this machine"
        if context.container:
            return [
                Finding(
                    "clock", verdict, f"container, the machine's clock: {apart}", round(offset, 1)
                )
            ]
        values = dict(line.partition("=")[::2] for line in reading.lines if "=" in line)
        synchronized = values.get("NTPSynchronized")
        if synchronized == "yes":
            state = "synchronized"
        else:
            verdict = worst(verdict, Verdict.WARN)
            state = f"not synchronized (NTP {values.get('NTP', '?')})"
            if reading.rc != 0:
                state = f"synchronization unknown: {reading.last_line()}"
        return [Finding("clock", verdict, f"{state}; {apart}", round(offset, 1))]


# Where apt.systemd.daily records the last unattended-upgrades run, and the security suite's
# cached lists (Release and package index).
UPGRADE_STAMP = "/var/lib/apt/periodic/upgrade-stamp"
SECURITY_LISTS = "/var/lib/apt/lists/*security*InRelease"
SECURITY_PACKAGES = "/var/lib/apt/lists/*security*_Packages"


def pending_script(packages: str = SECURITY_PACKAGES) -> str:
    """`pending NAME` for each installed package whose version in the package index files
    `packages` (a glob) is newer: what `apt list --upgradable` says of the security suite, at a
    fifth of its cost (apt loads its whole cache). apt's own answer where the lists are kept
    compressed."""
    return f"set -- {packages}\n" + _PENDING


_PENDING = (
    'if [ -f "$1" ]; then '
    "dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Version}\\n' 2>/dev/null"
    " | awk 'NR == FNR { if ($1 ~ /^.i/) installed[$2] = $3; next }"
    " /^Package: / { p = $2 }"
    " /^Version: / && (p in installed) && installed[p] != $2 { print p, installed[p], $2 }'"
    ' - "$@"'
    " | while read -r name old new; do"
    ' if dpkg --compare-versions "$old" lt "$new"; then echo "pending $name"; fi; done; '
    "else apt list --upgradable 2>/dev/null"
    " | awk -F / '$2 ~ /-security/ { print \"pending \" $1 }'; fi"
)


@dataclass(frozen=True)
class SecurityUpdates(LiveCheck):
    """Security updates the cached package lists offer (never `apt update`). Pending ones are
    normal until unattended-upgrades' next daily run: WARN once it has not run for
    updates-grace (counted from its last run, or from when `config` was put in place), FAIL
    after updates-overdue; lists older than lists-stale: WARN (the count is unknown)."""

    config: str  # unattended-upgrades' configuration, written by the base role

    def status_script(self) -> str:
        return (
            f'echo "stamp $(stat -c %Y {UPGRADE_STAMP} 2>/dev/null || echo -)"\n'
            f'echo "config $(stat -c %Y {shlex.quote(self.config)} 2>/dev/null || echo -)"\n'
            f'echo "lists $(stat -c %Y {SECURITY_LISTS} 2>/dev/null | sort -n | tail -n 1)"\n'
            + pending_script()
        )

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        values: dict[str, str] = {}
        pending: list[str] = []
        for line in reading.lines:
            key, _, value = line.strip().partition(" ")
            if key == "pending" and value not in pending:
                pending.append(value)
            elif key in ("stamp", "config", "lists"):
                values[key] = value.strip()
        limits = context.limits
        lists = values.get("lists", "")
        if not lists.isdigit():
            return [Finding("security updates", Verdict.WARN, "no security package lists: unknown")]
        lists_age = context.age(int(lists))
        if lists_age > limits["lists-stale"]:
            return [
                Finding(
                    "security updates",
                    Verdict.WARN,
                    f"package lists {duration(lists_age)} old: pending updates unknown "
                    f"({len(pending)} by those lists)",
                    len(pending),
                )
            ]
        if not pending:
            return [
                Finding(
                    "security updates",
                    Verdict.OK,
                    f"none pending (lists {duration(lists_age)} old)",
                    0,
                )
            ]
        runs = [int(values[key]) for key in ("stamp", "config") if values.get(key, "").isdigit()]
        since = context.age(max(runs)) if runs else math.inf
        verdict = older(since, limits["updates-grace"], limits["updates-overdue"])
        last = values.get("stamp", "")
        run = (
            f"last run {duration(context.age(int(last)))} ago"
            if last.isdigit()
            else "never run yet"
        )
        names = ", ".join(sorted(pending)[:5]) + (", ..." if len(pending) > 5 else "")
        return [
            Finding(
                "security updates",
                verdict,
                f"{len(pending)} pending ({names}); unattended-upgrades {run}",
                len(pending),
            )
        ]
