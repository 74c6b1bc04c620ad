"""Closing an account, from the outside: the deploy that closes bob refuses him at once on every
protocol, at both sites, and refuses mail to him; reopening before the purge gives him back his
data; past the purge day the hosts' timers and the backup hosts' prune leave nothing of him.

The deploys run as the operator runs them (`BULWARK_LAB_CLOSED` closes a lab account, as
`closed:` in an inventory would). Whatever happens, the module ends with bob open again (an
empty account if the purge ran). The refused logins are spread over the four data hosts, at
most three each, well inside each host's ban threshold; the web ones are counted against this
module's own budget (ClosureAuth), not the DAV or files tests'. Its deploys restart services
the other tests use, so it runs after them (conftest.REDEPLOYS), and before the ban tests.
"""

from __future__ import annotations

import datetime
import ftplib
import imaplib
import json
import poplib
import smtplib
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from endpoints import host_name, name, port
from labhost import as_operator, on_host
from ldap3 import Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from mailclient import TIMEOUT, find, imap
from test_dav import CALDAV, CARDDAV, default_book, default_calendar
from test_files import tree_url
from test_mailtrust import OUTSIDE_MX
from webclient import CountedBasicAuth, Web

from bulwark import account_data, backup
from bulwark.lab.accounts import LabAccount
from bulwark.topology import Topology
from roles import backup as backup_role

pytestmark = pytest.mark.redeploys  # conftest.REDEPLOYS: after the tests its deploys disturb

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
TODAY = datetime.datetime.now(datetime.UTC).date()
DATA_ROLES = ("mx", "mailstore", "dav", "files", "directory", "backup")
PURGE = "/usr/local/sbin/bulwark-purge-closed"
PURGE_LIST = "/etc/bulwark/closed-accounts.json"
REPLICATION_DEADLINE = 60  # seconds the secondary may take to follow the primary
WEB_REFUSALS = 3  # CardDAV, WebDAV and CalDAV each refuse bob once


class ClosureAuth(CountedBasicAuth):
    """This module's web logins: WEB_REFUSALS refused ones at most."""

    budget = WEB_REFUSALS
    refused = 0


def web_login(account: LabAccount) -> ClosureAuth:
    return ClosureAuth(account.address, account.password.reveal())


