"""The VM guests' disk image, kernel and initrd, built once with mmdebstrap and cached.

Containers have no device-mapper, so whatever needs a real kernel (LUKS, Clevis) is proven in
qemu guests (bulwark.lab.vm). Every package the guests need is baked in, so a guest never needs
a network to install anything: the harness gives them none. The image carries one SSH host key
and one authorized client key, both made with it and kept beside it, so every connection to a
guest is checked against a pinned key from the first one.

The cache lives apart from the container lab's (bulwark.lab.paths), which removes any base but
its own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bulwark.errors import BulwarkError
from bulwark.lab import aptsources
from bulwark.lab.system import run, step

CACHE_DIR = Path("/var/cache/bulwark-vm")
# What the guests run: a kernel and init, sshd and Python for pyinfra, and everything the storage
# role installs (cryptsetup, ext4 tools, Clevis and Tang), and the tunnel's tools (the guests of
# two sites reach each other's Tang over WireGuard), so their deploys find them present.
PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "initramfs-tools",
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "procps",
    "util-linux",
    "cryptsetup",
    "cryptsetup-bin",
    "e2fsprogs",
    "clevis",
    "clevis-luks",
    "clevis-systemd",
    "tang",
    "wireguard-tools",
)
# Drivers the guest needs before its root filesystem is mounted.
INITRD_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
_MODULES_FILE = "etc/initramfs-tools/modules"
# The root filesystem's size: sparse, so only what the guest writes takes space.
ROOT_SIZE = "4G"
# The root disk, by the serial bulwark.lab.vm gives it: the kernel may name the disks in any
# order, and the data disks are found the same way.
ROOT_DEVICE = "/dev/disk/by-id/virtio-root"
# The address qemu's user network gives the guest (its slirp default); only the controller's
# forwarded SSH port reaches it.
GUEST_ADDRESS = "10.0.2.15/24"
# The management NIC's MAC: the guest's network file matches it, so lab links never get this.
MANAGEMENT_MAC = "52:54:00:00:00:01"
# Bumped when the customisation below changes what the image holds.
_LAYOUT = 3
_SSHD_DROP_IN = "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n"
# Timers that would wake apt on a guest with no network.
_MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer")


@dataclass(frozen=True)
class Image:
    """A built image: the shared root disk, the kernel and initrd qemu boots directly, and the
    SSH keys every guest of it has."""

    directory: Path

    @property
    def root(self) -> Path:
        return self.directory / "root.raw"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def client_key(self) -> Path:
        return self.directory / "id_ed25519"

    @property
    def host_key(self) -> str:
        """The guests' SSH host public key, "TYPE BASE64"."""
        return (self.directory / "ssh_host_ed25519_key.pub").read_text().strip()

    @property
    def built(self) -> bool:
        return (self.directory / "done").exists()


def image_key(sources: list[aptsources.AptSource]) -> str:
    """Short hash of what the image is made from: a change means a new image."""
    spec = {
        "packages": sorted(PACKAGES),
        "sources": [source.line for source in sources],
        "layout": _LAYOUT,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure() -> Image:
    """The cached image, built first if it is not there (about two minutes)."""
    sources = aptsources.controller_sources()
    image = Image(CACHE_DIR / image_key(sources))
    if image.built:
        return image
    shutil.rmtree(image.directory, ignore_errors=True)
    image.directory.mkdir(parents=True)
    rootfs = image.directory / "rootfs"
    try:
        _debootstrap(sources, rootfs)
        _customise(rootfs, image)
        _extract_boot(rootfs, image)
        with step(f"making the {ROOT_SIZE} root disk from the tree"):
            run(["mkfs.ext4", "-q", "-F", "-d", str(rootfs), str(image.root), ROOT_SIZE])
    except BaseException:
        shutil.rmtree(image.directory, ignore_errors=True)
        raise
    shutil.rmtree(rootfs)
    (image.directory / "done").write_text("")
    _remove_other_images(keep=image)
    return image


def _debootstrap(sources: list[aptsources.AptSource], rootfs: Path) -> None:
    argv = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        # qemu's disks and NIC are virtio: their drivers go in the initrd, which the kernel's
        # package built before they were listed.
        f"--customize-hook=printf '%s\\n' {' '.join(INITRD_MODULES)} >> \"$1/{_MODULES_FILE}\"",
        '--customize-hook=chroot "$1" update-initramfs -u -k all',
        sources[0].suite,
        str(rootfs),
        *(source.line for source in sources),
    ]
    with step("building the VM image's root filesystem (mmdebstrap)"):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise BulwarkError(f"mmdebstrap failed ({result.returncode}):\n{tail}")


def _customise(rootfs: Path, image: Image) -> None:
    """Root found by its serial, a static address on the management NIC, sshd with the image's keys,
    a machine-id made at first boot."""
    (rootfs / "etc/fstab").write_text(f"{ROOT_DEVICE} / ext4 rw,errors=remount-ro 0 1\n")
    (rootfs / "etc/hostname").write_text("guest\n")
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (rootfs / "etc/systemd/network/10-management.network").write_text(
        f"[Match]\nMACAddress={MANAGEMENT_MAC}\n\n[Network]\nAddress={GUEST_ADDRESS}\n"
    )
    (rootfs / "etc/ssh/sshd_config.d/bulwark-vm.conf").write_text(_SSHD_DROP_IN)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _new_key(rootfs / "etc/ssh/ssh_host_ed25519_key", "bulwark-vm-guest")
    shutil.copy(rootfs / "etc/ssh/ssh_host_ed25519_key.pub", image.directory)
    _new_key(image.client_key, "bulwark-vm")
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(image.client_key.with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    run(["systemctl", f"--root={rootfs}", "enable", "systemd-networkd.service"])
    run(["systemctl", f"--root={rootfs}", "mask", *_MASKED])


def _new_key(path: Path, comment: str) -> None:
    """An ed25519 key pair without a passphrase at `path` and `path`.pub."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _extract_boot(rootfs: Path, image: Image) -> None:
    """qemu boots the kernel and initrd directly: no boot loader in the image."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BulwarkError(f"no kernel under {rootfs}/boot: is linux-image-amd64 installed?")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copy(kernels[-1], image.kernel)
    shutil.copy(rootfs / "boot" / f"initrd.img-{version}", image.initrd)


def _remove_other_images(keep: Image) -> None:
    """Older images: guests of them are stale, and each is a gigabyte."""
    for other in CACHE_DIR.iterdir():
        if other != keep.directory:
            shutil.rmtree(other, ignore_errors=True)
