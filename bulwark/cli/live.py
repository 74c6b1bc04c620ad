"""`bulwark status` and `bulwark drift`: the live platform, read-only (bulwark.liverun)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import click

from bulwark import liverun
from bulwark.livecheck import THRESHOLDS, Verdict, as_json, limits
from bulwark.remote import Session
from bulwark.topology import Topology

_LIMIT = click.option(
    "--limit",
    multiple=True,
    metavar="PATTERN",
    help="Only these hosts: a host name, glob or group (site) name, as pyinfra's --limit; "
    "repeat it or separate with commas. One that names no host is an error.",
)
_INVENTORY = click.argument("inventory", type=click.Path(exists=True, dir_okay=False))


def _patterns(limit: Sequence[str]) -> tuple[str, ...]:
    return tuple(part.strip() for item in limit for part in item.split(",") if part.strip())


@contextmanager
def _progress(label: str, hosts: int) -> Iterator[Callable[[Session], None]]:
    """A progress bar on stderr while the hosts answer (a terminal only: logs stay clean)."""
    if not sys.stderr.isatty():
        yield lambda session: None
        return
    with click.progressbar(length=hosts, label=label, file=sys.stderr) as bar:
        yield lambda session: bar.update(1)


def _threshold_help() -> str:
    return "; ".join(
        f"{name} ({threshold.value:g} {threshold.unit})" for name, threshold in THRESHOLDS.items()
    )


def _site_heading(topology: Topology, site: str) -> str:
    return f"{site} (primary site)" if topology.site(site).primary else site


_COLOURS = {Verdict.OK: "green", Verdict.WARN: "yellow", Verdict.FAIL: "red"}
# `status`'s exit when the worst finding is a WARN: not 0 (something needs a look), not 1 (a
# FAIL), not 2 (a refused run); monitoring tells the three apart.
WARN_EXIT = 3


@click.command("status")
@_INVENTORY
@_LIMIT
@click.option(
    "--json", "as_json_output", is_flag=True, help="One JSON object on stdout, nothing else."
)
@click.option("--warn-ok", is_flag=True, help="Exit 0 when the worst is a WARN.")
@click.option(
    "--threshold",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a threshold for this run. Thresholds (defaults): " + _threshold_help(),
)
def status(
    inventory: str,
    limit: tuple[str, ...],
    as_json_output: bool,
    warn_ok: bool,
    threshold: tuple[str, ...],
) -> None:
    """Live health of every host of INVENTORY, read-only: OK, WARN or FAIL per check with the
    figure behind it, per site and host.

    Each role declares its checks (units, the catalogue's ports and nothing else public,
    certificates, the tunnel's handshakes, mail and DAV replication, the write switch, disks,
    clock, security updates). One SSH session per host, every host at once.

    Exit status: 0 when every check is OK, 1 on any FAIL, 3 when the worst is a WARN (0 with
    --warn-ok), 2 when the run is refused before connecting (inventory, --limit, --threshold).
    """
    values = limits(threshold)
    target = liverun.prepare(inventory, _patterns(limit))
    started = time.monotonic()
    with _progress("status", len(target.hosts)) as done:
        results = liverun.status(target, values, done)
    elapsed = time.monotonic() - started
    counts = {verdict: 0 for verdict in Verdict}
    for result in results.values():
        for finding in result.findings:
            counts[finding.verdict] += 1
    overall = max((result.verdict for result in results.values()), default=Verdict.OK)
    if as_json_output:
        click.echo(
            json.dumps(
                _status_json(target, results, counts, overall, elapsed), indent=2, sort_keys=True
            )
        )
    else:
        _print_status(target, results)
        summary = ", ".join(f"{counts[verdict]} {verdict.name}" for verdict in Verdict)
        click.echo(f"{len(results)} hosts: {summary} ({elapsed:.1f} s)")
    if overall is Verdict.FAIL:
        sys.exit(1)
    if overall is Verdict.WARN and not warn_ok:
        sys.exit(WARN_EXIT)


def _hosts_by_site(target: liverun.Target) -> Iterator[tuple[str, list]]:
    """Each site of the run, in the topology's order, with its hosts (sites without any left
    out, as `--limit` may leave them)."""
    for site in target.topology.sites:
        if hosts := [host for host in target.hosts if host.site == site.name]:
            yield site.name, hosts


def _print_status(target: liverun.Target, results: dict[str, liverun.HostStatus]) -> None:
    width = max(
        (len(finding.check) for result in results.values() for finding in result.findings),
        default=0,
    )
    for site, hosts in _hosts_by_site(target):
        click.echo(_site_heading(target.topology, site))
        for host in hosts:
            result = results[host.name]
            click.echo(f"  {host.name} ({', '.join(host.roles)})")
            for finding in result.findings:
                verdict = click.style(f"{finding.verdict.name:<4}", fg=_COLOURS[finding.verdict])
                click.echo(f"    {verdict}  {finding.check:<{width}}  {finding.figure}")


def _status_json(
    target: liverun.Target,
    results: dict[str, liverun.HostStatus],
    counts: dict[Verdict, int],
    overall: Verdict,
    elapsed: float,
) -> dict:
    return {
        "format": 1,
        "verdict": overall.name,
        "counts": {verdict.name: count for verdict, count in counts.items()},
        "seconds": round(elapsed, 2),
        "sites": {
            site.name: {
                "primary": site.primary,
                "hosts": [host.name for host in target.hosts if host.site == site.name],
            }
            for site in target.topology.sites
            if any(host.site == site.name for host in target.hosts)
        },
        "hosts": {
            name: {
                "site": result.host.site,
                "roles": list(result.host.roles),
                "verdict": result.verdict.name,
                "seconds": round(result.seconds, 2),
                "checks": [
                    {
                        "check": finding.check,
                        "verdict": finding.verdict.name,
                        "figure": finding.figure,
                        "value": as_json(finding.value),
                    }
                    for finding in result.findings
                ],
            }
            for name, result in results.items()
        },
    }


@click.command("drift")
@_INVENTORY
@_LIMIT
@click.option(
    "--json", "as_json_output", is_flag=True, help="One JSON object on stdout, nothing else."
)
def drift(inventory: str, limit: tuple[str, ...], as_json_output: bool) -> None:
    """Compare every host of INVENTORY with what a deploy would leave, read-only.

    Every managed file (content hash, owner, mode; a file holding secrets only ever as
    "differs"), the directories the roles make, the pending actions an interrupted deploy left
    (a daemon never reloaded), each role's sysctls live (`sysctl -n`, so a runtime revert
    shows), the live nftables ruleset against the last apply, units running and enabled as
    the roles keep them, and the listening sockets against the catalogue.

    Needs the vault (BULWARK_VAULT_KEY): it renders, secrets revealed, what a deploy writes, to
    hash it. Exit status: 0 no drift, 1 any difference (or a host unreachable), 2 when refused
    before connecting.
    """
    target = liverun.prepare(inventory, _patterns(limit))
    secrets = liverun.drift_secrets(target)
    started = time.monotonic()
    with _progress("drift", len(target.hosts)) as done:
        results = liverun.drift(target, secrets, done)
    elapsed = time.monotonic() - started
    total = sum(len(result.differences) for result in results.values())
    drifted = sum(1 for result in results.values() if result.differences)
    if as_json_output:
        click.echo(json.dumps(_drift_json(results, total, elapsed), indent=2, sort_keys=True))
    else:
        _print_drift(target, results)
        if total:
            click.echo(
                f"drift on {drifted} of {len(results)} hosts: {total} "
                f"difference{'s' if total != 1 else ''} ({elapsed:.1f} s)"
            )
        else:
            click.echo(f"no drift on {len(results)} hosts ({elapsed:.1f} s)")
    if total:
        sys.exit(1)


def _print_drift(target: liverun.Target, results: dict[str, liverun.HostDrift]) -> None:
    width = max(
        (len(item.subject) for result in results.values() for item in result.differences),
        default=0,
    )
    for site, hosts in _hosts_by_site(target):
        click.echo(_site_heading(target.topology, site))
        for host in hosts:
            result = results[host.name]
            if not result.differences:
                click.echo(f"  {host.name}: no drift")
                continue
            count = len(result.differences)
            click.echo(f"  {host.name}: {count} difference{'s' if count != 1 else ''}")
            for item in result.differences:
                subject = click.style(f"{item.subject:<{width}}", fg="red")
                click.echo(f"    {subject}  {item.detail}")


def _drift_json(results: dict[str, liverun.HostDrift], total: int, elapsed: float) -> dict:
    return {
        "format": 1,
        "differences": total,
        "seconds": round(elapsed, 2),
        "hosts": {
            name: {
                "site": result.host.site,
                "unreachable": result.unreachable,
                "seconds": round(result.seconds, 2),
                "differences": [
                    {"subject": item.subject, "detail": item.detail} for item in result.differences
                ],
            }
            for name, result in results.items()
        },
    }
