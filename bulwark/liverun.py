"""`bulwark status` and `bulwark drift` end to end, without the CLI's printing: check the
run before connecting, build each host's checks and script, run every host at once, judge.

Before anything connects: the inventory is validated, each `--limit` must select a host, the
inventory's own checks pass (the lab's: its containers are up), and for drift the vault opens
and holds every secret (drift renders what a deploy would write, secrets revealed, to hash it;
nothing revealed is ever printed).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pyinfra.api import Inventory

from bulwark.errors import BulwarkError
from bulwark.inventory import PyinfraRun, check_vault, limited_hosts, load_checked_run
from bulwark.livecheck import (
    Difference,
    Finding,
    HostContext,
    LiveCheck,
    Verdict,
    drift_differences,
    host_checks,
    host_script,
    postlude,
    prelude,
    split_output,
    status_findings,
)
from bulwark.probes import Listening, ManagedFiles
from bulwark.remote import Session, run_everywhere, ssh_argv
from bulwark.render import RenderedFile, render_host_configs
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology


@dataclass(frozen=True)
class Target:
    """The validated run: the loaded inventory, its topology and the hosts selected."""

    inventory: Inventory
    topology: Topology
    hosts: tuple[Host, ...]


@dataclass(frozen=True)
class HostStatus:
    host: Host
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def verdict(self) -> Verdict:
        return max((finding.verdict for finding in self.findings), default=Verdict.OK)


@dataclass(frozen=True)
class HostDrift:
    host: Host
    differences: tuple[Difference, ...]
    seconds: float
    unreachable: bool = False


def prepare(source: str, limit: Sequence[str]) -> Target:
    """Everything refused before connecting (BulwarkError, TopologyError): see the module."""
    if shutil.which("ssh") is None:
        raise BulwarkError("no `ssh` client on PATH (Debian: apt install openssh-client)")
    inventory, topology = load_checked_run(PyinfraRun(source=source, limit=tuple(limit)))
    names = limited_hosts(inventory, limit)
    return Target(inventory, topology, tuple(topology.host(name) for name in names))


def _argv(target: Target, host: Host) -> list[str]:
    return ssh_argv(host.name, target.inventory.get_host(host.name).data.dict())


def _unreachable(session: Session) -> str:
    return f"unreachable: {session.error}"


def status(
    target: Target,
    limits: Mapping[str, float],
    done: Callable[[Session], None] | None = None,
) -> dict[str, HostStatus]:
    """Each selected host's findings (an unreachable host: one FAIL `ssh` finding)."""
    plans: dict[str, tuple[tuple[LiveCheck, ...], str, str]] = {}
    jobs = {}
    for host in target.hosts:
        checks = host_checks(
            target.topology, host, generic=(Listening.for_host(target.topology, host),)
        )
        checks = tuple(check for check in checks if check.status_script() is not None)
        script = host_script([check.status_script() for check in checks])
        plans[host.name] = (checks, script.marker, script.text)
        jobs[host.name] = (_argv(target, host), script.text)
    sessions = run_everywhere(jobs, done=done)
    results = {}
    for host in target.hosts:
        session = sessions[host.name]
        checks, marker, _ = plans[host.name]
        seconds = session.finished - session.started
        if session.error is not None:
            finding = Finding("ssh", Verdict.FAIL, _unreachable(session))
            results[host.name] = HostStatus(host, (finding,), seconds)
            continue
        readings = split_output(session.output, marker)
        now, container = prelude(readings)
        if now is None:
            finding = Finding("ssh", Verdict.FAIL, "the host's script printed nothing usable")
            results[host.name] = HostStatus(host, (finding,), seconds)
            continue
        context = HostContext(
            target.topology,
            host,
            now,
            container,
            session.started,
            session.finished,
            limits,
            host_end=postlude(readings),
        )
        findings = status_findings(checks, readings, context)
        results[host.name] = HostStatus(host, tuple(findings), seconds)
    return results


def drift_secrets(target: Target) -> SecretStore:
    """The vault, checked as a deploy checks it (before connecting)."""
    return check_vault(target.topology)


def expected_files(
    topology: Topology, host: Host, secrets: SecretStore, checks: Sequence[LiveCheck]
) -> dict[str, RenderedFile]:
    """Every file a deploy of `host` leaves: the rendered ones, and what checks add."""
    rendered = {
        item.path: item for item in render_host_configs(topology, host, secrets, reveal=True)
    }
    for check in checks:
        for item in check.expected_files(rendered):
            rendered[item.path] = item
    return rendered


def drift(
    target: Target,
    secrets: SecretStore,
    done: Callable[[Session], None] | None = None,
) -> dict[str, HostDrift]:
    """Each selected host's differences from what a deploy would leave."""
    plans = {}
    jobs = {}
    for host in target.hosts:
        checks = host_checks(
            target.topology,
            host,
            generic=(ManagedFiles(), Listening.for_host(target.topology, host)),
        )
        expected = expected_files(target.topology, host, secrets, checks)
        context = HostContext(target.topology, host, 0.0, False, expected=expected)
        scripts = [check.drift_script(context) for check in checks]
        script = host_script(scripts)
        plans[host.name] = (checks, scripts, script.marker, context)
        jobs[host.name] = (_argv(target, host), script.text)
    sessions = run_everywhere(jobs, done=done)
    results = {}
    for host in target.hosts:
        session = sessions[host.name]
        checks, scripts, marker, context = plans[host.name]
        seconds = session.finished - session.started
        if session.error is not None:
            difference = Difference("ssh", _unreachable(session))
            results[host.name] = HostDrift(host, (difference,), seconds, unreachable=True)
            continue
        readings = split_output(session.output, marker)
        now, container = prelude(readings)
        if now is None:
            difference = Difference("ssh", "the host's script printed nothing usable")
            results[host.name] = HostDrift(host, (difference,), seconds, unreachable=True)
            continue
        context = dataclasses.replace(
            context,
            now=now,
            container=container,
            started=session.started,
            finished=session.finished,
            host_end=postlude(readings),
        )
        differences = drift_differences(checks, scripts, readings, context)
        results[host.name] = HostDrift(host, tuple(differences), seconds)
    return results
