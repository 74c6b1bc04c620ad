"""The LDAP address book as mail clients use it: ldap3 and OpenLDAP's ldapsearch over LDAPS.

Clients bind as `cn=<address>,dc=User` with an app password and search `dc=AddressBook` (or the
empty base, served from it), by the catalogue's host names: `ldap.DOMAIN` is the primary site's
web host, `ldap.SITE.DOMAIN` a given site's. Certificates are verified against the lab's CA.

Contacts come from the CardDAV books: a contact written over CardDAV at the primary must be
found over LDAP at both sites within the issue's five minutes (the refresh runs every minute,
each site from its own replica), by its owner only, and the shared book's by everyone.

Failed logins: binds refused for a wrong password count towards the web host's ban with
test_dav's and test_files' (bruteforce.MAX_FAILURES in ten minutes); this file causes exactly
FAILED_BINDS of them (the main password and a wrong one, at the primary). An anonymous or
unauthenticated bind is refused without counting (slapd answers 48 and 53, not 49).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from endpoints import assert_modern_tls, host_name, port
from ldap3 import BASE, MODIFY_REPLACE, RESTARTABLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException

from bulwark.lab.accounts import LabAccount
from bulwark.topology import Topology

FAILED_BINDS = 2  # failed binds this file causes (see the module docstring)
BOOK = "dc=AddressBook"
USERS = "dc=User"
# How long a CardDAV change may take to be found over LDAP (the five minutes), and how
# often the test looks.
FRESHNESS_DEADLINE = 300
FRESHNESS_POLL = 2
# LDAP result codes (RFC 4511).
SUCCESS, INVALID_CREDENTIALS, UNWILLING = 0, 49, 53
INAPPROPRIATE_AUTHENTICATION, OPERATIONS_ERROR = 48, 1
START_TLS = "1.3.6.1.4.1.1466.20037"  # the StartTLS extended operation (RFC 4511 4.14)
# What the clients ask for (Thunderbird, Apple Contacts, Outlook).
ATTRIBUTES = ["cn", "sn", "givenName", "mail", "telephoneNumber", "mobile", "o", "title"]
CONTACT_ATTRIBUTES = [*ATTRIBUTES, "postalAddress", "l", "postalCode", "facsimileTelephoneNumber"]
VCARD_TYPE = "text/vcard; charset=utf-8"


def ldap_name(topology: Topology, site: str | None = None) -> str:
    return host_name(topology, "ldap", site)


def bind_dn(account: LabAccount) -> str:
    return f"cn={account.address},{USERS}"


def connection(server: Server, user: str | None = None, password: str | None = None) -> Connection:
    """A client connection as a mail client keeps one: slapd restarts on each rebuilt book
    (about a second), and the client connects and binds again (ldap3's RESTARTABLE strategy,
    every 0.5 s, 20 times at most)."""
    client = Connection(server, user, password, client_strategy=RESTARTABLE)
    client.strategy.restartable_sleep_time = 0.5
    client.strategy.restartable_tries = 20
    return client


def server(topology: Topology, ca_file: Path, site: str | None = None) -> Server:
    tls = Tls(ca_certs_file=str(ca_file), validate=ssl.CERT_REQUIRED)
    return Server(ldap_name(topology, site), port=port("ldaps"), use_ssl=True, tls=tls)


def bound(
    topology: Topology, ca_file: Path, account: LabAccount, site: str | None = None, label: int = 0
) -> Connection:
    """A connection bound as `account` with one of its app passwords (revealed into it only)."""
    password = account.app_passwords[label].reveal()
    bound_connection = connection(server(topology, ca_file, site), bind_dn(account), password)
    assert bound_connection.bind(), bound_connection.result
    return bound_connection


def search(connection: Connection, base: str, ldap_filter: str, attributes=ATTRIBUTES) -> dict:
    """DN -> attributes of what the search returns (an error result is an empty dict)."""
    connection.search(base, ldap_filter, SUBTREE, attributes=attributes)
    return {entry.entry_dn: entry.entry_attributes_as_dict for entry in connection.entries}


def sites(topology: Topology) -> tuple[str, str]:
    primary = topology.primary_site.name
    (other,) = (site.name for site in topology.peer_sites(primary))
    return primary, other


# --- TLS and binds ------------------------------------------------------------------------------


def test_ldaps_is_tls_1_2_or_later_and_forward_secret(topology):
    assert_modern_tls(ldap_name(topology), port("ldaps"))


def test_each_account_binds_with_each_app_password(topology, ca_file, alice, bob):
    for account in (alice, bob):
        for label in range(len(account.app_passwords)):
            connection = bound(topology, ca_file, account, label=label)
            assert connection.extend.standard.who_am_i() == f"dn:{bind_dn(account)}"
            connection.unbind()


def test_starttls_is_refused_on_the_implicit_tls_port(topology, ca_file, alice):
    """636 is TLS from the first byte: StartTLS inside it is an error, and no plaintext LDAP
    listens anywhere (tests/e2e/test_exposure.py: 389)."""
    connection = bound(topology, ca_file, alice)
    connection.extended(START_TLS)  # ldap3's start_tls() sends nothing on a TLS connection
    assert connection.result["result"] == OPERATIONS_ERROR
    assert connection.result["message"] == "TLS already started"


def test_anonymous_and_unauthenticated_access_is_refused(topology, ca_file):
    anonymous = connection(server(topology, ca_file))
    assert not anonymous.bind()
    assert anonymous.result["result"] == INAPPROPRIATE_AUTHENTICATION
    # Searching without any bind: nothing.
    unbound = connection(server(topology, ca_file))
    unbound.open()
    assert not unbound.search(BOOK, "(objectClass=*)", SUBTREE, attributes=["cn"])
    assert unbound.entries == []
    # A DN with an empty password (an "unauthenticated" simple bind) is no login either.
    empty = connection(server(topology, ca_file), f"cn=nobody@{topology.domain},{USERS}", "")
    with contextlib.suppress(LDAPException):  # ldap3 refuses to send it unless told it may
        empty.bind()
    assert empty.bound is False


# --- the address book ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "ldap_filter"),
    [
        # Thunderbird's autocomplete: (|(cn=%v1*%v2-*)(mail=%v1*%v2-*)(sn=%v1*%v2-*))
        (BOOK, "(|(cn=ali*)(mail=ali*)(sn=ali*))"),
        # Apple Contacts, sometimes from the empty base.
        ("", "(|(givenName=Alice)(sn=Alice)(cn=Alice)(mail=Alice))"),
        # Outlook: an entry with a mail address whose name or address starts with the text.
        ("", "(&(mail=*)(|(cn=Alice*)(mail=Alice*)(givenName=Alice*)(sn=Alice*)))"),
    ],
    ids=["thunderbird", "apple", "outlook"],
)
def test_client_filters_find_the_accounts(topology, ca_file, alice, bob, base, ldap_filter):
    found = search(bound(topology, ca_file, bob), base, ldap_filter)
    (entry,) = (attrs for dn, attrs in found.items() if alice.address in attrs.get("mail", []))
    name = next(a.name for a in topology.accounts if a.user == alice.user)
    assert entry["cn"] == [name]
    assert entry["sn"] == [name.split()[-1]]
    assert entry["givenName"] == [name.split()[0]]


def test_ldapsearch_lists_the_global_address_list(topology, ca_file, alice, bob):
    """OpenLDAP's own client, as scripts and Evolution use it; the password from a file."""
    with tempfile.NamedTemporaryFile("w", delete=False) as secret:
        os.chmod(secret.name, 0o600)
        secret.write(bob.password.reveal())
    try:
        result = subprocess.run(
            ["ldapsearch", "-LLL", "-o", "ldif_wrap=no", "-H",
             f"ldaps://{ldap_name(topology)}", "-D", bind_dn(bob), "-y", secret.name,
             "-b", f"ou=Accounts,{BOOK}", "(objectClass=inetOrgPerson)", "mail"],
            env={**os.environ, "LDAPTLS_CACERT": str(ca_file), "LDAPTLS_REQCERT": "demand"},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.unlink(secret.name)
    assert result.returncode == 0, result.stderr
    mails = sorted(line.split(": ", 1)[1] for line in result.stdout.splitlines() if "mail:" in line)
    assert mails == sorted(a.address(topology.domain) for a in topology.accounts)


def test_the_owner_never_sees_which_account_owns_an_entry(topology, ca_file, alice):
    """seeAlso names a personal contact's owner for slapd's ACL: nobody may read or filter it."""
    connection = bound(topology, ca_file, alice)
    found = search(connection, BOOK, "(objectClass=*)", ["*", "+"])
    assert found and not any(attrs.get("seeAlso") for attrs in found.values())
    assert search(connection, BOOK, f"(seeAlso={bind_dn(alice)})") == {}


# --- contacts from CardDAV ----------------------------------------------------------------------


def vcard(uid: str, name: str) -> str:
    """A vCard with what an address book lookup shows, and a fax number holding an `@` that
    the LDAP syntax forbids (left out, with a note, the rest kept)."""
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid}",
        f"FN:{name}",
        f"N:{name.split()[-1]};{name.split()[0]};;;",
        f"EMAIL;TYPE=INTERNET:{uid}@example.org",
        "TEL;TYPE=WORK,VOICE:+1 555 0100",
        "TEL;TYPE=CELL:+1 555 0101",
        "TEL;TYPE=FAX:fax@example.org",
        "ORG:Example Works;Research",
        "TITLE:Chief Tester",
        "ADR;TYPE=WORK:;;1 Main Street;Springfield;;12345;USA",
        "END:VCARD",
    ]
    return "\r\n".join(lines) + "\r\n"


