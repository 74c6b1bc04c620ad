"""`bulwark backup restore`, `drill`, `rollback` and `export-keys`: the operator's paths to
the backups (roles/backup.py), each over one SSH session per host."""

from __future__ import annotations

import contextlib
import datetime
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from bulwark import account_data, backup, liverun
from bulwark.cli.live import _INVENTORY
from bulwark.errors import BulwarkError
from bulwark.inventory import check_vault
from bulwark.remote import Session, run_everywhere, ssh_argv
from bulwark.secret import write_private_file
from bulwark.secret_names import backup_passphrase_name
from bulwark.topology import Host
from roles.backup import CLIENT_CONFIG, DRILL_UNIT, SCRIPT, SERVER_CONFIG, fresh_run

# Seconds a restore, a drill or a rollback may take on one host.
TIMEOUT = 3600


@click.group("backup")
def backup_group() -> None:
    """The other site's encrypted, append-only backups (roles/backup.py)."""


def _argv(target: liverun.Target, host: Host) -> list[str]:
    return ssh_argv(host.name, target.inventory.get_host(host.name).data.dict())


def _agent(config: str, *args: str, as_backup_user: bool = False) -> str:
    """The agent's command line on a host (as the repositories' owner on a backup host)."""
    argv = [SCRIPT, "--config", config, *args]
    if as_backup_user:
        argv = ["runuser", "-u", backup.USER, "--", *argv]
    return shlex.join(argv)


def _run_one(target: liverun.Target, host: Host, script: str) -> Session:
    return run_everywhere({host.name: (_argv(target, host), script)}, timeout=TIMEOUT)[host.name]


def _on_backup_hosts(target: liverun.Target, script: str) -> list[tuple[str, Session]]:
    """`script` run on every backup host at once: (host, session), by host name."""
    jobs = {
        host.name: (_argv(target, host), script)
        for host in target.topology.hosts
        if backup.repositories_on(target.topology, host)
    }
    if not jobs:
        raise BulwarkError("no host of the inventory has the backup role")
    return sorted(run_everywhere(jobs, timeout=TIMEOUT).items())


def _result(session: Session) -> dict:
    """The agent's JSON report, or a BulwarkError with its reason."""
    if session.error:
        raise BulwarkError(f"{session.host}: unreachable: {session.error}")
    try:
        return json.loads(session.output)
    except json.JSONDecodeError:
        reason = session.output.strip()[-500:] or "no output"
        raise BulwarkError(f"{session.host}: {reason}") from None


@contextlib.contextmanager
def _failure_exits() -> Iterator[None]:
    """A host's failure: FAILED and its reason on stderr, exit 1 (bad arguments are refused
    before, with their own message and click's exit status)."""
    try:
        yield
    except BulwarkError as error:
        click.echo(f"FAILED: {error}", err=True)
        sys.exit(1)


def _restore_host(target: liverun.Target, kind: str) -> Host:
    """The host a restore of `kind` goes to: the primary site's host keeping it (it takes the
    writes; the replicas and the other mail store follow it)."""
    primary = target.topology.primary_site.name
    for host in sorted(target.topology.hosts, key=lambda host: (host.site != primary, host.name)):
        if kind in backup.backed_up_volumes(host) and backup.repository_of(target.topology, host):
            return host
    raise BulwarkError(f"--what {kind}: no host of the inventory backs up {kind} data")


