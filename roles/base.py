"""base: the host baseline every bulwark host gets.

apt through the site's cache, security-only unattended upgrades, a key-only sshd with modern
algorithms, network and kernel sysctls, a persistent journal and logrotate both keeping logs
180 days, and systemd-timesyncd.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import apt

from bulwark import catalogue
from bulwark.deploying import (
    install,
    install_sysctl,
    keep_running,
    packages,
    reloaded,
    render_for_deploy,
    restarted,
    service,
)
from bulwark.livecheck import LiveCheck
from bulwark.operations import STAGED, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Clock, Disk, SecurityUpdates, Sysctl, Unit, Units
from bulwark.secret import SecretStore
from bulwark.ssh import SSH_CIPHERS, SSH_HOST_KEY_ALGORITHMS, SSH_KEX, SSH_MACS
from bulwark.topology import Host, Topology

ROLE = "base"

# Packages the baseline needs on top of a minimal Debian.
PACKAGES: tuple[str, ...] = (
    "openssh-server",
    "unattended-upgrades",
    "needrestart",
    "systemd-timesyncd",
    "logrotate",
)

# The seeds promise 150-180 days of log retention; we keep the upper bound.
LOG_RETENTION_DAYS = 180
# Cap the journal's disk use; the volume must hold 180 days below this (see the storage role).
JOURNAL_MAX_USE = "4G"
# Debian's NTP pool; replace with the sites' own time sources where they exist.
NTP_SERVERS: tuple[str, ...] = tuple(f"{n}.debian.pool.ntp.org" for n in range(4))
# unattended-upgrades origins: the Debian security archive only.
UNATTENDED_ORIGINS: tuple[str, ...] = (
    "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
)

# Per network namespace (CIS Debian 12 §3.3). Forwarding is left to the vpn role.
SYSCTL_NET: tuple[tuple[str, str], ...] = (
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv4.conf.all.secure_redirects", "0"),
    ("net.ipv4.conf.default.secure_redirects", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv4.conf.all.accept_source_route", "0"),
    ("net.ipv4.conf.default.accept_source_route", "0"),
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.conf.default.rp_filter", "1"),
    ("net.ipv4.conf.all.log_martians", "1"),
    ("net.ipv4.conf.default.log_martians", "1"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
    ("net.ipv4.icmp_ignore_bogus_error_responses", "1"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
    ("net.ipv6.conf.all.accept_source_route", "0"),
    ("net.ipv6.conf.default.accept_source_route", "0"),
    ("net.ipv6.conf.all.accept_ra", "0"),
    ("net.ipv6.conf.default.accept_ra", "0"),
)
# Global to the kernel (CIS Debian 12 §1.5): set on hosts that own their kernel.
SYSCTL_KERNEL: tuple[tuple[str, str], ...] = (
    ("fs.protected_hardlinks", "1"),
    ("fs.protected_symlinks", "1"),
    ("fs.suid_dumpable", "0"),
    ("kernel.dmesg_restrict", "1"),
    ("kernel.kptr_restrict", "2"),
    ("kernel.randomize_va_space", "2"),
    ("kernel.yama.ptrace_scope", "1"),
)

APT_PROXY = "/etc/apt/apt.conf.d/01bulwark-proxy"
AUTO_UPGRADES_CONFIG = "/etc/apt/apt.conf.d/20auto-upgrades"
UNATTENDED_UPGRADES_CONFIG = "/etc/apt/apt.conf.d/52bulwark-unattended-upgrades"
# needrestart, run by apt after every upgrade (unattended ones included), restarts each service
# still running a replaced binary or library: our own units too (bulwark-apache, bulwark-ftpd,
# Radicale's...), which Debian's package scripts know nothing of.
NEEDRESTART_CONFIG = "/etc/needrestart/conf.d/60-bulwark.conf"
SSHD_CONFIG = "/etc/ssh/sshd_config.d/10-bulwark.conf"
SYSCTL_NET_FILE = "/etc/sysctl.d/60-bulwark-net.conf"
SYSCTL_KERNEL_FILE = "/etc/sysctl.d/60-bulwark-kernel.conf"
JOURNALD_CONFIG = "/etc/systemd/journald.conf.d/60-bulwark.conf"
LOGROTATE_CONFIG = "/etc/logrotate.conf"
TIMESYNCD_CONFIG = "/etc/systemd/timesyncd.conf.d/60-bulwark.conf"
# apt's proxy goes in before apt reaches the network; unattended-upgrades' settings once the
# package is there (its installation would otherwise write its own 20auto-upgrades).
APT_BEFORE_PACKAGES: tuple[str, ...] = (APT_PROXY,)
APT_AFTER_PACKAGES: tuple[str, ...] = (
    AUTO_UPGRADES_CONFIG,
    UNATTENDED_UPGRADES_CONFIG,
    NEEDRESTART_CONFIG,
)

SSHD_UNIT = "ssh.service"
JOURNALD_UNIT = "systemd-journald.service"
TIMESYNCD_UNIT = "systemd-timesyncd.service"
# Where every host keeps data of its own: the root filesystem, and the logs (journald and
# /var/log: the `logs` volume where volumes are encrypted).
DATA_PATHS: tuple[str, ...] = ("/", "/var/log")
# sshd's own check of the staged drop-in, with the host's keys, before it is live.
SSHD_CHECK = Check(SSHD_CONFIG, ("sshd", "-t", "-f", STAGED))


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    proxy = (
        (ManagedFile(APT_PROXY, "apt-proxy.conf.j2", checker="apt"),) if topology.apt_proxy else ()
    )
    return (
        *proxy,
        ManagedFile(AUTO_UPGRADES_CONFIG, "auto-upgrades.conf.j2", checker="apt"),
        ManagedFile(UNATTENDED_UPGRADES_CONFIG, "unattended-upgrades.conf.j2", checker="apt"),
        ManagedFile(NEEDRESTART_CONFIG, "needrestart.conf.j2"),
        ManagedFile(SSHD_CONFIG, "sshd_config.j2", mode="0600", checker="sshd"),
        ManagedFile(SYSCTL_NET_FILE, "sysctl-net.conf.j2"),
        ManagedFile(SYSCTL_KERNEL_FILE, "sysctl-kernel.conf.j2"),
        ManagedFile(JOURNALD_CONFIG, "journald.conf.j2"),
        ManagedFile(LOGROTATE_CONFIG, "logrotate.conf.j2"),
        ManagedFile(TIMESYNCD_CONFIG, "timesyncd.conf.j2"),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        "apt_proxy": topology.apt_proxy,
        "unattended_origins": UNATTENDED_ORIGINS,
        "ssh_port": catalogue.service("ssh").port,
        "ssh_kex": SSH_KEX,
        "ssh_ciphers": SSH_CIPHERS,
        "ssh_macs": SSH_MACS,
        "ssh_host_key_algorithms": SSH_HOST_KEY_ALGORITHMS,
        "sysctl_net": SYSCTL_NET,
        "sysctl_kernel": SYSCTL_KERNEL,
        "log_retention_days": LOG_RETENTION_DAYS,
        "journal_max_use": JOURNAL_MAX_USE,
        "ntp_servers": NTP_SERVERS,
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """sshd and timesyncd as converge keeps them, the sysctls live (the kernel's own only
    outside containers), disk and inode use, the clock, pending security updates."""
    return (
        Units((Unit(SSHD_UNIT), Unit(TIMESYNCD_UNIT, running=None))),
        Sysctl(SYSCTL_NET_FILE),
        Sysctl(SYSCTL_KERNEL_FILE, in_containers=False),
        Disk(DATA_PATHS),
        Clock(),
        SecurityUpdates(UNATTENDED_UPGRADES_CONFIG),
    )


@deploy("base")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """apt's proxy, the packages, then each file; each daemon takes its file once it changed."""
    files = render_for_deploy(ROLE, topology, host, secrets)
    install(ROLE, [files[path] for path in APT_BEFORE_PACKAGES if path in files])
    apt.update(name="base: package lists", cache_time=3600, _retries=2, _timeout=600)
    packages(ROLE, PACKAGES)
    install(ROLE, [files[path] for path in APT_AFTER_PACKAGES])
    install(ROLE, [files[SSHD_CONFIG]], check=SSHD_CHECK, then=reloaded(SSHD_UNIT))
    keep_running(ROLE, SSHD_UNIT)
    install_sysctl(ROLE, files[SYSCTL_NET_FILE])
    install_sysctl(ROLE, files[SYSCTL_KERNEL_FILE], apply=not _in_container())
    install(ROLE, [files[JOURNALD_CONFIG]], then=restarted(JOURNALD_UNIT))
    install(ROLE, [files[LOGROTATE_CONFIG]])
    install(ROLE, [files[TIMESYNCD_CONFIG]], then=restarted(TIMESYNCD_UNIT))
    # Enabled only: the unit skips itself in containers (ConditionVirtualization=!container),
    # so asking for it running would report a change on every run there.
    service("base: enable systemd-timesyncd", TIMESYNCD_UNIT, running=None)


def _in_container() -> bool:
    """A container shares its host's kernel: kernel sysctls are the host's business."""
    virt = current_host.get_fact(Command, command="systemd-detect-virt --container || true")
    return bool(virt) and virt.strip() != "none"
