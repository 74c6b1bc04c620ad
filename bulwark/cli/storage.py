"""`bulwark storage unlock`, `rotate-key`, `backup-headers` and `restore-header`: the
operator's paths to the hosts' LUKS volumes, each over one SSH session per host."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from bulwark import liverun, luks, luks_header
from bulwark.cli.live import _INVENTORY, _LIMIT, _patterns
from bulwark.errors import BulwarkError
from bulwark.inventory import check_vault
from bulwark.luks_header import HeaderBackup
from bulwark.platform_secrets import new_luks_key
from bulwark.remote import Session, run_everywhere, ssh_argv
from bulwark.secret_names import (
    luks_header_name,
    luks_key_name,
    luks_next_key_name,
    luks_recovery_name,
)
from bulwark.topology import Host
from bulwark.vault import Vault
from bulwark.volumes import volumes_for

# Seconds one host may take: Argon2id needs a few seconds per volume on a slow host.
UNLOCK_TIMEOUT = 300


@click.group("storage")
def storage() -> None:
    """The hosts' LUKS2 volumes (roles/storage.py)."""


def _why(session: Session) -> str:
    """Why a host's session failed: ssh's words, or the tools' last messages (never a line of
    a header script, which may carry a header)."""
    if session.error:
        return f"unreachable: {session.error}"
    return " / ".join(luks_header.messages(session.output)[-3:]) or "no output"


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
            jobs[host.name] = (_argv(target, host), luks.unlock_script(volumes))
    failed = False
    for name, session in sorted(run_everywhere(jobs, timeout=UNLOCK_TIMEOUT).items()):
        lines = [line for line in session.output.splitlines() if line.strip()]
        if session.error is None and lines[-1:] == [luks.UNLOCKED]:
            click.echo(f"{name}: {'; '.join(lines[:-1])}")
            continue
        failed = True
        click.echo(f"{name}: FAILED: {_why(session)}", err=True)
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
    The header backup in the vault is then refreshed (the key slots changed). A run cut short
    is finished by the next one. Exit 1 if any host failed."""
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
    # The header backup runs in the same session, once every volume of the host is rotated.
    jobs = {
        host.name: (
            _argv(target, host),
            luks.rotate_script(
                [
                    (
                        luks.volume_spec(host, name),
                        vault.get(luks_key_name(host, name)),
                        vault.get(luks_next_key_name(host, name)),
                    )
                    for name in selected[host.name]
                ]
            )
            + _backup_script(vault, host, selected[host.name], send=True),
        )
        for host in target.hosts
        if selected[host.name]
    }
    failed = False
    for name, session in sorted(run_everywhere(jobs, timeout=UNLOCK_TIMEOUT).items()):
        host = target.topology.host(name)
        lines = [line for line in session.output.splitlines() if line.strip()]
        rotated = [volume for volume in selected[name] if f"{volume}: {luks.ROTATED}" in lines]
        for volume in rotated:
            vault.set(
                luks_key_name(host, volume),
                vault.get(luks_next_key_name(host, volume)).reveal(),
            )
            vault.delete(luks_next_key_name(host, volume))
            click.echo(f"{name}: {volume}: key rotated")
        if rotated != selected[name]:
            failed = True
            click.echo(f"{name}: FAILED: {_why(session)} (the next run finishes it)", err=True)
        elif not _escrow(vault, host, rotated, session, check=False)[0]:
            failed = True
            click.echo(
                f"{name}: the header backups are stale: run bulwark storage backup-headers",
                err=True,
            )
    vault.save()
    if failed:
        sys.exit(1)


@storage.command("backup-headers")
@_INVENTORY
@_LIMIT
@click.option(
    "--check",
    is_flag=True,
    help="Only compare the vault's backups with the live headers (UUID and digest); write "
    "nothing; exit 1 naming each volume whose backup is stale or missing.",
)
def backup_headers(inventory: str, limit: tuple[str, ...], check: bool) -> None:
    """Back up the LUKS header of every volume of INVENTORY's hosts into the vault
    (luks-header/HOST/VOLUME, only where it changed): `cryptsetup luksHeaderBackup` into /run
    on the host, read over SSH, removed at once. The header holds the key slots; the vault
    encrypts it. Exit 1 if any host failed (or, with --check, any backup is stale)."""
    target = liverun.prepare(inventory, _patterns(limit))
    vault = check_vault(target.topology)
    jobs = {
        host.name: (_argv(target, host), _backup_script(vault, host, volumes_for(host), not check))
        for host in target.hosts
        if volumes_for(host)
    }
    if not jobs:
        click.echo("no host of the selection has a volume")
    current, written = True, False
    for name, session in sorted(run_everywhere(jobs, timeout=UNLOCK_TIMEOUT).items()):
        host = target.topology.host(name)
        host_current, host_written = _escrow(vault, host, volumes_for(host), session, check)
        current &= host_current
        written |= host_written
    if written:
        vault.save()
    if not current:
        sys.exit(1)


@storage.command("restore-header")
@_INVENTORY
@click.argument("host_name", metavar="HOST")
@click.argument("volume", metavar="VOLUME")
@click.option("--yes", is_flag=True, help="Write the header: nothing is written without it.")
def restore_header(inventory: str, host_name: str, volume: str, yes: bool) -> None:
    """Write the vault's header backup of HOST's VOLUME over the device's LUKS header
    (`cryptsetup luksHeaderRestore`), then say whether the vault's key opens it. Refused on
    the host, before anything is written, unless the device's header has the backup's UUID or
    no valid LUKS header is there: a header of another volume is never restored. Asks for
    --yes. Exit 1 if refused or failed."""
    target = liverun.prepare(inventory, (host_name,))
    host = next((host for host in target.hosts if host.name == host_name), None)
    if host is None:
        raise BulwarkError(f"HOST: {host_name!r} is not one host of the inventory")
    if volume not in volumes_for(host):
        raise BulwarkError(
            f"{host.name} has no volume {volume!r}; it has {', '.join(volumes_for(host)) or 'none'}"
        )
    vault = check_vault(target.topology)
    spec = luks.volume_spec(host, volume)
    where = f"{host.name}: volume {volume} on {spec.device}"
    backup = _stored(vault, host, volume)
    if backup is None:
        raise BulwarkError(
            f"{where}: no header backup in the vault ({luks_header_name(host, volume)}): "
            "nothing to restore"
        )
    if not yes:
        raise BulwarkError(
            f"{where}: this writes the vault's header backup (UUID {backup.uuid}) over the "
            "device's LUKS header, key slots included; the host refuses it unless the device's "
            "header has that UUID or none is valid. Run again with --yes to write it"
        )
    script = luks_header.restore_script(spec, backup, vault.get(luks_key_name(host, volume)))
    session = run_everywhere({host.name: (_argv(target, host), script)}, UNLOCK_TIMEOUT)[host.name]
    found = luks_header.read_restore(session.output, volume)
    if luks_header.REFUSED in found:
        click.echo(
            f"{where}: refused: its LUKS header has UUID {found.get('device')}, the backup "
            f"{backup.uuid}: not this volume's header; nothing was written",
            err=True,
        )
        sys.exit(1)
    if luks_header.RESTORED not in found:
        click.echo(f"{where}: FAILED: {_why(session)}", err=True)
        sys.exit(1)
    if found.get("key-opens") != "yes":
        click.echo(
            f"{where}: header restored (UUID {backup.uuid}), but the vault's key does not open "
            f"it: try the recovery passphrase ({luks_recovery_name(host, volume)})",
            err=True,
        )
        sys.exit(1)
    click.echo(f"{where}: header restored (UUID {backup.uuid}); the vault's key opens it")


def _argv(target: liverun.Target, host: Host) -> list[str]:
    return ssh_argv(host.name, target.inventory.get_host(host.name).data.dict())


def _stored(vault: Vault, host: Host, volume: str) -> HeaderBackup | None:
    """The vault's header backup of `host`'s `volume`, None if it has none."""
    name = luks_header_name(host, volume)
    if name not in vault:
        return None
    return HeaderBackup.from_value(name, vault.get(name).reveal())


def _backup_script(vault: Vault, host: Host, volumes: Sequence[str], send: bool) -> str:
    """The host's backup script for `volumes`, each sent only if it differs from the vault's."""
    return luks_header.backup_script(
        [
            (luks.volume_spec(host, name), backup.sha256 if backup else "")
            for name in volumes
            for backup in [_stored(vault, host, name)]
        ],
        send,
    )


def _escrow(
    vault: Vault, host: Host, volumes: Sequence[str], session: Session, check: bool
) -> tuple[bool, bool]:
    """Print each volume's header backup state and, unless `check`, store the new ones in the
    vault (saved by the caller): (every backup is now current, any was stored)."""
    live = luks_header.read_headers(session.output) if session.error is None else {}
    current, written = True, False
    for volume in volumes:
        where = f"{host.name}: {volume}"
        stored = _stored(vault, host, volume)
        found = live.get(volume)
        if found is None:
            click.echo(f"{where}: FAILED: {_why(session)}", err=True)
            current = False
        elif stored is not None and stored.matches(found):
            click.echo(f"{where}: header backup current")
        elif check:
            why = "none in the vault" if stored is None else "the live header changed"
            click.echo(f"{where}: header backup stale: {why} (UUID {found.uuid})", err=True)
            current = False
        else:
            try:
                backup = HeaderBackup.received(where, found.uuid, found.sha256, found.data)
            except luks_header.HeaderError as error:
                click.echo(f"FAILED: {error}", err=True)
                current = False
                continue
            vault.set(luks_header_name(host, volume), backup.value())
            written = True
            size = len(backup.value()) // 1024
            click.echo(f"{where}: header backed up into the vault ({size} KiB, UUID {found.uuid})")
    return current, written
