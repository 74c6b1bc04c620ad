"""`bulwark lab vm`: qemu guests for what containers cannot prove (LUKS needs device-mapper)."""

from __future__ import annotations

import os

import click

from bulwark.lab import hostpkgs, vmimage
from bulwark.lab import vm as vms
from bulwark.lab.system import require_root


@click.group("vm")
def vm() -> None:
    """Build the guest image, boot, list and remove qemu guests (needs root)."""
    require_root()


@vm.command()
def image() -> None:
    """Build the guest image if it is not cached (mmdebstrap, about two minutes), installing
    the controller's packages it and the guests need first."""
    hostpkgs.ensure(vms.HOST_PACKAGES)
    click.echo(vmimage.ensure().directory)


@vm.command()
@click.argument("name")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    metavar="NAME:SIZE",
    help="A blank data disk, seen as /dev/disk/by-id/virtio-NAME (repeatable).",
)
def up(name: str, disks: tuple[str, ...]) -> None:
    """Boot a new guest NAME; returns once its sshd answers."""
    guest = vms.up(name, [vms.parse_disk(disk) for disk in disks])
    click.echo(f"{guest.name}: ssh -F {vms.SSH_CONFIG} {guest.name} ({guest.accel})")


@vm.command()
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every guest there is.")
def down(names: tuple[str, ...], every: bool) -> None:
    """Stop guests and remove them with their disks."""
    for name in [guest.name for guest in vms.guests()] if every else names:
        vms.down(name)


@vm.command("list")
def list_() -> None:
    """Every guest: its SSH port, accelerator, disks, and whether it runs."""
    for guest in vms.guests():
        state = "running" if vms.pid(guest) else "stopped"
        disks = ", ".join(f"{disk.name} {disk.size}" for disk in guest.disks) or "no data disks"
        click.echo(f"{guest.name}  {state}  127.0.0.1:{guest.port}  {guest.accel}  {disks}")


@vm.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, command: tuple[str, ...]) -> None:
    """SSH to guest NAME (pinned host key)."""
    argv = vms.ssh_argv(vms.load(name), command)
    os.execvp(argv[0], argv)  # noqa: S606 - an argument list, no shell
