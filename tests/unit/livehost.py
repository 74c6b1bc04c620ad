"""A simulated lab for `bulwark status` and `bulwark drift` without hosts: answers each section
of a host's script as a converged host of the topology would (every unit running, every
catalogue socket where it belongs, every file as rendered ...), with `Faults` to break one
thing at a time. Stands in for bulwark.remote.run_everywhere.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from test_livecheck import certificate

from bulwark import liverun
from bulwark.livecheck import host_checks
from bulwark.probes import ManagedFiles, expected_ports, sysctl_settings
from bulwark.remote import Session
from bulwark.render import RenderedFile
from bulwark.secret import SecretStore
from bulwark.topology import Topology

NOW = 1_800_000_000.0
DIGEST = "d" * 64


@dataclass
class Faults:
    """What is wrong on which host (host name -> ...)."""

    stopped: dict[str, set[str]] = field(default_factory=dict)  # units not running
    sockets_gone: dict[str, set[str]] = field(default_factory=dict)  # processes not listening
    extra_sockets: dict[str, list[str]] = field(default_factory=dict)  # `ss` lines
    disk_percent: dict[str, int] = field(default_factory=dict)
    tunnel_down: set[str] = field(default_factory=set)
    handshake_age: dict[str, int] = field(default_factory=dict)
    replication_failed: set[str] = field(default_factory=set)
    unreachable: set[str] = field(default_factory=set)
    edited: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> new content
    modes: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> mode digits
    pending: dict[str, set[str]] = field(default_factory=dict)
    sysctl: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> live value
    ruleset_changed: set[str] = field(default_factory=set)


def _sections(script: str) -> list[tuple[str, str, str]]:
    """(marker, name, command) of each section of a bulwark.livecheck.host_script."""
    found = re.findall(
        r"^echo '(\S+) begin (\S+)'\n\( (.*?)\n\) </dev/null 2>&1$", script, re.M | re.S
    )
    return [(marker, name, command) for marker, name, command in found]


class SimulatedLab:
    """Answers scripts for the hosts of `topology` (files as `secrets` renders them)."""

    def __init__(self, topology: Topology, secrets: SecretStore, faults: Faults | None = None):
        self.topology = topology
        self.secrets = secrets
        self.faults = faults or Faults()
        self.scripts: dict[str, str] = {}
        self.certificate = certificate(300)
        self._expected: dict[str, dict[str, RenderedFile]] = {}

    def expected(self, name: str) -> dict[str, RenderedFile]:
        if name not in self._expected:
            host = self.topology.host(name)
            checks = host_checks(self.topology, host, generic=(ManagedFiles(),))
            self._expected[name] = liverun.expected_files(self.topology, host, self.secrets, checks)
        return self._expected[name]

    def run_everywhere(
        self,
        jobs: Mapping[str, tuple[Sequence[str], str]],
        timeout: float = 60,
        done: Callable[[Session], None] | None = None,
    ) -> dict[str, Session]:
        sessions = {}
        for name, (argv, script) in jobs.items():
            assert argv[-3:] == [name, "sh", "-s"], argv
            self.scripts[name] = script
            if name in self.faults.unreachable:
                error = f"ssh: connect to host {name} port 22: Connection timed out"
                session = Session(name, "", NOW - 10, NOW, error)
            else:
                session = Session(name, self.answer(name, script), NOW - 0.3, NOW + 0.2)
            sessions[name] = session
            if done:
                done(session)
        return sessions

    def answer(self, name: str, script: str) -> str:
        lines = []
        for marker, section, command in _sections(script):
            text, rc = self.section(name, command)
            lines += [
                f"{marker} begin {section}",
                *text.splitlines(),
                f"{marker} end {section} {rc}",
            ]
        return "\n".join(lines) + "\n"

    # --- one command -----------------------------------------------------------------------

    def section(self, name: str, command: str) -> tuple[str, int]:
        host = self.topology.host(name)
        faults = self.faults
        stopped = faults.stopped.get(name, set())
        if command.startswith("date +%s"):
            return f"{NOW:.6f}", 0
        if command.startswith("systemd-detect-virt"):
            return "systemd-nspawn", 0
        if command.startswith("ss -H"):
            return self.ss(name), 0
        if command.startswith("systemctl show --timestamp=unix"):  # a periodic unit's last run
            return f"Result=success\nExecMainExitTimestamp=@{int(NOW - 20)}", 0
        if command.startswith("systemctl show"):
            units = shlex.split(command.split(" -- ", 1)[1])
            blocks = []
            for unit in units:
                running = unit not in stopped
                sub = (
                    "dead" if not running else ("waiting" if unit.endswith(".timer") else "running")
                )
                if (
                    unit.startswith("bulwark-replica-")
                    and unit.endswith(".service")
                    and self._primary(name)
                ):
                    running, sub = False, "dead"
                    blocks.append(
                        f"Id={unit}\nLoadState=loaded\nActiveState=inactive\nSubState=dead\nUnitFileState=disabled\n"
                    )
                    continue
                active = "active" if running else "inactive"
                blocks.append(
                    f"Id={unit}\nLoadState=loaded\nActiveState={active}\nSubState={sub}\nUnitFileState=enabled\n"
                )
            return "\n".join(blocks), 0
        if command.startswith("for path in") and "df -P" in command:
            percent = faults.disk_percent.get(name, 30)
            out = []
            for path in shlex.split(command.split(" in ", 1)[1].split(";", 1)[0]):
                out += [
                    f"path {path}",
                    "Filesystem 1024-blocks Used Available Capacity Mounted on",
                    f"/dev/vda 1000000 {percent * 10000} {(100 - percent) * 10000} {percent}% /",
                    "Filesystem Inodes IUsed IFree IUse% Mounted on",
                    "/dev/vda 100000 4000 96000 4% /",
                ]
            return "\n".join(out), 0
        if command.startswith("virt=$(systemd-detect-virt"):
            return "container", 0
        if command.startswith('echo "stamp'):
            return f"stamp -\nconfig {int(NOW - 3600)}\nlists {int(NOW - 600)}", 0
        if command.startswith("cat ") and command.endswith(".crt"):
            return self.certificate, 0
        if command.startswith("if nft list table"):
            live = "e" * 64 if name in faults.ruleset_changed else DIGEST
            return f"loaded\n{live}\n{DIGEST}", 0
        if command.startswith("if ! ip link show"):
            if name in faults.tunnel_down or "wg-quick@wg0.service" in stopped:
                return "wg0: no such interface", 1
            age = faults.handshake_age.get(name, 20)
            rows = [
                f"KEY{site.name}=\t{self.topology.gateway(site.name).public_address}:51820\t"
                f"{site.lan}\t{int(NOW - age)}"
                for site in self.topology.peer_sites(host.site)
            ]
            return "\n".join(rows), 0
        if command.startswith("doveadm"):
            if "dovecot.service" in stopped:
                return "Fatal: connect(/run/dovecot/replicator-doveadm) failed: No such file", 75
            failed = "y" if name in faults.replication_failed else "-"
            rows = [
                "username\tpriority\tfast sync\tfull sync\tsuccess sync\tfailed\tnext sync secs",
                f"alice@example.net\tnone\t00:00:04\t01:00:00\t00:00:04\t{failed}\t00:00:00",
                "bob@example.net\tnone\t00:00:09\t01:00:00\t00:00:09\t-\t00:00:00",
            ]
            return "\n".join(rows), 0
        if command.startswith("stat -c %Y"):
            return str(int(NOW - 3)), 0
        if command.startswith("if [ -s"):
            return "none", 0
        if command.startswith("awk '/"):
            return ("0;" if self._primary(name) else "1;"), 0
        if command.startswith("{ echo '## pending'"):
            return self.hoststate(name, command), 0
        if command.startswith("for path in") and "missing" in command:
            paths = shlex.split(command.split(" in ", 1)[1].split(";", 1)[0])
            owners = {
                "/var/vmail": "vmail vmail 700",
                "/var/lib/bulwark/files": "bulwark-files bulwark-files 750",
                "/var/lib/bulwark/directory": "openldap openldap 700",
                "/etc/bulwark/mailconfig": "root root 755",
                "/var/lib/bulwark/backups": "bulwark-backup bulwark-backup 700",
                "/etc/bulwark/backup": "root root 755",
                "/etc/bulwark/backup/passphrases": "root bulwark-backup 750",
                "/var/lib/bulwark-backup": "root root 700",
            }
            return "\n".join(
                f"{owners.get(path, 'bulwark-dav bulwark-dav 750')}\t{path}" for path in paths
            ), 0
        if command.startswith("for key in"):
            return self.sysctls(name, command), 0
        raise AssertionError(f"the simulated lab does not know {command!r}")

    def _primary(self, name: str) -> bool:
        return self.topology.host(name).site == self.topology.primary_site.name

    def ss(self, name: str) -> str:
        host = self.topology.host(name)
        gone = set(self.faults.sockets_gone.get(name, set()))
        daemons = {
            "dovecot.service": "dovecot",
            "nginx.service": "nginx",
            "postfix@-.service": "master",
        }
        stopped = self.faults.stopped.get(name, set())
        gone |= {daemons[unit] for unit in stopped if unit in daemons}
        processes = {"ssh": "sshd", "smtp": "master", "submissions": "master",
                     "submission": "master", "wireguard": "wireguard-go", "https-dav": "nginx",
                     "http-dav": "nginx", "dav-replication": "nginx", "https-files": "nginx",
                     "http-files": "nginx", "files-replication": "nginx",
                     "ftp": "pure-ftpd"}  # fmt: skip
        lines = []
        for port in expected_ports(self.topology, host):
            process = processes.get(port.service, "dovecot")
            if process in gone or not port.required:
                continue
            address = "0.0.0.0" if port.wildcard else port.addresses[0]  # noqa: S104 - text
            state = "UNCONN" if port.transport == "udp" else "LISTEN"
            lines.append(
                f"{port.transport} {state} 0 100 {address}:{port.port} 0.0.0.0:* "
                f'users:(("{process}",pid=1,fd=3))'
            )
        return "\n".join([*lines, *self.faults.extra_sockets.get(name, [])])

    def hoststate(self, name: str, command: str) -> str:
        expected = self.expected(name)
        edited = self.faults.edited.get(name, {})
        modes = self.faults.modes.get(name, {})
        lines = ["## pending", *sorted(self.faults.pending.get(name, set())), "## files"]
        for path, item in sorted(expected.items()):
            assert shlex.quote(path) in command
            digest = item.sha256
            if path in edited:
                digest = RenderedFile(name, "x", path, edited[path], "0", "", "", None).sha256
            mode = modes.get(path, item.mode.lstrip("0"))
            lines.append(f"file {item.user} {item.group} {mode} {digest}\t{path}")
        return "\n".join([*lines, "## packages", "## units"])

    def sysctls(self, name: str, command: str) -> str:
        live: dict[str, str] = {}
        for item in self.expected(name).values():
            if item.path.startswith("/etc/sysctl.d/"):
                live.update(sysctl_settings(item.content))
        live.update(self.faults.sysctl.get(name, {}))
        keys = shlex.split(command.split(" in ", 1)[1].split(";", 1)[0])
        return "\n".join(f"{key}\t{live[key]}" for key in keys)
