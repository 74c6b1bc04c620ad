"""The base root filesystem, built once with mmdebstrap, and each host's overlay upper layer.

The base is cached under a name derived from a hash of everything that shapes it (packages,
sources, variant), so it is rebuilt only when that changes. What must differ per host — the
machine-id and the SSH host keys — is removed from the base and written into each host's upper
layer before its first boot, so the keys can be pinned in known_hosts in advance.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from bulwark.errors import BulwarkError
from bulwark.lab import aptsources, paths
from bulwark.lab.plan import LabHost, LabPlan
from bulwark.lab.system import step

VARIANT = "minbase"
# What every lab host needs before the roles run: an init, sshd and Python for the deploy, the
# network tools the roles and tests use. Services come with their roles at deploy time.
PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "netbase",
    "nftables",
    "procps",
    "netcat-openbsd",
    "iputils-ping",
    "ca-certificates",
)
# Per-host files the base must not carry.
_PER_HOST = ("etc/machine-id", "var/lib/dbus/machine-id", "etc/apt/apt.conf.d/99mmdebstrap")
APT_PROXY_FILE = "etc/apt/apt.conf.d/00bulwark-lab-proxy"


def base_key(sources: list[aptsources.AptSource]) -> str:
    """Short hash of what the base is built from: a change means a new base."""
    spec = {
        "variant": VARIANT,
        "packages": sorted(PACKAGES),
        "sources": [source.line for source in sources],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure_base(plan: LabPlan, sources: list[aptsources.AptSource]) -> Path:
    """The cached base for the current package list, built through the lab's apt cache if new."""
    base = paths.ROOTFS_CACHE / base_key(sources)
    if (base / "usr/lib/systemd/systemd").exists():
        return base
    building = base.with_name(base.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    proxy = f'Acquire::http::Proxy "http://127.0.0.1:{plan.apt_proxy_port}";'
    argv = [
        "mmdebstrap",
        "--quiet",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        f"--aptopt={proxy}",
        sources[0].suite,
        str(building),
        *(source.line for source in sources),
    ]
    with step(f"building the base root filesystem {base.name} (mmdebstrap, ~30 s)"):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise BulwarkError(f"mmdebstrap failed ({result.returncode}):\n{tail}")
    for relative in _PER_HOST:
        (building / relative).unlink(missing_ok=True)
    for key in (building / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    building.rename(base)
    _remove_other_bases(keep=base)
    return base


def _remove_other_bases(keep: Path) -> None:
    """Old bases are never in use: the lab only builds while it is down."""
    for other in paths.ROOTFS_CACHE.iterdir():
        if other != keep:
            shutil.rmtree(other, ignore_errors=True)


def upper_dir(host: LabHost) -> Path:
    return paths.HOSTS_DIR / host.name / "upper"


def prepare_upper(host: LabHost, apt_proxy: str, authorized_key: str) -> subprocess.Popen:
    """Write the host's identity into a fresh upper layer; returns the running host-key job.

    Host keys take a moment (RSA), so they are generated in the background for all hosts at
    once; the caller waits for the returned process.
    """
    upper = upper_dir(host)
    shutil.rmtree(upper.parent, ignore_errors=True)
    for directory in ("etc/ssh", "etc/apt/apt.conf.d", "root/.ssh"):
        (upper / directory).mkdir(parents=True, exist_ok=True)
    (upper / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
    (upper / "etc/hostname").write_text(host.name + "\n")
    (upper / APT_PROXY_FILE).write_text(f'Acquire::http::Proxy "{apt_proxy}";\n')
    (upper / "root").chmod(0o700)
    (upper / "root/.ssh").chmod(0o700)
    authorized = upper / "root/.ssh/authorized_keys"
    authorized.write_text(authorized_key)
    authorized.chmod(0o600)
    return subprocess.Popen(
        ["ssh-keygen", "-q", "-A", "-f", str(upper)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def host_public_keys(host: LabHost) -> list[str]:
    keys = sorted((upper_dir(host) / "etc/ssh").glob("ssh_host_*_key.pub"))
    return [path.read_text().strip() for path in keys]
