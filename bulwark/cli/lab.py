"""`bulwark lab`: the two-site platform as containers on this machine, and qemu guests (`vm`)."""

from __future__ import annotations

import os
import sys

import click

from bulwark.cli.vm import vm
from bulwark.dns import zone_records
from bulwark.inventory import check_vault
from bulwark.lab import access, aptwarm, containers, dns, lifecycle
from bulwark.lab.plan import INTERNET_NETNS
from bulwark.lab.system import require_root

_INVENTORY = click.option(
    "-i",
    "--inventory",
    default="inventory/lab.py",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The lab inventory: hosts, addresses and the lab_* settings.",
)


def _become(argv: list[str]) -> None:
    """Hand the terminal, signals and exit status over to the command."""
    os.execvp(argv[0], argv)  # noqa: S606 - an argument list, no shell


@click.group("lab")
def lab() -> None:
    """Build, inspect and remove the lab (needs root)."""


@lab.command()
@_INVENTORY
def up(inventory: str) -> None:
    """Build the lab, or do nothing if it is already up."""
    lifecycle.up(inventory)


@lab.command()
def down() -> None:
    """Remove every container, namespace, route and process of the lab (keeps the caches)."""
    lifecycle.down()


@lab.command()
@_INVENTORY
def status(inventory: str) -> None:
    """Show what is up; exit 1 unless the whole lab is."""
    rows = lifecycle.status(inventory)
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        click.echo(f"{name:<{width}}  {text}")
    if rows[-1][1] != "up":
        sys.exit(1)


@lab.command("dns")
@_INVENTORY
def dns_server(inventory: str) -> None:
    """Serve the platform's DNS records (`bulwark dns`) from the internet namespace, and resolve
    its clients' names through them (needs the vault: BULWARK_VAULT_KEY)."""
    require_root()
    up = lifecycle.require_up(inventory)
    records = zone_records(up.topology, check_vault(up.topology))
    click.echo(dns.serve(up.topology, up.plan, records))


@lab.command("apt-update")
@_INVENTORY
def apt_update(inventory: str) -> None:
    """Refresh every host's package lists one at a time (run before a parallel deploy)."""
    aptwarm.refresh_package_lists(lifecycle.require_up(inventory).plan)


@lab.command(context_settings={"ignore_unknown_options": True})
@_INVENTORY
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(inventory: str, host: str, command: tuple[str, ...]) -> None:
    """SSH to HOST through the lab's ssh_config (pinned host keys)."""
    lab_ = lifecycle.require_up(inventory)
    argv = access.ssh_argv(lab_.plan, lab_.plan.host(host), command)
    _become(argv)


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@_INVENTORY
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(inventory: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in HOST as a transient unit, without SSH: `lab exec nj-gw -- nft list ruleset`.

    Runs through the container's systemd, with the container's capabilities, not the
    controller's (plain nsenter would keep them and mislead capability checks).
    """
    require_root()
    lab_ = lifecycle.require_up(inventory)
    pid = containers.init_pid(lab_.plan.host(host))
    argv = [
        "nsenter",
        f"--target={pid}",
        "--all",
        "systemd-run",
        "--quiet",
        "--wait",
        "--collect",
        "--pipe",
        "--",
        *command,
    ]
    _become(argv)


@lab.command(context_settings={"ignore_unknown_options": True})
@_INVENTORY
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def internet(inventory: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in the internet namespace, where the end-to-end clients connect from."""
    require_root()
    lifecycle.require_up(inventory)
    argv = ["ip", "netns", "exec", INTERNET_NETNS, *command]
    _become(argv)


lab.add_command(vm)
