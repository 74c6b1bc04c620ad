"""`bulwark pki`: the hosts' TLS certificates in the inventory's vault.

Both commands open the vault at the inventory's `vault_file` with the key file named by
`BULWARK_VAULT_KEY`. Certificates are issued at deploy time by the pki role; these commands
show their state and bring in an operator's own certificate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bulwark import pki as certificates
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology
from bulwark.topology import Topology
from bulwark.vault import Vault, open_vault

_INVENTORY = click.Path(exists=True, dir_okay=False, path_type=Path)
_PEM_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("pki")
def pki() -> None:
    """The internal CA and the hosts' TLS certificates."""


@pki.command("status")
@click.argument("inventory", type=_INVENTORY)
def status(inventory: Path) -> None:
    """Show each host's certificate: expiry, days left, supplied, problems.

    Exits 2 when any certificate has a problem (missing, lacking a name, expiring within
    30 days, not issued by the internal CA).
    """
    topology = load_topology(inventory)
    statuses = certificates.certificate_status(topology, _open_vault(topology, inventory))
    rows = [("HOST", "EXPIRES", "DAYS LEFT", "SUPPLIED", "PROBLEMS")]
    rows += [
        (
            entry.host,
            "-" if entry.not_after is None else f"{entry.not_after:%Y-%m-%d}",
            "-" if entry.days_left is None else str(entry.days_left),
            "yes" if entry.supplied else "no",
            "; ".join(entry.problems) or "ok",
        )
        for entry in statuses
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
    if not all(entry.ok for entry in statuses):
        sys.exit(2)


@pki.command("import")
@click.argument("inventory", type=_INVENTORY)
@click.argument("host")
@click.option(
    "--cert",
    "cert_file",
    required=True,
    type=_PEM_FILE,
    help="PEM file: the host's certificate first, then each issuing CA certificate.",
)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=_PEM_FILE,
    help="PEM file: the certificate's private key, unencrypted.",
)
def import_(inventory: Path, host: str, cert_file: Path, key_file: Path) -> None:
    """Use an operator-supplied certificate for HOST; bulwark never reissues it.

    The key must match the certificate and the certificate must not have expired. Names the
    host serves but the certificate lacks are shown as warnings.
    """
    topology = load_topology(inventory)
    if host not in {candidate.name for candidate in topology.hosts}:
        raise BulwarkError(f"{inventory}: no host {host!r}")
    vault = _open_vault(topology, inventory)
    certificates.import_certificate(vault, host, _read(cert_file), _read(key_file))
    vault.save()
    entry = next(e for e in certificates.certificate_status(topology, vault) if e.host == host)
    click.echo(f"{host}: imported; expires {entry.not_after:%Y-%m-%d} ({entry.days_left} days)")
    for problem in entry.problems:
        click.echo(f"warning: {host}: {problem}", err=True)


def _open_vault(topology: Topology, inventory: Path) -> Vault:
    """The inventory's vault, opened with the key file BULWARK_VAULT_KEY names."""
    if topology.vault_file is None:
        raise BulwarkError(f"{inventory}: the inventory sets no vault_file")
    return open_vault(topology.vault_file)


def _read(path: Path) -> str:
    """A PEM file's text; bytes that are not ASCII become U+FFFD and fail PEM parsing."""
    return path.read_text(encoding="ascii", errors="replace")
