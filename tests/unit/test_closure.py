"""Account closure, rendered offline for every host of the lab and production inventories.

- A closed account is in no credential list, recipient table, mailbox, collection, tree or
  directory entry of any role on any host: the only file naming it is the purge list.
- No role even asks the vault for its secrets, yet the vault keeps requiring them (reopening
  logs in with the same passwords); reopening renders every file byte for byte as before.
- The purge list of each data host names exactly that host's data of each account, inside its
  data roots, and covers everything the roles create for an account.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import pytest

from bulwark import closure, davstore, mail, purge, registry, web
from bulwark.audit import SealedSecrets
from bulwark.inventory import load_topology
from bulwark.platform_secrets import required_secrets
from bulwark.render import render_host_configs
from bulwark.secret import Secret
from bulwark.secret_names import app_password_name, main_password_name
from bulwark.topology import Topology
from bulwark.volumes import volume
from roles import backup as backup_role
from roles import dav, directory, files, mailstore, mx

REPO = Path(__file__).resolve().parents[2]
INVENTORIES = {name: load_topology(REPO / f"inventory/{name}.py") for name in ("lab", "production")}
CLOSED_ON = datetime.date(2026, 11, 30)
# bob's app passwords (the same labels in both inventories) and main password.
BOBS_SECRETS = {app_password_name("bob", "desktop"), main_password_name("bob")}


def closing(topology: Topology, user: str) -> Topology:
    """`topology` with `user` closed on CLOSED_ON: the inventory edit that closes an account."""
    accounts = tuple(
        dataclasses.replace(account, closed=CLOSED_ON) if account.user == user else account
        for account in topology.accounts
    )
    return dataclasses.replace(topology, accounts=accounts)


class RecordingSecrets(SealedSecrets):
    """Sealed placeholders, remembering every secret name a role asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def get(self, name: str) -> Secret:
        self.asked.add(name)
        return super().get(name)


HOSTS = [
    pytest.param(name, host.name, id=f"{name}:{host.name}")
    for name, topology in INVENTORIES.items()
    for host in topology.hosts
]


def rendered(topology: Topology, host_name: str, secrets=None) -> dict[str, str]:
    files_ = render_host_configs(topology, topology.host(host_name), secrets or SealedSecrets())
    return {item.path: item.content for item in files_}


@pytest.mark.parametrize(("inventory", "host_name"), HOSTS)
def test_a_closed_account_is_in_no_rendered_file_but_the_purge_list(inventory, host_name):
    asked_open, asked_closed = RecordingSecrets(), RecordingSecrets()
    rendered(INVENTORIES[inventory], host_name, asked_open)
    topology = closing(INVENTORIES[inventory], "bob")
    naming_bob = [
        path
        for path, content in rendered(topology, host_name, asked_closed).items()
        if "bob" in content
    ]
    # The purge list, and a backup host's configuration: its prune purges the archives too.
    allowed = (closure.LIST, backup_role.SERVER_CONFIG)
    assert naming_bob == [path for path in allowed if path in naming_bob]
    assert asked_closed.asked == asked_open.asked - BOBS_SECRETS


def test_every_login_and_recipient_of_a_closed_account_is_refused_where_it_was_accepted():
    """The files that accept bob while he is open stop naming him once he is closed: Dovecot's
    passdb (IMAP, POP, SMTP AUTH), Postfix's recipients (RCPT: user unknown) and senders, the
    web checker's accounts (DAV, WebDAV, FTPS), slapd's users and the refresh's books."""
    lab = INVENTORIES["lab"]
    accepting = {
        (host, path)
        for host in ("nj-mail", "sea-mail", "nj-web", "sea-web")
        for path, content in rendered(lab, host).items()
        if "bob" in content and path not in (closure.LIST, backup_role.SERVER_CONFIG)
    }
    paths = {path for _, path in accepting}
    assert {mail.AUTH_SCRIPT, mx.MAIN_CF, web.WEBAUTH_ACCOUNTS} <= paths
    assert {directory.USERS_LDIF, directory.REFRESH_CONFIG} <= paths
    closed = closing(lab, "bob")
    for host, path in sorted(accepting):
        assert "bob" not in rendered(closed, host)[path], (host, path)


@pytest.mark.parametrize(("inventory", "host_name"), HOSTS)
def test_reopening_renders_every_file_as_it_was(inventory, host_name):
    topology = INVENTORIES[inventory]
    before = rendered(topology, host_name)
    reopened = dataclasses.replace(
        closing(topology, "bob"),
        accounts=tuple(dataclasses.replace(a, closed=None) for a in topology.accounts),
    )
    assert rendered(reopened, host_name) == before


