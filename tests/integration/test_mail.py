"""The mx and mailstore roles on the running lab hosts: packages, services, sockets, files, the
effective daemon settings and replication.

Expected values come from the roles, bulwark.mail and the service catalogue, never from here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import testinfra

from bulwark import catalogue, mail
from bulwark.inventory import load_topology
from bulwark.plan import ManagedFile
from bulwark.topology import Host
from roles import mailstore, mx

LAB = load_topology(Path(__file__).resolve().parents[2] / "inventory" / "lab.py")
MAIL_ROLES = {"mx", "mailstore"}


def lab_host(host) -> Host:
    return LAB.host(host.backend.hostname)


@pytest.fixture(autouse=True)
def _mail_hosts_only(host) -> None:
    """The harness runs every test on every lab host; these concern the mail hosts."""
    found = lab_host(host)
    if not MAIL_ROLES & set(found.roles):
        pytest.skip(f"{found.name} runs no mail role")


def with_role(host, role: str) -> Host:
    """The lab host under test; skipped if it lacks `role` (a production-like split)."""
    found = lab_host(host)
    if not found.has_role(role):
        pytest.skip(f"{found.name} has no {role} role")
    return found


def managed(host) -> list[ManagedFile]:
    found = lab_host(host)
    return [
        *(mx.managed_files(LAB, found) if found.has_role("mx") else ()),
        *(mailstore.managed_files(LAB, found) if found.has_role("mailstore") else ()),
    ]


def test_packages_are_installed(host):
    found = lab_host(host)
    wanted = set()
    if found.has_role("mx"):
        wanted |= set(mx.PACKAGES)
    if found.has_role("mailstore") or mail.writes_dovecot("mx", found):
        wanted |= set(mail.AUTH_PACKAGES)
    if found.has_role("mailstore"):
        wanted |= set(mailstore.PACKAGES)
    for package in sorted(wanted):
        assert host.package(package).is_installed, package


def test_every_managed_file_has_its_owner_and_mode(host):
    for file in managed(host):
        remote = host.file(file.path)
        assert remote.is_file, file.path
        assert (remote.user, remote.group) == (file.user, file.group), file.path
        assert remote.mode == int(file.mode, 8), file.path


def test_postfix_runs_and_listens_on_the_mx_ports(host):
    with_role(host, "mx")
    assert host.service(mail.POSTFIX_INSTANCE).is_running
    assert host.service(mx.POSTFIX_UNIT).is_enabled
    for name in ("smtp", "submissions", "submission"):
        assert host.socket(f"tcp://0.0.0.0:{catalogue.service(name).port}").is_listening, name


def test_postfix_effective_tls_settings(host):
    with_role(host, "mx")
    main = {
        key: host.check_output(f"postconf -h {key}")
        for key in ("smtpd_tls_security_level", "smtpd_tls_auth_only", "smtpd_sasl_auth_enable")
    }
    assert main == {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_auth_only": "yes",
        "smtpd_sasl_auth_enable": "no",
    }
    overrides = set(host.check_output("postconf -P").splitlines())
    for name in ("submissions", "submission"):
        port = catalogue.service(name).port
        assert f"{port}/inet/smtpd_tls_security_level = encrypt" in overrides
        assert f"{port}/inet/smtpd_sasl_auth_enable = yes" in overrides
    smtp = catalogue.service("smtp").port
    assert not [line for line in overrides if line.startswith(f"{smtp}/inet/")]


def test_postfix_reaches_dovecot_auth_through_a_private_socket(host):
    with_role(host, "mx")
    socket = host.file(f"{mail.POSTFIX_QUEUE}/{mail.SASL_SOCKET}")
    assert socket.is_socket
    assert (socket.user, socket.group, socket.mode) == ("postfix", "postfix", 0o660)


def test_dovecot_runs_with_tls_listeners_and_lan_services(host):
    found = with_role(host, "mailstore")
    assert host.service("dovecot").is_running
    assert host.service("dovecot").is_enabled
    for name in ("imaps", "pop3s"):
        assert host.socket(f"tcp://0.0.0.0:{catalogue.service(name).port}").is_listening, name
    for name in ("lmtp", "mail-replication"):
        port = catalogue.service(name).port
        assert host.socket(f"tcp://{found.lan_address}:{port}").is_listening, name
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, name


@pytest.mark.parametrize("port", catalogue.FORBIDDEN_PORTS)
def test_no_plaintext_twin_listens(host, port):
    assert not host.socket(f"tcp://{port}").is_listening


def test_dovecot_effective_settings(host):
    with_role(host, "mailstore")
    settings = {
        key: host.check_output(f"doveconf -h {key}")
        for key in ("ssl", "login_trusted_networks", "ssl_min_protocol", "auth_mechanisms")
    }
    assert settings == {
        "ssl": "required",
        "login_trusted_networks": "",
        "ssl_min_protocol": "TLSv1.2",
        "auth_mechanisms": "plain login",
    }


def test_mail_home_is_private_to_vmail(host):
    with_role(host, "mailstore")
    home = host.file(mail.VMAIL_HOME)
    assert home.is_directory
    assert (home.user, home.group, home.mode) == (mail.VMAIL_USER, mail.VMAIL_USER, 0o700)


def test_the_replica_is_reached_at_its_lan_address(host):
    found = with_role(host, "mailstore")
    peer = mailstore.replica(LAB, found)
    resolved = host.check_output(f"getent hosts {LAB.fqdn(peer)}").split()[0]
    assert resolved == str(peer.lan_address)


# A freshly deployed pair of stores syncs within seconds; allow for a busy machine.
_REPLICATION_SETTLES_WITHIN = 120


def _eventually(check, within: float = _REPLICATION_SETTLES_WITHIN):
    """`check()`'s result once it is truthy, polling; its last result when time runs out."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(2)


def _replication_status(host) -> dict[str, str]:
    """Account -> `-`, or `y` while its last sync failed; a new sync is requested first, so a
    transient failure (the peer's Dovecot reloading during a deploy) clears and a lasting one
    (diverged mailbox GUIDs) stays."""
    host.run("doveadm replicator replicate '*'")
    rows = host.check_output("doveadm replicator status '*'").splitlines()[1:]
    return {row.split()[0]: row.split()[-1] for row in rows}


def test_every_account_replicates_without_failures(host):
    with_role(host, "mailstore")
    wanted = {account.address(LAB.domain): "-" for account in LAB.accounts}
    assert _eventually(lambda: _replication_status(host) == wanted), _replication_status(host)


def test_both_sites_hold_the_same_mailboxes(host, request):
    """Same names and GUIDs on both stores: mailboxes created once and replicated (a mailbox
    created in both sites gets two GUIDs, which dsync never reconciles)."""
    found = with_role(host, "mailstore")
    if found.site != LAB.primary_site.name:
        pytest.skip("compared from the primary site")
    peer = testinfra.get_host(
        f"ssh://{mailstore.replica(LAB, found).name}", ssh_config=request.config.option.ssh_config
    )
    host.run("doveadm replicator replicate '*'")
    for account in LAB.accounts:
        command = f"doveadm mailbox status -u {account.address(LAB.domain)} guid '*'"
        here = sorted(host.check_output(command).splitlines())
        assert {line.split()[0] for line in here} >= {"INBOX", *mailstore.MAILBOXES}
        assert _eventually(
            lambda c=command, h=here: sorted(peer.check_output(c).splitlines()) == h
        ), f"{account.user}: the replica's mailboxes differ"
