"""`bulwark storage unlock`: the operator's path to open the volumes a reboot left closed."""

from __future__ import annotations

import sys

import click

from bulwark import liverun, luks
from bulwark.cli.live import _INVENTORY, _LIMIT, _patterns
from bulwark.inventory import check_vault
from bulwark.remote import run_everywhere, ssh_argv
from bulwark.secret_names import luks_key_name
from bulwark.volumes import volumes_for

# Seconds one host may take: Argon2id needs a few seconds per volume on a slow host.
UNLOCK_TIMEOUT = 300


@click.group("storage")
def storage() -> None:
    """The hosts' LUKS2 volumes (roles/storage.py)."""


@storage.command()
@_INVENTORY
@_LIMIT
def unlock(inventory: str, limit: tuple[str, ...]) -> None:
    """Open every closed volume of INVENTORY's hosts, mount it and start the units keeping data
    on it. Each key goes from the vault over SSH into cryptsetup's stdin and is never written to
    the host. Opens only: a device that is not LUKS2 is refused. Exit 1 if any host failed."""
    target = liverun.prepare(inventory, _patterns(limit))
    secrets = check_vault(target.topology)
    jobs = {}
    for host in target.hosts:
        volumes = [
            (luks.volume_spec(host, name), secrets.get(luks_key_name(host, name)))
            for name in volumes_for(host)
        ]
        if volumes:
            argv = ssh_argv(host.name, target.inventory.get_host(host.name).data.dict())
            jobs[host.name] = (argv, luks.unlock_script(volumes))
    failed = False
    for name, session in sorted(run_everywhere(jobs, timeout=UNLOCK_TIMEOUT).items()):
        lines = [line for line in session.output.splitlines() if line.strip()]
        if session.error is None and lines[-1:] == [luks.UNLOCKED]:
            click.echo(f"{name}: {'; '.join(lines[:-1])}")
            continue
        failed = True
        why = f"unreachable: {session.error}" if session.error else " / ".join(lines[-3:])
        click.echo(f"{name}: FAILED: {why}", err=True)
    if not jobs:
        click.echo("no host of the selection has a volume")
    if failed:
        sys.exit(1)