def test_the_vault_keeps_a_closed_accounts_secrets_until_the_purge():
    lab = INVENTORIES["lab"]
    assert required_secrets(closing(lab, "bob")) == required_secrets(lab)
    assert set(required_secrets(lab)) >= BOBS_SECRETS


def test_a_closed_editor_of_the_shared_book_may_change_it_no_more():
    lab = INVENTORIES["lab"]
    book = dataclasses.replace(lab.shared_addressbook, editors=("alice", "bob"))
    topology = dataclasses.replace(lab, shared_addressbook=book)
    rights = dav.rights_path("addressbooks")
    assert "(alice|bob)" in rendered(topology, "nj-web")[rights]
    assert "(alice)" in rendered(closing(topology, "bob"), "nj-web")[rights]


def purge_list(topology: Topology, host_name: str) -> purge.PurgeList:
    """The host's rendered purge list, read as the script reads it."""
    return purge.parse_list(json.loads(rendered(topology, host_name)[closure.LIST]))


def test_each_data_host_lists_its_own_data_of_a_closed_account_with_its_purge_day():
    lab = dataclasses.replace(closing(INVENTORIES["lab"], "bob"), closed_account_retention_days=37)
    bob = next(account for account in lab.accounts if account.user == "bob")
    for host_name in ("nj-mail", "sea-mail"):
        listed = purge_list(lab, host_name)
        assert listed.roots == (volume("mail").path,)
        assert listed.closed == (
            purge.Closed(
                "bob@example.net",
                CLOSED_ON,
                datetime.date(2027, 1, 6),
                (mail.account_home(lab, bob),),
            ),
        )
        assert list(listed.open) == ["alice@example.net"]
    for host_name in ("nj-web", "sea-web"):
        listed = purge_list(lab, host_name)
        assert listed.roots == (volume("dav").path, volume("files").path)
        (entry,) = listed.closed
        assert entry.paths == tuple(
            sorted((*davstore.account_paths(lab, bob), f"{files.DATA_DIR}/bob.example.net"))
        )
    assert closure.LIST not in rendered(lab, "nj-gw")


@pytest.mark.parametrize(("inventory", "host_name"), HOSTS)
def test_the_purge_list_passes_its_own_guards(inventory, host_name):
    """Every closed account's paths lie inside the data roots and apart from every open
    account's: the script would refuse nothing the renderer wrote."""
    topology = closing(INVENTORIES[inventory], "bob")
    host = topology.host(host_name)
    if closure.purge_role(host) is None:
        assert closure.LIST not in rendered(topology, host_name)
        return
    listed = purge_list(topology, host_name)
    assert listed.closed
    assert [purge.refusal(entry, listed) for entry in listed.closed] == [None]


def test_an_accounts_listed_paths_hold_everything_the_roles_create_for_it():
    """What the roles create for an open account (mailboxes, collections and links, file
    trees) all lies inside that account's paths in the purge list: a purge leaves nothing."""
    lab = INVENTORIES["lab"]
    alice = next(account for account in lab.accounts if account.user == "alice")
    principals, collections, links = dav.collection_paths(lab)
    created = {
        *mailstore.mailbox_paths(lab, alice).values(),
        *(p for p in (*principals, *collections, *links) if "alice" in p.rsplit("/", 2)[-2:][0]),
        f"{files.DATA_DIR}/{lab.files_root(alice)}/{lab.files_root(alice)}/files",
    }
    listed = [
        Path(path)
        for host_name in ("nj-mail", "nj-web")
        for path in closure.account_paths(lab, lab.host(host_name), alice)
    ]
    assert len(created) > 10
    for path in created:
        assert any(root == Path(path) or root in Path(path).parents for root in listed), path


def test_the_purge_is_installed_once_per_data_host_by_its_first_data_role():
    lab = INVENTORIES["lab"]
    assert {host.name: closure.purge_role(host) for host in lab.hosts} == {
        "nj-gw": None,
        "sea-gw": None,
        "nj-mail": "mailstore",
        "sea-mail": "mailstore",
        "nj-web": "dav",
        "sea-web": "dav",
        "nj-backup": None,
        "sea-backup": None,
    }
    assert set(closure.ACCOUNT_DATA) <= {role.name for role in registry.ROLES}


def test_the_lab_closes_an_account_named_in_its_environment(monkeypatch):
    """How the lab's closure tests close (and, unsetting it, reopen) an account: the
    inventory edit an operator makes, without editing the file."""
    monkeypatch.setenv("BULWARK_LAB_CLOSED", "bob:2026-11-30")
    lab = load_topology(REPO / "inventory/lab.py")
    assert [(a.user, a.closed) for a in lab.closed_accounts] == [("bob", CLOSED_ON)]
    assert [a.user for a in INVENTORIES["lab"].closed_accounts] == []
