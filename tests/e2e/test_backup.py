"""Backups from the user's side: a message, a contact, a calendar entry and a file are backed up,
deleted by the user's own clients, brought back by the operator's `bulwark backup restore`, and
the clients see them again.

The backups run through each data host's own unit (what its hourly timer starts); the restore
runs as the operator runs it, from the controller (outside the internet namespace, where the
hosts' SSH is). Every login here succeeds: this file spends none of the failed-login budget.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from labhost import as_operator, on_host
from mailclient import find, imap
from test_dav import (
    CALDAV,
    CARDDAV,
    ICAL_TYPE,
    VCARD_TYPE,
    default_book,
    default_calendar,
    icalendar,
    vcard,
)
from test_dav import login as dav_login
from test_files import login as files_login
from test_files import tree_url
from webclient import Web

from bulwark import backup
from bulwark.lab.accounts import LabAccount
from bulwark.topology import Topology
from roles import backup as role

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
CREATED = 201


@pytest.fixture(scope="module")
def web(topology: Topology, ca_file: Path) -> Web:
    return Web(topology, ca_file)


def back_up(topology: Topology, kind: str) -> None:
    """Run the backup now on the primary's host keeping `kind`, as its timer would."""
    primary = topology.primary_site.name
    for host in topology.hosts:
        if host.site == primary and kind in backup.backed_up_volumes(host):
            on_host(topology, host, role.fresh_run(role.CLIENT_UNIT))


def restore(alice: LabAccount, kind: str) -> str:
    user = alice.address.split("@")[0]
    argv = ["bulwark", "backup", "restore", str(LAB_INVENTORY), "--account", user, "--what", kind]
    result = as_operator(argv)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_message_deleted_by_its_owner_comes_back_from_the_backup(topology, tls_context, alice):
    subject = f"bulwark-e2e-backup-{uuid.uuid4().hex}"
    body = f"Subject: {subject}\r\nFrom: {alice.address}\r\n\r\nkept in the backup\r\n"
    with imap(topology, tls_context) as mailbox:
        mailbox.login(alice.address, alice.password.reveal())
        assert mailbox.append("INBOX", None, None, body.encode())[0] == "OK"
        back_up(topology, "mail")
        numbers = find(mailbox, "INBOX", subject)
        assert len(numbers) == 1
        mailbox.store(numbers[0], "+FLAGS", "\\Deleted")
        mailbox.expunge()
        assert find(mailbox, "INBOX", subject) == []
    restored = restore(alice, "mail")
    assert "'s mail: 1 restored from" in restored
    with imap(topology, tls_context) as mailbox:
        mailbox.login(alice.address, alice.password.reveal())
        numbers = find(mailbox, "INBOX", subject)
        assert len(numbers) == 1
        status, data = mailbox.fetch(numbers[0], "(BODY.PEEK[TEXT])")
        assert status == "OK" and b"kept in the backup" in data[0][1]
        mailbox.store(numbers[0], "+FLAGS", "\\Deleted")
        mailbox.expunge()


def test_a_contact_and_an_event_deleted_by_their_owner_come_back(web, topology, alice):
    uid = f"bulwark-e2e-backup-{uuid.uuid4().hex}"
    contact = web.url(CARDDAV, f"{default_book(alice)}{uid}.vcf")
    event = web.url(CALDAV, f"{default_calendar(alice)}{uid}.ics")
    bodies = {contact: (VCARD_TYPE, vcard(uid)), event: (ICAL_TYPE, icalendar(uid, "backed up"))}
    for url, (kind, body) in bodies.items():
        headers = {"Content-Type": kind, "If-None-Match": "*"}
        assert web.request("PUT", url, dav_login(alice), headers=headers, body=body).status_code \
            == CREATED  # fmt: skip
    back_up(topology, "dav")
    for url in bodies:
        assert web.request("DELETE", url, dav_login(alice)).status_code in (200, 204)
        assert web.request("GET", url, dav_login(alice)).status_code == 404
    assert "'s dav: 2 restored from" in restore(alice, "dav")
    try:
        for url in bodies:
            response = web.request("GET", url, dav_login(alice))
            assert response.status_code == 200, url
            assert f"UID:{uid}" in response.text
    finally:
        for url in bodies:
            web.request("DELETE", url, dav_login(alice))


def test_a_file_deleted_by_its_owner_comes_back_and_a_newer_one_is_kept(web, topology, alice):
    name = f"bulwark-e2e-backup-{uuid.uuid4().hex}"
    deleted, changed = (
        tree_url(web, alice, f"{name}-deleted.txt"),
        tree_url(web, alice, f"{name}-changed.txt"),
    )
    for url in (deleted, changed):
        assert web.request("PUT", url, files_login(alice), body=b"as backed up\n").status_code \
            == CREATED  # fmt: skip
    back_up(topology, "files")
    assert web.request("DELETE", deleted, files_login(alice)).status_code in (200, 204)
    assert web.request("PUT", changed, files_login(alice), body=b"newer\n").status_code in (
        200,
        204,
    )
    restored = restore(alice, "files")
    try:
        assert "'s files: 1 restored from" in restored
        assert web.request("GET", deleted, files_login(alice)).content == b"as backed up\n"
        assert web.request("GET", changed, files_login(alice)).content == b"newer\n"
    finally:
        for url in (deleted, changed):
            web.request("DELETE", url, files_login(alice))
