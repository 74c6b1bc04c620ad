"""qemu guests on this machine: what needs a real kernel (LUKS, Clevis) is proven in them.

Each guest boots the shared image (bulwark.lab.vmimage) through a copy-on-write overlay of its
own, with spare raw data disks that the guest sees as /dev/disk/by-id/virtio-<name>. KVM is
used when a KVM guest really boots here, software emulation (TCG) otherwise, or whenever
BULWARK_VM_ACCEL=tcg asks for it.

Network safety: a guest's management NIC is qemu's user network with `restrict=on`, which lets
the guest reach nothing at all; the one way in is a port forwarded from the controller's
loopback to the guest's sshd. Guests that must talk to each other (two sites, their tunnel)
get a lab-made link (`Link`): qemu carries its frames as unicast UDP datagrams between two
ports of the controller's loopback, to the other guest's qemu and nowhere else. No tap, no
bridge, no route, no multicast: a guest cannot send a packet off the machine.

Guests are found from their directories under STATE_DIR, never from memory: `down` cleans up
whatever an earlier run or crash left. A qemu process counts as a guest's only while its
command line still names the guest's directory, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

from bulwark.errors import BulwarkError
from bulwark.lab import hostpkgs, vmimage
from bulwark.lab.system import run, say

STATE_DIR = Path("/var/lib/bulwark-vm")
# What holds only until the machine restarts: whether KVM boots a guest here.
RUN_DIR = Path("/run/bulwark-vm")
GUESTS_DIR = STATE_DIR / "guests"
# One ssh_config and known_hosts for every guest: `ssh -F`, pyinfra and the tests read them.
SSH_CONFIG = STATE_DIR / "ssh_config"
KNOWN_HOSTS = STATE_DIR / "known_hosts"
# What the harness runs on the controller.
HOST_PACKAGES: tuple[str, ...] = ("qemu-system-x86", "qemu-utils", "mmdebstrap", "openssh-client")
ACCEL_ENV = "BULWARK_VM_ACCEL"
# The host's CPU, less the one MSR a nested KVM (this machine kind) refuses to set: qemu asserts
# on IA32_ARCH_CAPABILITIES otherwise.
KVM_CPU = "host,-arch-capabilities"
# Seconds a KVM guest kernel gets to print its banner (it takes well under one when KVM works).
KVM_PROBE_SECONDS = 10
# The root disk by its serial (the initrd waits up to 180 s for it).
KERNEL_ARGS = f"root={vmimage.ROOT_DEVICE} rw console=ttyS0"
MEMORY_MB = 1024
CPUS = 2
# Seconds a guest gets to answer on SSH: ~10 s with KVM, ~60 s emulated on a loaded machine.
BOOT_TIMEOUT = {"kvm": 120, "tcg": 600}
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_API_VERSION = 12
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_SIZE = re.compile(r"^[0-9]+[MG]$")


@dataclass(frozen=True)
class Disk:
    """A spare data disk: the guest sees it as /dev/disk/by-id/virtio-<name>."""

    name: str
    size: str  # qemu-img's size: "512M", "1G"

    @property
    def device(self) -> str:
        return f"/dev/disk/by-id/virtio-{self.name}"


@dataclass(frozen=True)
class Link:
    """A NIC on a point-to-point segment the lab makes between two guests: qemu sends each
    frame from its own loopback UDP port to the other guest's qemu (unicast, loopback only),
    so either guest can restart and the segment still works. `address` (with its prefix) is
    the guest's own on it, configured by systemd-networkd."""

    mac: str
    port: int
    peer_port: int
    address: str


def link_pair(first_address: str, second_address: str) -> tuple[Link, Link]:
    """Both ends of a new segment: two free loopback UDP ports, a MAC of each end's own."""
    ports = _free_ports(2, socket.SOCK_DGRAM)
    first, second = (f"52:54:00:00:{port >> 8 & 0xFF:02x}:{port & 0xFF:02x}" for port in ports)
    return (
        Link(first, ports[0], ports[1], first_address),
        Link(second, ports[1], ports[0], second_address),
    )