def deploy(topology: Topology, closed: str = "") -> None:
    """Deploy every host keeping accounts, with `closed` as BULWARK_LAB_CLOSED."""
    hosts = sorted(
        host.name for host in topology.hosts if any(host.has_role(role) for role in DATA_ROLES)
    )
    limits = [argument for host in hosts for argument in ("--limit", host)]
    result = as_operator(
        ["pyinfra", "-y", str(LAB_INVENTORY), "deploy.py", *limits],
        env={"BULWARK_LAB_CLOSED": closed},
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def web(topology: Topology, ca_file: Path) -> Web:
    return Web(topology, ca_file)


@pytest.fixture(scope="module")
def reopened_at_the_end(topology: Topology) -> Iterator[None]:
    yield
    deploy(topology)


def sites(topology: Topology) -> tuple[str, str]:
    primary = topology.primary_site.name
    return primary, next(site.name for site in topology.sites if site.name != primary)


def imap_refuses(topology, context, account: LabAccount, site: str) -> bool:
    with imap(topology, context, site) as mailbox:
        try:
            mailbox.login(account.address, account.password.reveal())
        except imaplib.IMAP4.error:
            return True
    return False


def pop_refuses(topology, context, account: LabAccount, site: str) -> bool:
    client = poplib.POP3_SSL(name(topology, "pop3s", site), port("pop3s"), context=context,
                             timeout=TIMEOUT)  # fmt: skip
    try:
        client.user(account.address)
        client.pass_(account.password.reveal())
    except poplib.error_proto:
        return True
    finally:
        client.close()
    return False


def smtp_auth_refuses(topology, context, account: LabAccount, site: str) -> bool:
    with smtplib.SMTP_SSL(name(topology, "submissions", site), port("submissions"),
                          context=context, timeout=TIMEOUT) as smtp:  # fmt: skip
        try:
            smtp.login(account.address, account.password.reveal())
        except smtplib.SMTPAuthenticationError:
            return True
    return False


def ftps_refuses(topology, context, account: LabAccount, site: str) -> bool:
    client = ftplib.FTP_TLS(context=context, timeout=TIMEOUT)  # noqa: S321 - TLS before USER
    client.connect(host_name(topology, "ftp", site), port("ftp"))
    client.auth()
    try:
        client.login(account.address, account.password.reveal())
    except ftplib.error_perm:
        return True
    finally:
        client.close()
    return False


def ldap_refuses(topology, ca_file: Path, account: LabAccount, site: str) -> bool:
    server = Server(host_name(topology, "ldap", site), port=port("ldaps"), use_ssl=True,
                    tls=Tls(ca_certs_file=str(ca_file), validate=ssl.CERT_REQUIRED),
                    connect_timeout=TIMEOUT)  # fmt: skip
    bind = f"cn={account.address},dc=User"
    try:
        connection = Connection(server, bind, account.password.reveal(), receive_timeout=TIMEOUT)
        return not connection.bind()
    except LDAPException:
        return True


def rcpt_refused(topology, context, address: str) -> int:
    """The MX's reply code to RCPT TO `address`, as the outside world's server gets it."""
    with smtplib.SMTP(name(topology, "smtp"), port("smtp"), local_hostname=OUTSIDE_MX,
                      timeout=TIMEOUT) as smtp:  # fmt: skip
        smtp.starttls(context=context)
        smtp.ehlo(OUTSIDE_MX)
        smtp.mail(f"someone@{OUTSIDE_MX.split('.', 1)[1]}")
        return smtp.rcpt(address)[0]


def test_a_closed_account_is_refused_everywhere_and_reopened_with_its_data(
    topology, tls_context, ca_file, web, bob, alice, reopened_at_the_end
):
    subject = f"bulwark-e2e-closure-{uuid.uuid4().hex}"
    with imap(topology, tls_context) as mailbox:
        mailbox.login(bob.address, bob.password.reveal())
        body = f"Subject: {subject}\r\nFrom: {bob.address}\r\n\r\nstill here\r\n"
        assert mailbox.append("INBOX", None, None, body.encode())[0] == "OK"
    deploy(topology, f"bob:{TODAY.isoformat()}")
    primary, other = sites(topology)
    # Mail hosts: IMAP at both sites, POP and SMTP AUTH at one each.
    assert imap_refuses(topology, tls_context, bob, primary)
    assert imap_refuses(topology, tls_context, bob, other)
    assert pop_refuses(topology, tls_context, bob, other)
    assert smtp_auth_refuses(topology, tls_context, bob, primary)
    assert rcpt_refused(topology, tls_context, bob.address) == 550
    # Web hosts: CardDAV and WebDAV at the primary; CalDAV, FTPS and LDAP at the other site.
    book = web.url(CARDDAV, default_book(bob), primary)
    assert web.request("PROPFIND", book, web_login(bob), depth=0).status_code == 401
    assert web.request("PROPFIND", tree_url(web, bob), web_login(bob), depth=0).status_code \
        == 401  # fmt: skip
    calendar = web.url(CALDAV, default_calendar(bob), other)
    assert web.request("PROPFIND", calendar, web_login(bob), depth=0).status_code == 401
    assert ftps_refuses(topology, tls_context, bob, other)
    assert ldap_refuses(topology, ca_file, bob, other)
    # Another account is untouched.
    assert not imap_refuses(topology, tls_context, alice, primary)
    assert rcpt_refused(topology, tls_context, alice.address) == 250
    # The day before the purge, its timer deletes nothing.
    mail_host = topology.hosts_with_role("mailstore", primary)[0]
    entry = closed_entry(topology, mail_host, bob)
    eve = datetime.date.fromisoformat(entry["purge_on"]) - datetime.timedelta(days=1)
    on_host(topology, mail_host, [PURGE, "--list", PURGE_LIST, "--now", eve.isoformat()])
    assert all(exists(topology, mail_host, path) for path in entry["paths"])
    deploy(topology)
    with imap(topology, tls_context) as mailbox:
        mailbox.login(bob.address, bob.password.reveal())
        numbers = find(mailbox, "INBOX", subject)
        assert len(numbers) == 1
        mailbox.store(numbers[0], "+FLAGS", "\\Deleted")
        mailbox.expunge()


def closed_entry(topology: Topology, host, account: LabAccount) -> dict:
    """`account`'s entry in `host`'s rendered purge list: its purge day and paths there."""
    listed = json.loads(on_host(topology, host, ["cat", PURGE_LIST]))
    return next(entry for entry in listed["closed"] if entry["account"] == account.address)


def exists(topology: Topology, host, path: str) -> bool:
    found = ["sh", "-c", 'if test -e "$1"; then echo yes; else echo no; fi', "-", path]
    return on_host(topology, host, found).strip() == "yes"


def test_past_the_purge_day_nothing_of_a_closed_account_is_left_at_either_site_or_in_backups(
    topology, bob, reopened_at_the_end
):
    primary, _ = sites(topology)
    mail_source = topology.hosts_with_role("mailstore", primary)[0]
    on_host(topology, mail_source, backup_role.fresh_run(backup_role.CLIENT_UNIT))
    data_hosts = [
        host for host in topology.hosts
        if any(host.has_role(role) for role in ("mailstore", "dav", "files"))
    ]  # fmt: skip
    account = next(known for known in topology.accounts if known.user == bob.address.split("@")[0])
    for host in data_hosts:  # the replicas follow the primary within a minute
        paths = [path for kind in backup.backed_up_volumes(host)
                 for path in account_data.account_paths(topology, account, kind)]  # fmt: skip
        deadline = time.monotonic() + REPLICATION_DEADLINE
        while not any(exists(topology, host, path) for path in paths):
            assert time.monotonic() < deadline, f"{host.name} holds nothing of bob"
            time.sleep(1)
    deploy(topology, f"bob:{TODAY.isoformat()}")
    purge_day = closed_entry(topology, mail_source, bob)["purge_on"]
    at = f"{purge_day}T00:30:00+00:00"
    listed = {host.name: closed_entry(topology, host, bob)["paths"] for host in data_hosts}
    for host in data_hosts:  # closed, and still all there
        assert any(exists(topology, host, path) for path in listed[host.name]), host.name
    # Every host purges on its own; a replica may also follow its primary's deletion first.
    for host in data_hosts:
        on_host(topology, host, [PURGE, "--list", PURGE_LIST, "--now", at])
    for host in data_hosts:
        assert not any(exists(topology, host, path) for path in listed[host.name]), host.name
    repository = backup.repository_of(topology, mail_source)
    prune = [backup_role.SCRIPT, "--config", backup_role.SERVER_CONFIG, "prune", "--now", at]
    # The closing deploy started a prune and a drill there: this one waits for their lock.
    as_backup_user = ["runuser", "-u", backup.USER, "--", *prune]
    report = json.loads(on_host(topology, repository.backup_host, as_backup_user, timeout=900))
    assert report[mail_source.name]["closed_accounts_purged"] == ["bob"]
    every_path = (
        f"export BORG_BASE_DIR={backup_role.SERVER_BORG_DIR} "
        f"BORG_PASSCOMMAND='cat {backup_role.PASSPHRASE_DIR}/{mail_source.name}'; "
        f"for a in $(borg --lock-wait 240 list --short {repository.path}); do "
        f"borg --lock-wait 240 list --short {repository.path}::$a; done"
    )
    listing = ["runuser", "-u", backup.USER, "--", "sh", "-c", every_path]
    listed = on_host(topology, repository.backup_host, listing, timeout=300)
    bob_home = closed_entry(topology, mail_source, bob)["paths"][0].lstrip("/")
    assert listed.strip(), "no archive listed"
    assert bob_home not in listed
