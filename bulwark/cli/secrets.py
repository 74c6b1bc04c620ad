"""`bulwark secrets`: generate every secret an inventory needs, or check that none is missing.

The vault is the file the inventory's `vault_file` names. `generate` creates it when it does not
exist yet, keyed by the file BULWARK_VAULT_KEY names: an existing key file is used (one key may
guard several inventories' vaults), a missing one is created with mode 0600.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bulwark.cli.vault import create_vault
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology
from bulwark.platform_secrets import generate_secrets, missing_secrets
from bulwark.topology import Topology
from bulwark.vault import open_vault

_inventory_argument = click.argument(
    "inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


@click.group("secrets")
def secrets() -> None:
    """Generate and check the secrets the inventory's topology needs."""


def _vault_path(topology: Topology, inventory: Path) -> Path:
    if topology.vault_file is None:
        raise BulwarkError(f"{inventory} sets no vault_file: add it to the platform data")
    return Path(topology.vault_file)


def _show_progress(done: int, total: int, name: str) -> None:
    click.echo(f"[{done}/{total}] {name}", err=True)


@secrets.command()
@_inventory_argument
@click.option(
    "--credentials-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file (0600) that receives new users' passwords; needed when any are created.",
)
def generate(inventory: Path, credentials_out: Path | None) -> None:
    """Create every secret INVENTORY needs that the vault lacks; existing ones are kept as is.

    WireGuard keys, pre-shared keys, LUKS key files and service passwords go into the vault.
    Users' passwords are stored as Argon2id hashes only; the passwords themselves are written
    to --credentials-out, never to the terminal: hand them out, then delete the file.
    """
    topology = load_topology(inventory)
    path = _vault_path(topology, inventory)
    opened = open_vault(path) if path.exists() else create_vault(path)
    report = generate_secrets(topology, opened, credentials_out, progress=_show_progress)
    for state, names in (("created", report.created), ("kept", report.kept), ("pki", report.pki)):
        for name in names:
            click.echo(f"{state:<8} {name}  sha256:{opened.get(name).digest}")
    click.echo(
        f"{len(report.created)} created, {len(report.kept)} kept, "
        f"{len(report.pki)} PKI entries created or renewed in {path}"
    )
    if report.credentials is not None:
        click.echo(f"new passwords are in {report.credentials}: hand them out, then delete it")


@secrets.command()
@_inventory_argument
def check(inventory: Path) -> None:
    """Exit 2 listing every secret INVENTORY needs that the vault lacks; else print one line."""
    topology = load_topology(inventory)
    path = _vault_path(topology, inventory)
    problems = missing_secrets(topology, open_vault(path))
    if problems:
        click.echo(f"{inventory}: {len(problems)} secrets missing from {path}:", err=True)
        for problem in problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)
    click.echo(f"ok: {path} holds every secret {inventory} needs")