def book_url(topology: Topology, account: LabAccount, book: str, site: str) -> str:
    return (
        f"https://carddav.{site}.{topology.domain}/dav/addressbooks/user/{account.address}/{book}/"
    )


@pytest.fixture(scope="module")
def contacts(topology, ca_file, alice) -> Iterator[dict[str, str]]:
    """A personal contact of alice's (non-ASCII name) and one in the shared book (alice is its
    editor), written over CardDAV at the primary; deleted afterwards, whatever happened.
    book -> the contact's UID."""
    primary = topology.primary_site.name
    shared = f"{alice.address}.Shared"
    auth = (alice.address, alice.password.reveal())
    written = {}
    try:
        for book, name in (("Default", "Zoë Personal"), (shared, "Sam Shared")):
            uid = f"bulwark-ldap-{uuid.uuid4().hex}"
            url = f"{book_url(topology, alice, book, primary)}{uid}.vcf"
            response = requests.put(
                url, data=vcard(uid, name).encode(), auth=auth, verify=str(ca_file), timeout=30,
                headers={"Content-Type": VCARD_TYPE, "If-None-Match": "*"},
            )  # fmt: skip
            assert response.status_code == 201, response.text
            written[book] = uid
        yield written
    finally:
        for book, uid in written.items():
            url = f"{book_url(topology, alice, book, primary)}{uid}.vcf"
            with contextlib.suppress(requests.RequestException):
                requests.delete(url, auth=auth, verify=str(ca_file), timeout=30)
    # Deleted over CardDAV, gone from LDAP at both sites (and no rebuild left to restart slapd
    # while later tests connect).
    deadline = time.monotonic() + FRESHNESS_DEADLINE
    for site in sites(topology):
        client = bound(topology, ca_file, alice, site)
        for uid in written.values():
            gone = _wait_for_mail(client, BOOK, f"{uid}@example.org", deadline, present=False)
            assert gone == {}, f"{uid} still in LDAP at {site} {FRESHNESS_DEADLINE} s after"