@dataclass(frozen=True)
class Guest:
    """A guest as its directory records it."""

    name: str
    port: int  # the controller's loopback port forwarded to the guest's sshd
    accel: str  # "kvm" or "tcg"
    disks: tuple[Disk, ...]
    links: tuple[Link, ...] = ()

    @property
    def directory(self) -> Path:
        return GUESTS_DIR / self.name

    def disk_file(self, disk: Disk) -> Path:
        return self.directory / f"disk-{disk.name}.raw"


def accelerator(image: vmimage.Image) -> str:
    """Return "kvm" if a KVM guest boots the image's kernel here, else "tcg"; the environment's
    BULWARK_VM_ACCEL overrides it (tests force TCG this way).

    /dev/kvm answering is not enough: under some nested hypervisors it creates virtual machines
    whose kernel hangs on entering long mode. So the kernel is booted once under KVM until it
    prints its banner; the answer is kept in RUN_DIR until the machine restarts.
    """
    forced = os.environ.get(ACCEL_ENV)
    if forced is not None:
        if forced not in ("kvm", "tcg"):
            raise BulwarkError(f"{ACCEL_ENV}={forced!r}: expected 'kvm' or 'tcg'")
        return forced
    if not _kvm_device_works():
        return "tcg"
    known = RUN_DIR / f"accel-{image.directory.name}"
    if not known.exists():
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        known.write_text("kvm" if _kvm_boots(image) else "tcg")
    return known.read_text()


