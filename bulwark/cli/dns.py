"""`bulwark dns`: the DNS records the operator publishes, as a zone-file fragment."""

from __future__ import annotations

from pathlib import Path

import click

from bulwark.dns import render_zone, zone_records
from bulwark.inventory import check_vault, load_topology


@click.command("dns")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the fragment to this file instead of standard output.",
)
def dns(inventory: str, out: Path | None) -> None:
    """Print the DNS records of INVENTORY's platform: A for every client host name, MX, SPF,
    DKIM (from the vault's keys), DMARC, MTA-STS, TLSA for SMTP (DANE, from each exchanger's
    certificate in the vault), SRV for client discovery (RFC 6186, RFC 6764, autodiscover)
    and CAA. Needs the vault (BULWARK_VAULT_KEY). Deterministic: the same inventory and vault
    give the same bytes. `bulwark render` writes them into the audit bundle too (dns.zone)."""
    topology = load_topology(inventory)
    text = render_zone(topology, zone_records(topology, check_vault(topology)))
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"wrote {len(text.splitlines())} lines to {out}", err=True)
