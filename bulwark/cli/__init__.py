"""The `bulwark` command: vault, secrets, render, audit, dns, status, drift, storage, backup and lab
(see `--help`)."""

from __future__ import annotations

import sys

import click

from bulwark.cli import audit, backup, dns, lab, live, pki, render, secrets, storage, vault
from bulwark.errors import BulwarkError
from bulwark.validation import TopologyError


class _Main(click.Group):
    """Turns operator-facing errors into a clear message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TopologyError as error:
            click.echo(str(error), err=True)
            sys.exit(2)
        except (BulwarkError, FileNotFoundError) as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulwark")
def main() -> None:
    """Provision and audit the two-site bulwark platform."""


for _command in (
    vault.vault,
    secrets.secrets,
    pki.pki,
    render.render,
    audit.audit,
    dns.dns,
    live.status,
    live.drift,
    storage.storage,
    backup.backup_group,
    lab.lab,
):
    main.add_command(_command)