def _wait_for_mail(
    client: Connection, base: str, mail: str, deadline: float, present: bool = True
) -> dict | None:
    """The entry with `mail` once it is there (or, not `present`, {} once it is gone), polled
    until `deadline`; None if that never happened."""
    while time.monotonic() < deadline:
        found = search(client, base, f"(mail={mail})", CONTACT_ATTRIBUTES)
        if found and present:
            return next(iter(found.values()))
        if not found and not present:
            return {}
        time.sleep(FRESHNESS_POLL)
    return None


def test_contacts_from_carddav_reach_ldap_at_both_sites(
    topology, ca_file, alice, bob, contacts, record_property
):
    written = time.monotonic()
    for site in sites(topology):
        personal = _wait_for_mail(
            bound(topology, ca_file, alice, site),
            f"ou=Personal,{BOOK}",
            f"{contacts['Default']}@example.org",
            written + FRESHNESS_DEADLINE,
        )
        seconds = round(time.monotonic() - written, 1)
        record_property(f"ldap_freshness_{site}_seconds", seconds)
        print(f"LDAP at {site}: the CardDAV contact found after {seconds} s")
        assert personal is not None, f"not found at {site} within {FRESHNESS_DEADLINE} s"
        assert personal["cn"] == ["Zoë Personal"]
        assert personal["sn"] == ["Personal"] and personal["givenName"] == ["Zoë"]
        assert personal["telephoneNumber"] == ["+1 555 0100"]
        assert personal["mobile"] == ["+1 555 0101"]
        assert personal["o"] == ["Example Works"] and personal["title"] == ["Chief Tester"]
        assert personal["postalAddress"] == ["1 Main Street$Springfield$12345$USA"]
        assert personal["l"] == ["Springfield"] and personal["postalCode"] == ["12345"]
        # The fax number with an `@` is not an LDAP telephone number: left out, nothing else.
        assert personal.get("facsimileTelephoneNumber", []) == []
        shared_mail = f"{contacts[f'{alice.address}.Shared']}@example.org"
        shared = _wait_for_mail(
            bound(topology, ca_file, bob, site),
            f"ou=Shared,{BOOK}",
            shared_mail,
            written + FRESHNESS_DEADLINE,
        )
        assert shared is not None and shared["cn"] == ["Sam Shared"]


