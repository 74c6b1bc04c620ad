"""The VM harness's network safety and inputs, checked on the qemu command line it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark.errors import BulwarkError
from bulwark.lab import vm, vmimage

IMAGE = vmimage.Image(Path("/var/cache/bulwark-vm/test"))
GUEST = vm.Guest("nj-store", 40022, "tcg", (vm.Disk("mail", "1G"), vm.Disk("dirty", "64M")))


def _values(argv: list[str], option: str) -> list[str]:
    return [argv[index + 1] for index, word in enumerate(argv) if word == option]


def test_a_guest_has_one_nic_that_reaches_nothing_and_is_reached_from_loopback_only():
    argv = vm._qemu_argv(GUEST, IMAGE)
    (netdev,) = _values(argv, "-netdev")
    assert netdev.startswith("user,") and ",restrict=on," in netdev
    assert netdev.endswith(",hostfwd=tcp:127.0.0.1:40022-:22")
    assert "-nic" not in argv and "-net" not in argv
    assert not [word for word in argv if "tap" in word or "bridge" in word]
    assert "-nodefaults" in argv  # no NIC qemu would add by itself


def test_a_link_between_guests_is_unicast_udp_on_loopback_and_survives_a_restart():
    """Two guests of two sites: each end sends to the other's loopback port, from its own, and
    nothing else (no multicast, no listen/connect pair a restart would break)."""
    first, second = vm.link_pair("198.51.100.11/26", "198.51.100.43/26")
    assert (first.port, first.peer_port) == (second.peer_port, second.port)
    assert first.mac != second.mac and vmimage.MANAGEMENT_MAC not in (first.mac, second.mac)
    argv = vm._qemu_argv(vm.Guest("nj-store", 40022, "tcg", (), (first,)), IMAGE)
    management, link = _values(argv, "-netdev")
    assert ",restrict=on," in management
    assert link == (
        f"socket,id=link0,udp=127.0.0.1:{first.peer_port},localaddr=127.0.0.1:{first.port}"
    )
    assert f"virtio-net-pci,netdev=link0,mac={first.mac}" in _values(argv, "-device")
    assert not [word for word in argv if "mcast" in word or "tap" in word]


def test_each_data_disk_is_found_in_the_guest_by_its_name():
    argv = vm._qemu_argv(GUEST, IMAGE)
    devices = _values(argv, "-device")
    assert "virtio-blk-pci,drive=mail,serial=mail" in devices
    assert "virtio-blk-pci,drive=root,serial=root" in devices
    assert GUEST.disks[0].device == "/dev/disk/by-id/virtio-mail"
    assert vmimage.ROOT_DEVICE == "/dev/disk/by-id/virtio-root"


@pytest.mark.parametrize(("accel", "cpu"), [("kvm", vm.KVM_CPU), ("tcg", "max")])
def test_the_accelerator_picks_its_cpu(accel, cpu):
    argv = vm._qemu_argv(vm.Guest("a", 1, accel, ()), IMAGE)
    assert _values(argv, "-accel")[0].startswith(accel)
    assert _values(argv, "-cpu") == [cpu]


def test_the_environment_forces_an_accelerator(monkeypatch):
    monkeypatch.setenv(vm.ACCEL_ENV, "tcg")
    assert vm.accelerator(IMAGE) == "tcg"
    monkeypatch.setenv(vm.ACCEL_ENV, "fast")
    with pytest.raises(BulwarkError, match="BULWARK_VM_ACCEL='fast': expected 'kvm' or 'tcg'"):
        vm.accelerator(IMAGE)


@pytest.mark.parametrize("text", ["mail", "mail:", "Mail:1G", "mail:1T", "mail:1G;rm"])
def test_a_bad_disk_is_refused_with_the_form_it_needs(text):
    with pytest.raises(BulwarkError, match="expected NAME:SIZE like 'mail:1G'"):
        vm.parse_disk(text)


def test_a_disk_is_read_as_name_and_size():
    assert vm.parse_disk("backups:512M") == vm.Disk("backups", "512M")