def _kvm_device_works() -> bool:
    """Whether this process may create a KVM virtual machine."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION) != _KVM_API_VERSION:
            return False
        os.close(fcntl.ioctl(fd, _KVM_CREATE_VM, 0))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _kvm_boots(image: vmimage.Image) -> bool:
    """Whether the image's kernel, booted under KVM with no disk, prints its banner in time."""
    argv = [
        "qemu-system-x86_64", "-accel", "kvm", "-cpu", KVM_CPU, "-m", "256", "-nodefaults",
        "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(image.kernel),
        "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as probe:
        try:
            output, _ = probe.communicate(timeout=KVM_PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            probe.kill()
            output, _ = probe.communicate()
    booted = b"Linux version" in output
    say(f"vm: KVM {'boots' if booted else 'does not boot'} a guest kernel here")
    return booted


def parse_disk(text: str) -> Disk:
    """`NAME:SIZE` (`mail:1G`), as the CLI and the tests give a data disk."""
    name, _, size = text.partition(":")
    if not _NAME.match(name) or not _SIZE.match(size):
        raise BulwarkError(f"disk {text!r}: expected NAME:SIZE like 'mail:1G' (size in M or G)")
    return Disk(name, size)


def up(name: str, disks: Sequence[Disk] = (), links: Sequence[Link] = ()) -> Guest:
    """Boot a new guest called `name` with these blank data disks and links to other guests
    (their addresses configured in the guest); returns once SSH answers."""
    if not _NAME.match(name):
        raise BulwarkError(f"guest name {name!r}: lower-case letters, digits and '-'")
    if len({disk.name for disk in disks}) != len(disks):
        raise BulwarkError(f"guest {name}: two data disks share a name")
    if (GUESTS_DIR / name).exists():
        raise BulwarkError(f"guest {name} exists: `bulwark lab vm down {name}` first")
    hostpkgs.ensure(HOST_PACKAGES)
    image = vmimage.ensure()
    guest = Guest(name, _free_port(), accelerator(image), tuple(disks), tuple(links))
    guest.directory.mkdir(parents=True)
    root = guest.directory / "root.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.root), str(root)])
    for disk in disks:
        run(["qemu-img", "create", "-q", "-f", "raw", str(guest.disk_file(disk)), disk.size])
    (guest.directory / "guest.json").write_text(
        json.dumps(
            {
                "port": guest.port,
                "accel": guest.accel,
                "disks": [[disk.name, disk.size] for disk in disks],
                "links": [list(astuple(link)) for link in links],
                "image": str(image.directory),
            }
        )
    )
    _write_ssh_files(image)
    start(guest)
    _configure_links(guest)
    return guest


def _configure_links(guest: Guest) -> None:
    """A networkd file per link in the guest (kept across its restarts), applied now."""
    if not guest.links:
        return
    for index, link in enumerate(guest.links):
        network = f"[Match]\nMACAddress={link.mac}\n\n[Network]\nAddress={link.address}\n"
        path = f"/etc/systemd/network/20-link{index}.network"
        subprocess.run(
            ssh_argv(guest, ["tee", path]),
            input=network,
            text=True,
            capture_output=True,
            check=True,
        )
    subprocess.run(ssh_argv(guest, ["networkctl", "reload"]), capture_output=True, check=True)


def start(guest: Guest) -> float:
    """Start the guest's qemu and wait for its sshd; returns the seconds that took."""
    image = _image_of(guest)
    started = time.monotonic()
    run(_qemu_argv(guest, image))
    wait_for_ssh(guest, started)
    elapsed = time.monotonic() - started
    say(f"vm: {guest.name} answers on SSH ({guest.accel}) after {elapsed:.1f} s")
    return elapsed


def _qemu_argv(guest: Guest, image: vmimage.Image) -> list[str]:
    directory = guest.directory
    kvm = guest.accel == "kvm"
    argv = [
        "qemu-system-x86_64",
        "-name", f"guest={guest.name}",
        "-machine", "q35",
        "-accel", "kvm" if kvm else "tcg,thread=multi",
        "-cpu", KVM_CPU if kvm else "max",
        "-smp", str(CPUS),
        "-m", str(MEMORY_MB),
        "-nodefaults",
        "-display", "none",
        "-serial", f"file:{directory}/console.log",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", f"{KERNEL_ARGS} systemd.hostname={guest.name}",
        "-drive", f"file={directory}/root.qcow2,if=none,id=root,format=qcow2",
        "-device", "virtio-blk-pci,drive=root,serial=root",
        "-netdev",
        f"user,id=management,restrict=on,hostfwd=tcp:127.0.0.1:{guest.port}-:22",
        "-device", f"virtio-net-pci,netdev=management,mac={vmimage.MANAGEMENT_MAC}",
        "-qmp", f"unix:{directory}/qmp.sock,server=on,wait=off",
        "-pidfile", f"{directory}/qemu.pid",
        "-daemonize",
    ]  # fmt: skip
    for disk in guest.disks:
        argv += [
            "-drive", f"file={guest.disk_file(disk)},if=none,id={disk.name},format=raw",
            "-device", f"virtio-blk-pci,drive={disk.name},serial={disk.name}",
        ]  # fmt: skip
    for index, link in enumerate(guest.links):
        argv += [
            "-netdev",
            f"socket,id=link{index},udp=127.0.0.1:{link.peer_port},"
            f"localaddr=127.0.0.1:{link.port}",
            "-device", f"virtio-net-pci,netdev=link{index},mac={link.mac}",
        ]  # fmt: skip
    return argv


def ssh_argv(guest: Guest, command: Sequence[str] = (), timeout: int = 10) -> list[str]:
    """ssh to the guest through the harness's ssh_config (pinned host key)."""
    return ["ssh", "-F", str(SSH_CONFIG), "-o", f"ConnectTimeout={timeout}", guest.name, *command]


def wait_for_ssh(guest: Guest, started: float) -> None:
    """Until `true` runs over SSH; raise with the console's last lines if qemu dies or the
    guest is too slow."""
    deadline = started + BOOT_TIMEOUT[guest.accel]
    while True:
        probe = subprocess.run(ssh_argv(guest, ["true"], timeout=3), capture_output=True)
        if probe.returncode == 0:
            return
        if pid(guest) is None or time.monotonic() > deadline:
            console = guest.directory / "console.log"
            lines = console.read_text(errors="replace").splitlines() if console.exists() else []
            state = "qemu exited" if pid(guest) is None else "no SSH in time"
            raise BulwarkError(f"guest {guest.name}: {state}; console:\n" + "\n".join(lines[-10:]))
        time.sleep(1)


def pid(guest: Guest) -> int | None:
    """The guest's qemu process, if it still runs this guest."""
    try:
        number = int((guest.directory / "qemu.pid").read_text())
        cmdline = Path(f"/proc/{number}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return number if f"{guest.directory}/root.qcow2" in cmdline else None


def stop(guest: Guest, timeout: float = 30) -> None:
    """Power the guest off (ACPI, as a button press), killed if it takes longer than `timeout`."""
    number = pid(guest)
    if number is None:
        return
    _qmp(guest, "system_powerdown")
    deadline = time.monotonic() + timeout
    while pid(guest) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    if pid(guest) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(number, signal.SIGKILL)
        while pid(guest) is not None:
            time.sleep(0.1)


def _qmp(guest: Guest, command: str) -> None:
    """One QMP command over the guest's monitor socket; a qemu already gone is fine."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as monitor:
        monitor.settimeout(5)
        monitor.connect(str(guest.directory / "qmp.sock"))
        monitor.recv(4096)  # the greeting
        for message in ({"execute": "qmp_capabilities"}, {"execute": command}):
            monitor.sendall(json.dumps(message).encode() + b"\n")
            monitor.recv(4096)


def down(name: str) -> None:
    """Stop the guest and remove it with its disks."""
    guest = load(name)
    stop(guest, timeout=0)
    shutil.rmtree(guest.directory)
    _write_ssh_files(_image_or_none())


def load(name: str) -> Guest:
    directory = GUESTS_DIR / name
    try:
        record = json.loads((directory / "guest.json").read_text())
    except (OSError, ValueError):
        raise BulwarkError(f"no guest {name} (nothing under {directory})") from None
    disks = tuple(Disk(disk, size) for disk, size in record["disks"])
    links = tuple(Link(*fields) for fields in record.get("links", ()))
    return Guest(name, int(record["port"]), record["accel"], disks, links)


def guests() -> list[Guest]:
    """Every guest with a directory, running or not."""
    if not GUESTS_DIR.is_dir():
        return []
    return [load(path.name) for path in sorted(GUESTS_DIR.iterdir()) if path.is_dir()]


def _image_of(guest: Guest) -> vmimage.Image:
    record = json.loads((guest.directory / "guest.json").read_text())
    return vmimage.Image(Path(record["image"]))


def _image_or_none() -> vmimage.Image | None:
    present = guests()
    return _image_of(present[0]) if present else None


def _free_port() -> int:
    """A loopback TCP port nothing listens on now, and no other guest was given."""
    return _free_ports(1, socket.SOCK_STREAM)[0]


def _free_ports(count: int, kind: socket.SocketKind) -> tuple[int, ...]:
    """`count` distinct loopback ports of this kind free now, and given to no other guest."""
    taken = {guest.port for guest in guests()}
    taken |= {link.port for guest in guests() for link in guest.links}
    found: list[int] = []
    while len(found) < count:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in taken and port not in found:
            found.append(port)
    return tuple(found)


def _write_ssh_files(image: vmimage.Image | None) -> None:
    """ssh_config and known_hosts for the guests there are (the image's one host key)."""
    present = guests()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by bulwark.lab.vm: the guests, each on a forwarded loopback port."]
    for guest in present:
        lines += [f"Host {guest.name}", "    HostName 127.0.0.1", f"    Port {guest.port}", ""]
    if present and image is not None:
        lines += [
            f"Host {' '.join(guest.name for guest in present)}",
            "    User root",
            f"    IdentityFile {image.client_key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {KNOWN_HOSTS}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "    LogLevel ERROR",
        ]
    SSH_CONFIG.write_text("\n".join(lines) + "\n")
    known = [f"[127.0.0.1]:{guest.port} {image.host_key}" for guest in present if image]
    KNOWN_HOSTS.write_text("".join(line + "\n" for line in known))
