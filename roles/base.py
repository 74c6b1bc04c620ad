"""base: the host baseline every bulwark host gets.

apt through the site's cache, security-only unattended upgrades, a key-only sshd with modern
algorithms, network and kernel sysctls, a persistent journal and logrotate both keeping logs
180 days, and systemd-timesyncd.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server, systemd

from bulwark import catalogue
from bulwark.deploying import apply_sysctl, put_file, render_for_deploy
from bulwark.plan import ManagedFile
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "base"

# Packages the baseline needs on top of a minimal Debian.
PACKAGES: tuple[str, ...] = (
    "openssh-server",
    "unattended-upgrades",
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

# sshd algorithms: Mozilla/dev-sec modern sets, all supported by OpenSSH 9.2 and by paramiko
# (pyinfra's SSH client): curve25519 and group16 kex, AEAD and CTR ciphers, ETM MACs only.
SSH_KEX: tuple[str, ...] = (
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
SSH_CIPHERS: tuple[str, ...] = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
SSH_MACS: tuple[str, ...] = (
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
SSH_HOST_KEY_ALGORITHMS: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "rsa-sha2-512",
    "rsa-sha2-256",
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
UNATTENDED_UPGRADES_CONFIG = "/etc/apt/apt.conf.d/52bulwark-unattended-upgrades"
SSHD_CONFIG = "/etc/ssh/sshd_config.d/10-bulwark.conf"
SYSCTL_NET_FILE = "/etc/sysctl.d/60-bulwark-net.conf"
SYSCTL_KERNEL_FILE = "/etc/sysctl.d/60-bulwark-kernel.conf"
JOURNALD_CONFIG = "/etc/systemd/journald.conf.d/60-bulwark.conf"
TIMESYNCD_CONFIG = "/etc/systemd/timesyncd.conf.d/60-bulwark.conf"


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    proxy = (
        (ManagedFile(APT_PROXY, "apt-proxy.conf.j2", checker="apt"),) if topology.apt_proxy else ()
    )
    return (
        *proxy,
        ManagedFile("/etc/apt/apt.conf.d/20auto-upgrades", "auto-upgrades.conf.j2", checker="apt"),
        ManagedFile(UNATTENDED_UPGRADES_CONFIG, "unattended-upgrades.conf.j2", checker="apt"),
        ManagedFile(SSHD_CONFIG, "sshd_config.j2", mode="0600", checker="sshd"),
        ManagedFile(SYSCTL_NET_FILE, "sysctl-net.conf.j2"),
        ManagedFile(SYSCTL_KERNEL_FILE, "sysctl-kernel.conf.j2"),
        ManagedFile(JOURNALD_CONFIG, "journald.conf.j2"),
        ManagedFile("/etc/logrotate.conf", "logrotate.conf.j2"),
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


@deploy("base")
def converge(secrets: SecretStore) -> None:
    """Converge the baseline; restart or reload each daemon only when its file changed."""
    rendered = {item.path: item for item in render_for_deploy(ROLE, secrets)}
    if APT_PROXY in rendered:
        put_file(rendered.pop(APT_PROXY))
    apt.packages(
        name="base: packages",
        packages=list(PACKAGES),
        update=True,
        cache_time=3600,
        no_recommends=True,
        _retries=2,
        _timeout=600,
    )
    uploaded = {path: put_file(item) for path, item in rendered.items()}
    apply_sysctl(ROLE, SYSCTL_NET_FILE, uploaded[SYSCTL_NET_FILE])
    if not _in_container():
        apply_sysctl(ROLE, SYSCTL_KERNEL_FILE, uploaded[SYSCTL_KERNEL_FILE])
    sshd_changed = uploaded[SSHD_CONFIG].did_change
    server.shell(name="base: check sshd configuration", commands=["sshd -t"], _if=sshd_changed)
    systemd.service(
        name="base: reload sshd",
        service="ssh.service",
        running=True,
        enabled=True,
        reloaded=True,
        _if=sshd_changed,
    )
    systemd.service(
        name="base: restart journald",
        service="systemd-journald.service",
        restarted=True,
        _if=uploaded[JOURNALD_CONFIG].did_change,
    )
    # Enabled only: the unit skips itself in containers (ConditionVirtualization=!container),
    # so asking for it running would report a change on every run there.
    systemd.service(
        name="base: enable systemd-timesyncd",
        service="systemd-timesyncd.service",
        running=None,
        enabled=True,
    )
    systemd.service(
        name="base: restart systemd-timesyncd",
        service="systemd-timesyncd.service",
        restarted=True,
        _if=uploaded[TIMESYNCD_CONFIG].did_change,
    )


def _in_container() -> bool:
    """A container shares its host's kernel: kernel sysctls are the host's business."""
    virt = host.get_fact(Command, command="systemd-detect-virt --container || true")
    return bool(virt) and virt.strip() != "none"