@backup_group.command()
@_INVENTORY
@click.option("--account", required=True, metavar="USER", help="The account's user name.")
@click.option("--what", "kind", required=True, type=click.Choice(account_data.KINDS))
@click.option(
    "--at",
    metavar="TIME",
    help="Restore from the newest archive made at or before TIME (ISO 8601, UTC unless it "
    "says otherwise; default: the newest archive).",
)
def restore(inventory: str, account: str, kind: str, at: str | None) -> None:
    """Bring back ACCOUNT's deleted mail, calendars and contacts, or files from the backup into
    the live account, on the primary site's host keeping them: whatever the account lacks is
    copied back; nothing present is replaced (a message whose flags changed is the same
    message). Exit 1 if it failed."""
    if at is not None:
        try:
            moment = datetime.datetime.fromisoformat(at)
        except ValueError:
            raise BulwarkError(f"--at: not an ISO 8601 time: {at!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        at = moment.isoformat()
    target = liverun.prepare(inventory, ())
    if account not in {known.user for known in target.topology.accounts}:
        raise BulwarkError(f"--account: no account {account!r} in the inventory")
    host = _restore_host(target, kind)
    args = ["restore", "--account", account, "--kind", kind, *(["--at", at] if at else [])]
    with _failure_exits():
        result = _result(_run_one(target, host, _agent(CLIENT_CONFIG, *args)))
    click.echo(
        f"{host.name}: {account}'s {kind}: {result['copied']} restored from "
        f"{result['archive']}, {result['already_present']} already there"
    )


@backup_group.command()
@_INVENTORY
def drill(inventory: str) -> None:
    """Run the restore drill on every backup host now (what its daily timer runs): check each
    repository, extract its newest archive into a scratch directory and count every account's
    items. Prints each repository's counts; exit 1 if any repository failed."""
    target = liverun.prepare(inventory, ())
    script = (
        f"{shlex.join(fresh_run(DRILL_UNIT))}; code=$?\n"
        f"id=$(systemctl show --property InvocationID --value {DRILL_UNIT})\n"
        f'journalctl --output cat --no-pager _SYSTEMD_INVOCATION_ID="$id" | '
        "grep -v '^$' | tail -n 200\n"
        'exit "$code"\n'
    )
    failed = False
    for name, session in _on_backup_hosts(target, script):
        lines = session.output.splitlines()
        report = _json_tail(lines)
        if session.error or report is None:
            failed = True
            reason = session.error or " / ".join(
                line for line in lines if "bulwark-backup drill:" in line
            )
            click.echo(f"{name}: drill FAILED: {reason or 'no report'}", err=True)
            continue
        for source, repository in sorted(report.items()):
            if "counts" not in repository:
                click.echo(f"{name}: {source}: {repository['state']}")
                continue
            counts = "; ".join(
                f"{user}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
                for user, kinds in sorted(repository["counts"].items())
            )
            click.echo(
                f"{name}: {source}: {repository['archive']} "
                f"({repository['age_hours']} h old) restored and read: {counts or 'no account'}"
            )
    if failed:
        sys.exit(1)


def _json_tail(lines: list[str]) -> dict | None:
    """The agent's JSON report at the end of its journal output, if it wrote one."""
    for start in range(len(lines) - 1, -1, -1):
        if lines[start] == "{":
            try:
                return json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                return None
    return None


@backup_group.command()
@_INVENTORY
@click.option("--source", required=True, metavar="HOST", help="The data host whose repository.")
@click.option("--yes", is_flag=True, help="Roll back: nothing is changed without it.")
def rollback(inventory: str, source: str, yes: bool) -> None:
    """Return SOURCE's repository to the last state its backup host verified, after the prune
    stopped at archives removed through SOURCE's key: the segments written since go, then
    SOURCE forgets borg's records of the newer state. Archives made after that state are lost
    with the attack. Asks for --yes. Exit 1 if it failed."""
    target = liverun.prepare(inventory, ())
    try:
        host = target.topology.host(source)
    except KeyError:
        raise BulwarkError(f"--source: no host {source!r} in the inventory") from None
    repository = backup.repository_of(target.topology, host)
    if repository is None:
        raise BulwarkError(f"--source: {source} sends no backups")
    if not yes:
        raise BulwarkError(
            f"rolling back {repository.path} on {repository.backup_host.name} drops what was "
            "written since its last verified state: add --yes"
        )
    with _failure_exits():
        command = _agent(SERVER_CONFIG, "rollback", source, as_backup_user=True)
        result = _result(_run_one(target, repository.backup_host, command))
        _result(_run_one(target, host, _agent(CLIENT_CONFIG, "forget-repository-state")))
    click.echo(
        f"{repository.backup_host.name}: {source}'s repository back at transaction "
        f"{result['transaction']} ({result['segments_dropped']} segments dropped); "
        f"{len(result['archives'])} archives: {', '.join(result['archives'])}"
    )


@backup_group.command()
@_INVENTORY
@click.option("--account", required=True, metavar="USER", help="The account's user name.")
@click.option("--yes", is_flag=True, help="Purge: nothing is changed without it.")
def purge(inventory: str, account: str, yes: bool) -> None:
    """Remove every trace of ACCOUNT's data from every archive on every backup host (`borg
    recreate` without its directories, then compaction): the prune of one account support does
    on request. Its live data is not touched. Asks for --yes. Exit 1 if any host failed."""
    target = liverun.prepare(inventory, ())
    if account not in {known.user for known in target.topology.accounts}:
        raise BulwarkError(f"--account: no account {account!r} in the inventory")
    if not yes:
        raise BulwarkError(
            f"purging {account}'s data from every backup cannot be undone: add --yes"
        )
    command = _agent(SERVER_CONFIG, "purge", "--account", account, as_backup_user=True)
    failed = False
    for name, session in _on_backup_hosts(target, command):
        try:
            report = _result(session)
        except BulwarkError as error:
            failed = True
            click.echo(f"FAILED: {error}", err=True)
            continue
        if not report:
            click.echo(f"{name}: no repository here holds data of {account}")
        for source, purged in sorted(report.items()):
            click.echo(
                f"{name}: {source}: {account}'s data removed from {purged['archives']} archives"
            )
    if failed:
        sys.exit(1)


@backup_group.command("export-keys")
@_INVENTORY
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write (mode 0600; never overwritten): print it, then delete it.",
)
def export_keys(inventory: str, out: Path) -> None:
    """Write a paper copy of every repository's key (`borg key export --paper`, read on its
    backup host) and passphrase (from the vault), for escrow away from both sites: with it
    and a copy of a repository, its data can be read after losing both the vault and a site.
    The file holds secrets: it is written 0600 and is never overwritten."""
    if out.exists():
        raise BulwarkError(f"--out: {out} exists; it is never overwritten")
    target = liverun.prepare(inventory, ())
    vault = check_vault(target.topology)
    repositories = [
        repository
        for host in sorted(target.topology.hosts, key=lambda host: host.name)
        for repository in backup.repositories_on(target.topology, host)
    ]
    if not repositories:
        raise BulwarkError("no host of the inventory has the backup role")
    jobs = {
        repository.source.name: (
            _argv(target, repository.backup_host),
            shlex.join(["runuser", "-u", backup.USER, "--", "borg", "key", "export", "--paper",
                        repository.path]),
        )
        for repository in repositories
    }  # fmt: skip
    sessions = run_everywhere(jobs, timeout=TIMEOUT)
    sections = [
        "bulwark backup keys: KEEP OFFLINE, AWAY FROM BOTH SITES. Whoever holds this and a copy "
        "of a repository reads its data.",
        "",
    ]
    for repository in repositories:
        session = sessions[repository.source.name]
        if session.error or "BORG PAPER KEY" not in session.output:
            reason = session.error or "not initialised yet?"
            raise BulwarkError(
                f"{repository.backup_host.name}: cannot export the key of {repository.path}: "
                f"{reason}"
            )
        passphrase = vault.get(backup_passphrase_name(repository.source)).reveal()
        sections += [
            f"== {repository.source.name} -> {repository.url()}",
            f"passphrase: {passphrase}",
            session.output.strip(),
            "",
        ]
    write_private_file(out, "\n".join(sections).encode(), replace=False)
    click.echo(f"wrote {len(repositories)} repository keys and passphrases to {out} (mode 0600)")
