"""The base role, as the running hosts show it: sshd, sysctls, journald, upgrades, time, units.

Expected values are read from roles/base.py, the single place that sets them.
"""

from __future__ import annotations

import pytest

from roles import base


def _sshd(host) -> dict[str, str]:
    """sshd's effective configuration (`sshd -T`): what the daemon really uses."""
    settings = {}
    for line in host.check_output("sshd -T").splitlines():
        key, _, value = line.partition(" ")
        settings[key] = value
    return settings


def test_sshd_allows_keys_only(host):
    settings = _sshd(host)
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["permitemptypasswords"] == "no"
    # OpenSSH prints prohibit-password under its old name.
    assert settings["permitrootlogin"] in ("prohibit-password", "without-password")


def test_sshd_logs_verbosely(host):
    assert _sshd(host)["loglevel"] == "VERBOSE"


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("kexalgorithms", base.SSH_KEX),
        ("ciphers", base.SSH_CIPHERS),
        ("macs", base.SSH_MACS),
    ],
)
def test_sshd_algorithms_are_the_roles(host, setting, allowed):
    assert _sshd(host)[setting].split(",") == list(allowed)


def test_sshd_runs(host):
    service = host.service("ssh")
    assert service.is_running
    assert service.is_enabled


@pytest.mark.parametrize(("key", "value"), base.SYSCTL_NET)
def test_network_sysctl(host, key, value):
    assert host.sysctl(key) == int(value)


def test_journal_is_persistent_and_kept_180_days(host):
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in config.splitlines()
    assert f"MaxRetentionSec={base.LOG_RETENTION_DAYS}day" in config.splitlines()
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert host.file(f"/var/log/journal/{machine_id}").is_directory


def test_unattended_upgrades_take_security_updates_only(host):
    assert host.package("unattended-upgrades").is_installed
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    patterns = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    # The list's head prints as `...Origins-Pattern "";`, its items as `...Origins-Pattern:: "X";`.
    items = [line for line in patterns.splitlines() if "Origins-Pattern:: " in line]
    origins = [line.split('"')[1] for line in items]
    assert origins == list(base.UNATTENDED_ORIGINS)


def test_timesyncd_is_enabled(host):
    """Enabled everywhere; its unit skips itself in containers (ConditionVirtualization)."""
    assert host.package("systemd-timesyncd").is_installed
    assert host.service("systemd-timesyncd").is_enabled
    in_container = host.run("systemd-detect-virt --container").rc == 0
    if not in_container:
        assert host.service("systemd-timesyncd").is_running


def test_no_failed_units(host):
    failed = host.check_output("systemctl list-units --failed --plain --no-legend")
    assert failed == ""