def test_another_accounts_personal_contacts_stay_hidden(topology, ca_file, alice, bob, contacts):
    """bob sees alice's shared-book contact but never her own ones, however he asks: wider
    filters, the Personal branch as base, the entry's own DN, a filter on the hidden owner."""
    mail = f"{contacts['Default']}@example.org"
    deadline = time.monotonic() + FRESHNESS_DEADLINE
    alice_view = bound(topology, ca_file, alice)
    assert _wait_for_mail(alice_view, BOOK, mail, deadline), "alice's contact never appeared"
    (dn,) = search(alice_view, BOOK, f"(mail={mail})")
    connection = bound(topology, ca_file, bob)
    for base, ldap_filter in (
        (BOOK, f"(mail={mail})"),
        (BOOK, "(objectClass=*)"),
        ("", "(|(cn=*)(!(cn=*)))"),
        (f"ou=Personal,{BOOK}", "(objectClass=*)"),
        (BOOK, f"(|(mail=*)(seeAlso={bind_dn(alice)}))"),
        (BOOK, "(cn=Zo*)"),
    ):
        found = search(connection, base, ldap_filter)
        assert dn not in found, (base, ldap_filter)
        assert not any(mail in attrs.get("mail", []) for attrs in found.values())
    connection.search(dn, "(objectClass=*)", BASE, attributes=["cn"])
    assert connection.entries == []


