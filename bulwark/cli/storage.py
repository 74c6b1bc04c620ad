"""`bulwark storage unlock` and `rotate-key`: the operator's paths to the hosts' LUKS volumes."""

from __future__ import annotations

import sys

import click

from bulwark import liverun, luks
from bulwark.cli.live import _INVENTORY, _LIMIT, _patterns
from bulwark.errors import BulwarkError
from bulwark.inventory import check_vault
from bulwark.platform_secrets import new_luks_key
from bulwark.remote import run_everywhere, ssh_argv
from bulwark.secret_names import luks_key_name, luks_next_key_name
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


@storage.command("rotate-key")
@_INVENTORY
@_LIMIT
@click.option(
    "--volume",
    "only",
    multiple=True,
    metavar="NAME",
    help="Only this volume of each host (repeatable; default: every volume).",
)
def rotate_key(inventory: str, limit: tuple[str, ...], only: tuple[str, ...]) -> None:
    """Replace the key of each volume of INVENTORY's hosts: a new key is saved in the vault
    first (luks-next/HOST/VOLUME), added to the volume with the old key, proven to open it,
    then the old key is removed and the vault's entry replaced. The recovery passphrase stays.
    A run cut short is finished by the next one. Exit 1 if any host failed."""
    target = liverun.prepare(inventory, _patterns(limit))
    vault = check_vault(target.topology)
    known = {name for host in target.hosts for name in volumes_for(host)}
    if unknown := sorted(set(only) - known):
        raise BulwarkError(
            f"--volume: no selected host has {', '.join(unknown)}; they have "
            f"{', '.join(sorted(known)) or 'no volume'}"
        )
    selected = {
        host.name: [name for name in volumes_for(host) if not only or name in only]
        for host in target.hosts
    }
    for host in target.hosts:
        for name in selected[host.name]:
            if luks_next_key_name(host, name) not in vault:
                vault.set(luks_next_key_name(host, name), new_luks_key())
    vault.save()  # before any host holds a key the vault might lose
    jobs = {
        host.name: (
            ssh_argv(host.name, target.inventory.get_host(host.name).data.dict()),
            luks.rotate_script(
                [
                    (
                        luks.volume_spec(host, name),
                        vault.get(luks_key_name(host, name)),
                        vault.get(luks_next_key_name(host, name)),
                    )
                    for name in selected[host.name]
                ]
            ),
        )
        for host in target.hosts
        if selected[host.name]
    }
    failed = False
    for name, session in sorted(run_everywhere(jobs, timeout=UNLOCK_TIMEOUT).items()):
        host = target.topology.host(name)
        lines = [line for line in session.output.splitlines() if line.strip()]
        for volume in selected[name]:
            if f"{volume}: {luks.ROTATED}" in lines:
                vault.set(
                    luks_key_name(host, volume),
                    vault.get(luks_next_key_name(host, volume)).reveal(),
                )
                vault.delete(luks_next_key_name(host, volume))
                click.echo(f"{name}: {volume}: key rotated")
        if any(f"{volume}: {luks.ROTATED}" not in lines for volume in selected[name]):
            failed = True
            why = f"unreachable: {session.error}" if session.error else " / ".join(lines[-3:])
            click.echo(f"{name}: FAILED: {why} (the next run finishes it)", err=True)
    vault.save()
    if failed:
        sys.exit(1)