# What a user might type into a client that pastes it into Thunderbird's autocomplete filter
# unescaped ({mail}: the hidden contact's address, {owner}: its owner's bind DN): each rewrites
# the filter to reach entries the ACLs hide, and each stays a well-formed filter.
INJECTED_TEXT = (
    "x)(seeAlso=*)(cn=x",
    "x)(seeAlso={owner})(cn=x",
    "x)(mail={mail})(cn=x",
    "x)(objectClass=*)(cn=x",
    "Zo*)(ou=Personal",
    "\\2a",
)


def test_text_injected_into_a_clients_filter_widens_nothing(
    topology, ca_file, alice, bob, contacts
):
    """However the typed text rewrites the filter a client builds from it, bob's results never
    hold alice's personal contact: the ACLs decide what is seen, not the filter. A filter that
    is no longer well-formed would be refused by the client library before it is sent: these
    are all sent, and all answered."""
    mail = f"{contacts['Default']}@example.org"
    alice_view = bound(topology, ca_file, alice)
    assert _wait_for_mail(alice_view, BOOK, mail, time.monotonic() + FRESHNESS_DEADLINE)
    (hidden,) = search(alice_view, BOOK, f"(mail={mail})")
    connection = bound(topology, ca_file, bob)
    for text in INJECTED_TEXT:
        typed = text.format(mail=mail, owner=bind_dn(alice))
        ldap_filter = f"(|(cn={typed}*)(mail={typed}*)(sn={typed}*))"
        found = search(connection, BOOK, ldap_filter, [*ATTRIBUTES, "seeAlso"])
        assert connection.result["result"] == 0, (ldap_filter, connection.result)
        assert hidden not in found, ldap_filter
        assert not any(mail in attributes.get("mail", []) for attributes in found.values())
        assert not any(attributes.get("seeAlso") for attributes in found.values())


def test_every_write_is_refused(topology, ca_file, alice):
    """Read-only whatever the bind: add, modify, delete and modrdn answer unwillingToPerform,
    in the address book and in the users' branch alike."""
    connection = bound(topology, ca_file, alice)
    (own_dn,) = search(connection, f"ou=Accounts,{BOOK}", f"(mail={alice.address})")
    for dn, attempt in (
        (bind_dn(alice), lambda dn: connection.modify(dn, {"cn": [(MODIFY_REPLACE, ["x"])]})),
        (bind_dn(alice), connection.delete),
        (f"uid=intruder,ou=Personal,{BOOK}",
         lambda dn: connection.add(dn, ["inetOrgPerson"], {"cn": "x", "sn": "x"})),
        (f"cn=intruder@{topology.domain},{USERS}",
         lambda dn: connection.add(dn, ["organizationalRole"], {"cn": "x"})),
    ):  # fmt: skip
        assert attempt(dn) is False, dn
        assert connection.result["result"] == UNWILLING, (dn, connection.result)
    attempts = {
        "add": lambda: connection.add(
            f"uid=intruder,ou=Accounts,{BOOK}", ["inetOrgPerson"], {"cn": "x", "sn": "x"}
        ),
        "modify": lambda: connection.modify(own_dn, {"title": [(MODIFY_REPLACE, ["owned"])]}),
        "delete": lambda: connection.delete(own_dn),
        "modrdn": lambda: connection.modify_dn(own_dn, "uid=renamed"),
    }
    for operation, attempt in attempts.items():
        assert attempt() is False, operation
        assert connection.result["result"] == UNWILLING, (operation, connection.result)
    assert search(connection, f"ou=Accounts,{BOOK}", f"(mail={alice.address})", ["title"]) == {
        own_dn: {"title": []}
    }


# --- refused logins (counted: FAILED_BINDS) -----------------------------------------------------


def test_the_main_and_a_wrong_password_are_refused(topology, ca_file, alice):
    for password in (alice.main_password.reveal(), f"wrong-{uuid.uuid4().hex}"):
        refused = connection(server(topology, ca_file), bind_dn(alice), password)
        assert not refused.bind()
        assert refused.result["result"] == INVALID_CREDENTIALS
