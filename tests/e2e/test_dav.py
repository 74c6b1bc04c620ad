"""Calendars and contacts as their users see them: a real CalDAV client and raw CardDAV over HTTPS.

Clients connect by the catalogue's host names: `caldav.DOMAIN` and `carddav.DOMAIN` are the
primary site's web host, `carddav.SITE.DOMAIN` a given site's. Certificates are verified against
the lab's internal CA. Every request but the caldav client's is sent on a fresh connection with
no cookie jar, never following a redirect: what one test sends cannot authenticate another.

The layout the dav role serves (paths under /dav, principals by full address, the `Default`
collections, alice's shared book, the read-only replica's refusal) is the one its spec names;
the constants below spell it once.

Failed logins: the platform bans an address after bruteforce.MAX_FAILURES (10) failed logins
within ten minutes, counted across IMAP, POP3, SMTP and HTTP, and the whole e2e suite connects
from one address. This file causes exactly FAILED_LOGINS (4) of them: one wrong password, one
main password, and the `+Default`/`+Shared` logins on the caldav host. A request sent without
credentials is not a failed login; the tests that need a 401 send none unless the failure itself
is what they check. Those four tests come last in the file.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import os
import socket
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import caldav
import pytest
import requests
from caldav.lib import error as caldav_error
from endpoints import assert_modern_tls, host_name
from requests.auth import HTTPBasicAuth
from webclient import TIMEOUT, CountedBasicAuth, LoginBudgetSpent, Web

from bulwark import catalogue
from bulwark import web as web_front
from bulwark.lab.accounts import LabAccount
from bulwark.secret import Secret
from bulwark.topology import Topology

REPLICATION_DEADLINE = 60  # seconds a write at the primary may take to be readable at the other
REPLICATION_POLL = 0.5  # seconds between reads at the secondary
FAILED_LOGINS = 4  # failed logins this file causes in total (see the module docstring)

HTTPS = catalogue.service("https-dav")
HTTP = catalogue.service("http-dav")
CALDAV, CARDDAV = HTTPS.names  # ("caldav", "carddav")

# The dav role's layout (its spec).
CALENDARS = "/dav/calendars/user/"  # principal collections; a principal is ROOT<address>/
ADDRESSBOOKS = "/dav/addressbooks/user/"
DEFAULT = "Default"  # every account's own calendar and address book
CALENDAR_DISPLAY_NAME = "Calendar"
BOOK_DISPLAY_NAME = "Default"
SHARED = "Shared"  # inventory/lab.py's shared book: owner alice, editors [alice]; bob reads it
REPLICA_HEADER = "X-Bulwark-Replica"
WRITE_METHODS = ("PUT", "DELETE", "MKCOL", "PROPPATCH", "MOVE")
# A successful DELETE: Radicale answers 200 with a multistatus body (RFC 4918 allows it, beside
# 204 No Content).
DELETED = 200

# XML names (Clark notation).
DAV_NS, CALDAV_NS, CARDDAV_NS = (
    "DAV:",
    "urn:ietf:params:xml:ns:caldav",
    "urn:ietf:params:xml:ns:carddav",
)
GETETAG = f"{{{DAV_NS}}}getetag"
DISPLAYNAME = f"{{{DAV_NS}}}displayname"
CURRENT_USER_PRINCIPAL = f"{{{DAV_NS}}}current-user-principal"
CALENDAR_HOME_SET = f"{{{CALDAV_NS}}}calendar-home-set"
ADDRESSBOOK_HOME_SET = f"{{{CARDDAV_NS}}}addressbook-home-set"

VCARD_TYPE = "text/vcard; charset=utf-8"
ICAL_TYPE = "text/calendar; charset=utf-8"


# --- paths, bodies, requests --------------------------------------------------------------------


def principal(root: str, account: LabAccount) -> str:
    return f"{root}{account.address}/"


def default_calendar(account: LabAccount) -> str:
    return f"{principal(CALENDARS, account)}{DEFAULT}/"


def default_book(account: LabAccount) -> str:
    return f"{principal(ADDRESSBOOKS, account)}{DEFAULT}/"


def shared_book(account: LabAccount, owner: LabAccount) -> str:
    """The owner's shared book as `account` reaches it: under `account`'s own principal."""
    return f"{principal(ADDRESSBOOKS, account)}{owner.address}.{SHARED}/"


class DavAuth(CountedBasicAuth):
    """This module's logins: FAILED_LOGINS refused ones at most."""

    budget = FAILED_LOGINS
    refused = 0


def login(account: LabAccount, name: str | None = None, password: Secret | None = None) -> DavAuth:
    """HTTP Basic as `account` (login `name` if given; its first app password unless `password`).
    The password is revealed into the auth object only."""
    return DavAuth(name or account.address, (password or account.password).reveal())


def token() -> str:
    return f"bulwark-e2e-{uuid.uuid4().hex}"


def vcard(uid: str) -> str:
    """A vCard 3.0 built as text (CRLF lines, RFC 2426); vobject is not a test dependency."""
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid}",
        f"FN:E2E {uid[-8:]}",
        f"N:{uid[-8:]};E2E;;;",
        f"EMAIL;TYPE=INTERNET:{uid}@example.org",
        "END:VCARD",
    ]
    return "\r\n".join(lines) + "\r\n"


def icalendar(uid: str, summary: str) -> str:
    """One VEVENT, an hour long, a year from now (RFC 5545, CRLF lines)."""
    now = datetime.datetime.now(datetime.UTC)
    start = now.replace(microsecond=0) + datetime.timedelta(days=365)
    stamp = "%Y%m%dT%H%M%SZ"
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//bulwark//e2e//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        f"DTSTAMP:{now.strftime(stamp)}",
        f"DTSTART:{start.strftime(stamp)}",
        f"DTEND:{(start + datetime.timedelta(hours=1)).strftime(stamp)}",
        f"SUMMARY:{summary}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


def propfind(*properties: str) -> bytes:
    """A PROPFIND body asking for `properties` (Clark notation)."""
    root = ET.Element(f"{{{DAV_NS}}}propfind")
    prop = ET.SubElement(root, f"{{{DAV_NS}}}prop")
    for name in properties:
        ET.SubElement(prop, name)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def proppatch_display_name(value: str) -> bytes:
    root = ET.Element(f"{{{DAV_NS}}}propertyupdate")
    prop = ET.SubElement(ET.SubElement(root, f"{{{DAV_NS}}}set"), f"{{{DAV_NS}}}prop")
    ET.SubElement(prop, DISPLAYNAME).text = value
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def multistatus(response: requests.Response) -> dict[str, ET.Element]:
    """A 207's <response> elements by href path, percent-decoded (`@` may come as %40)."""
    assert response.status_code == 207, f"{response.request.method} {response.url}: {response}"
    # The lab's own server, reached over verified TLS: not untrusted input.
    root = ET.fromstring(response.content)  # noqa: S314
    return {
        unquote(urlsplit(entry.findtext(f"{{{DAV_NS}}}href", "")).path): entry
        for entry in root.iter(f"{{{DAV_NS}}}response")
    }


def href_of(entry: ET.Element, prop: str) -> str | None:
    """The decoded path of the href inside property `prop` of one <response>."""
    href = entry.findtext(f".//{prop}/{{{DAV_NS}}}href")
    return unquote(urlsplit(href).path) if href is not None else None


def location(response: requests.Response) -> str:
    """Where a redirect points, as an absolute, percent-decoded URL."""
    assert "Location" in response.headers, f"{response.url}: {response} without Location"
    return unquote(urljoin(response.url, response.headers["Location"]))


def put_contact(web: Web, url: str, auth: HTTPBasicAuth, uid: str) -> requests.Response:
    """Create (never overwrite) a contact."""
    headers = {"Content-Type": VCARD_TYPE, "If-None-Match": "*"}
    return web.request("PUT", url, auth, headers=headers, body=vcard(uid))


@pytest.fixture(scope="module")
def web(topology: Topology, ca_file: Path) -> Web:
    return Web(topology, ca_file)


@pytest.fixture
def created(web: Web) -> Iterator[list[tuple[str, LabAccount]]]:
    """Collects (URL, account) of what a test created, or might have created had the server
    wrongly accepted it, and deletes each as that account afterwards, whatever the outcome."""
    urls: list[tuple[str, LabAccount]] = []
    yield urls
    for url, account in reversed(urls):
        # Cleanup must reach every entry; a failing test already says why.
        with contextlib.suppress(requests.RequestException, LoginBudgetSpent):
            web.request("DELETE", url, login(account))


def contact_url(web: Web, path: str, uid: str, site: str | None = None) -> str:
    return web.url(CARDDAV, f"{path}{uid}.vcf", site)


def sites(topology: Topology) -> tuple[str, str]:
    """(primary, the other site)."""
    primary = topology.primary_site.name
    (other,) = (site.name for site in topology.peer_sites(primary))
    return primary, other


# --- TLS: the certificate and protocols of 443 --------------------------------------------------


@pytest.mark.parametrize("label", HTTPS.names)
def test_https_is_tls_1_2_or_later_with_a_verified_certificate(topology, ca_file, label):
    """The mail services' scan (endpoints.assert_modern_tls: nothing below TLS 1.2, forward
    secret and Mozilla Intermediate suites, TLS 1.3), then one handshake at each of TLS 1.2
    and 1.3 verifying the certificate and host name against the lab CA."""
    server = host_name(topology, label)
    assert_modern_tls(server, HTTPS.port)
    for version, spelled in (
        (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    ):
        context = ssl.create_default_context(cafile=str(ca_file))
        context.minimum_version = context.maximum_version = version
        with (
            socket.create_connection((server, HTTPS.port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=server) as connection,
        ):
            assert connection.version() == spelled


# --- discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PROPFIND", "OPTIONS"])
@pytest.mark.parametrize(
    ("label", "path", "target"),
    [(CALDAV, "/.well-known/caldav", CALENDARS), (CARDDAV, "/.well-known/carddav", ADDRESSBOOKS)],
    ids=[CALDAV, CARDDAV],
)
def test_well_known_redirects_to_the_principal_collections(web, label, path, target, method):
    """RFC 6764: clients given only a host name start here, often before sending credentials."""
    response = web.request(method, web.url(label, path))
    assert response.status_code == 301
    assert location(response) == web.url(label, target)


@pytest.mark.parametrize("method", ["GET", "PROPFIND", "OPTIONS"])
@pytest.mark.parametrize(
    ("label", "target"), [(CALDAV, CALENDARS), (CARDDAV, ADDRESSBOOKS)], ids=[CALDAV, CARDDAV]
)
def test_the_bare_host_redirects_permanently_keeping_the_method(web, label, target, method):
    """308, not 301: a client following it must resend the same method and body."""
    response = web.request(method, web.url(label, "/"))
    assert response.status_code == 308
    assert location(response) == web.url(label, target)


@pytest.mark.parametrize(
    ("label", "root", "home_set"),
    [(CALDAV, CALENDARS, CALENDAR_HOME_SET), (CARDDAV, ADDRESSBOOKS, ADDRESSBOOK_HOME_SET)],
    ids=[CALDAV, CARDDAV],
)
def test_the_principal_collections_name_the_user_and_its_home(web, alice, label, root, home_set):
    """RFC 5397 then RFC 4791/6352: the principal is the address's collection, and is its own
    home set (where the calendars or books are listed)."""
    response = web.request(
        "PROPFIND",
        web.url(label, root),
        login(alice),
        depth=0,
        body=propfind(CURRENT_USER_PRINCIPAL),
    )
    (entry,) = multistatus(response).values()
    own = principal(root, alice)
    assert href_of(entry, CURRENT_USER_PRINCIPAL) == own
    response = web.request(
        "PROPFIND", web.url(label, own), login(alice), depth=0, body=propfind(home_set)
    )
    assert href_of(multistatus(response)[own], home_set) == own


@pytest.mark.parametrize(
    ("label", "path", "display_name"),
    [
        (CALDAV, default_calendar, CALENDAR_DISPLAY_NAME),
        (CARDDAV, default_book, BOOK_DISPLAY_NAME),
        (CARDDAV, lambda account: shared_book(account, account), SHARED),
    ],
    ids=["calendar", "book", "shared-book"],
)
def test_the_collections_have_their_display_names(web, alice, label, path, display_name):
    collection = path(alice)
    response = web.request(
        "PROPFIND", web.url(label, collection), login(alice), depth=0, body=propfind(DISPLAYNAME)
    )
    assert multistatus(response)[collection].findtext(f".//{DISPLAYNAME}") == display_name


# --- CalDAV with a real client ------------------------------------------------------------------


@pytest.fixture
def calendar_client(
    topology: Topology, ca_file: Path, alice: LabAccount
) -> Iterator[caldav.DAVClient]:
    """The caldav library given only the bare host name, as a user would type it. Credentials
    go with the first request (an explicit auth object: caldav then never probes without
    them, nor retries a refused password)."""
    client = caldav.DAVClient(
        url=f"https://{host_name(topology, CALDAV)}/",
        auth=login(alice),
        ssl_verify_cert=str(ca_file),
        timeout=TIMEOUT,
    )
    client.session.trust_env = False
    yield client
    client.close()


@pytest.fixture
def events() -> Iterator[list[tuple[caldav.Calendar, str]]]:
    """(calendar, UID) of test events, deleted afterwards if still there."""
    made: list[tuple[caldav.Calendar, str]] = []
    yield made
    for calendar, uid in made:
        # Already deleted by the test, or the test failed and says why.
        with contextlib.suppress(
            caldav_error.DAVError, requests.RequestException, LoginBudgetSpent
        ):
            calendar.event_by_uid(uid).delete()


def test_caldav_discovers_the_default_calendar_and_manages_an_event(calendar_client, events, alice):
    """Discovery from `https://caldav.DOMAIN/` (308, then current-user-principal, then the home
    set), then an event's whole life: create, list, update, read back, delete."""
    found = calendar_client.principal()
    assert unquote(found.url.path) == principal(CALENDARS, alice)
    calendars = {unquote(calendar.url.path): calendar for calendar in found.calendars()}
    assert default_calendar(alice) in calendars, f"calendars found: {sorted(calendars)}"
    calendar = calendars[default_calendar(alice)]
    assert calendar.get_display_name() == CALENDAR_DISPLAY_NAME

    uid = token()
    events.append((calendar, uid))
    event = calendar.save_event(icalendar(uid, "first"))
    listed = [str(listed.icalendar_component["UID"]) for listed in calendar.events()]
    assert listed.count(uid) == 1

    event.data = icalendar(uid, "second")
    event.save()
    again = calendar.event_by_uid(uid)
    assert str(again.icalendar_component["SUMMARY"]) == "second"
    assert unquote(again.url.path) == unquote(event.url.path)

    again.delete()
    with pytest.raises(caldav_error.NotFoundError):
        calendar.event_by_uid(uid)


# --- CardDAV over plain HTTP requests -----------------------------------------------------------


def test_a_contact_is_created_read_listed_and_deleted(web, alice, created):
    uid = token()
    url = contact_url(web, default_book(alice), uid)
    created.append((url, alice))
    response = put_contact(web, url, login(alice), uid)
    assert response.status_code == 201

    response = web.request("GET", url, login(alice))
    assert response.status_code == 200
    assert response.headers.get("Content-Type", "").startswith("text/vcard")
    assert f"UID:{uid}" in response.text.splitlines()

    listing = web.request(
        "PROPFIND",
        web.url(CARDDAV, default_book(alice)),
        login(alice),
        depth=1,
        body=propfind(GETETAG),
    )
    entries = multistatus(listing)
    path = urlsplit(url).path
    assert path in entries, f"{path} not listed"
    assert entries[path].findtext(f".//{GETETAG}")

    assert web.request("DELETE", url, login(alice)).status_code == DELETED
    assert web.request("GET", url, login(alice)).status_code == 404


def test_another_account_reads_a_contact_of_the_shared_book(web, alice, bob, created):
    """alice (an editor) adds a contact; bob, a reader, finds it in the book's listing under his
    own principal and reads it whole."""
    uid = token()
    url = contact_url(web, shared_book(alice, alice), uid)
    created.append((url, alice))
    assert put_contact(web, url, login(alice), uid).status_code == 201
    listing = web.request(
        "PROPFIND", web.url(CARDDAV, shared_book(bob, alice)), login(bob), depth=1,
        body=propfind(GETETAG),
    )  # fmt: skip
    as_bob = contact_url(web, shared_book(bob, alice), uid)
    assert urlsplit(as_bob).path in multistatus(listing)
    response = web.request("GET", as_bob, login(bob))
    assert response.status_code == 200
    assert f"UID:{uid}" in response.text.splitlines()


def test_an_editor_writes_to_the_shared_book(web, alice, created):
    uid = token()
    url = contact_url(web, shared_book(alice, alice), uid)
    created.append((url, alice))
    assert put_contact(web, url, login(alice), uid).status_code == 201
    assert web.request("DELETE", url, login(alice)).status_code == DELETED


# --- logins -------------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["@", "#", "/", "="])
def test_each_separator_logs_in(web, topology, alice, separator):
    """Some clients cannot send `@` in a user name: any of these may stand for it."""
    response = web.request(
        "PROPFIND",
        web.url(CARDDAV, default_book(alice)),
        login(alice, f"{alice.user}{separator}{topology.domain}"),
        depth=0,
        body=propfind(GETETAG),
    )
    assert default_book(alice) in multistatus(response)


def test_each_app_password_logs_in(web, alice):
    for password in alice.app_passwords:
        response = web.request(
            "PROPFIND",
            web.url(CALDAV, default_calendar(alice)),
            login(alice, password=password),
            depth=0,
            body=propfind(GETETAG),
        )
        assert response.status_code == 207, password


def status_of(web: Web, path: str, auth: CountedBasicAuth) -> int:
    """The status of a PROPFIND Depth 0 on an address book path."""
    url = web.url(CARDDAV, path)
    return web.request("PROPFIND", url, auth, depth=0, body=propfind(DISPLAYNAME)).status_code


def test_a_default_login_sees_only_the_default_book(web, topology, alice):
    """`user+Default@domain` is the app password's view of one book: the shared one is
    forbidden and not even listed; plain `user@domain` lists both (so the listing checks
    something)."""
    restricted = login(alice, f"{alice.user}+{DEFAULT}@{topology.domain}")
    assert status_of(web, default_book(alice), restricted) == 207
    assert status_of(web, shared_book(alice, alice), restricted) == 403
    home = web.url(CARDDAV, principal(ADDRESSBOOKS, alice))
    body = propfind(DISPLAYNAME)
    listed = set(multistatus(web.request("PROPFIND", home, restricted, depth=1, body=body)))
    assert listed - {principal(ADDRESSBOOKS, alice)} == {default_book(alice)}
    everything = set(multistatus(web.request("PROPFIND", home, login(alice), depth=1, body=body)))
    assert {default_book(alice), shared_book(alice, alice)} <= everything


@pytest.mark.parametrize("book", [DEFAULT, SHARED])
def test_a_book_login_discovers_just_its_book_from_the_bare_host(web, topology, alice, book):
    """Clients that handle one book per account (macOS Contacts) find the book from
    `https://carddav.DOMAIN/` alone (which leads to the principal collections, tested above):
    the login's principal is its own and holds that book."""
    restricted = login(alice, f"{alice.user}+{book}@{topology.domain}")
    response = web.request(
        "PROPFIND", web.url(CARDDAV, ADDRESSBOOKS), restricted, depth=0,
        body=propfind(CURRENT_USER_PRINCIPAL),
    )  # fmt: skip
    (entry,) = multistatus(response).values()
    own = f"{ADDRESSBOOKS}{alice.user}+{book}@{topology.domain}/"
    assert href_of(entry, CURRENT_USER_PRINCIPAL) == own
    listing = web.request(
        "PROPFIND", web.url(CARDDAV, own), restricted, depth=1, body=propfind(DISPLAYNAME)
    )
    name = DEFAULT if book == DEFAULT else f"{alice.address}.{SHARED}"
    assert set(multistatus(listing)) == {own, f"{own}{name}/"}


def test_a_shared_login_sees_only_the_shared_book(web, topology, alice):
    restricted = login(alice, f"{alice.user}+{SHARED}@{topology.domain}")
    assert status_of(web, shared_book(alice, alice), restricted) == 207
    assert status_of(web, default_book(alice), restricted) == 403


# --- what must be refused -----------------------------------------------------------------------


def test_another_accounts_calendar_cannot_be_read(web, alice, bob):
    response = web.request(
        "PROPFIND",
        web.url(CALDAV, default_calendar(bob)),
        login(alice),
        depth=1,
        body=propfind(GETETAG),
    )
    assert response.status_code == 403


def test_another_accounts_calendar_cannot_be_written(web, alice, bob, created):
    uid = token()
    url = web.url(CALDAV, f"{default_calendar(bob)}{uid}.ics")
    created.append((url, bob))
    response = web.request(
        "PUT",
        url,
        login(alice),
        headers={"Content-Type": ICAL_TYPE},
        body=icalendar(uid, "intruder"),
    )
    assert response.status_code == 403


def test_another_accounts_address_book_cannot_be_read(web, alice, bob):
    response = web.request(
        "PROPFIND",
        web.url(CARDDAV, default_book(bob)),
        login(alice),
        depth=1,
        body=propfind(GETETAG),
    )
    assert response.status_code == 403


def test_another_accounts_address_book_cannot_be_written(web, alice, bob, created):
    uid = token()
    url = contact_url(web, default_book(bob), uid)
    created.append((url, bob))
    assert put_contact(web, url, login(alice), uid).status_code == 403


def test_a_reader_cannot_write_to_the_shared_book(web, alice, bob, created):
    uid = token()
    url = contact_url(web, shared_book(bob, alice), uid)
    created.append((contact_url(web, shared_book(alice, alice), uid), alice))
    assert put_contact(web, url, login(bob), uid).status_code == 403


@pytest.mark.parametrize("label", HTTPS.names)
def test_no_credentials_get_a_basic_challenge(web, alice, label):
    path = default_calendar(alice) if label == CALDAV else default_book(alice)
    response = web.request("PROPFIND", web.url(label, path), depth=0, body=propfind(GETETAG))
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").lower().startswith("basic")


@pytest.mark.parametrize("header", ["X-Remote-User", "X_Remote_User", "Remote-User"])
def test_a_remote_user_header_with_valid_credentials_grants_nothing_more(web, alice, bob, header):
    """The proxy's own identity header must not be taken from the client: alice naming bob
    gets alice's rights on bob's book (none)."""
    response = web.request(
        "PROPFIND",
        web.url(CARDDAV, default_book(bob)),
        login(alice),
        depth=1,
        headers={header: bob.address},
        body=propfind(GETETAG),
    )
    assert response.status_code == 403


@pytest.mark.parametrize("header", ["X-Remote-User", "X_Remote_User", "Remote-User"])
def test_a_remote_user_header_alone_is_not_a_login(web, bob, header):
    response = web.request(
        "PROPFIND",
        web.url(CARDDAV, default_book(bob)),
        depth=1,
        headers={header: bob.address},
        body=propfind(GETETAG),
    )
    assert response.status_code == 401


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "with-credentials"])
@pytest.mark.parametrize("method", ["GET", "PROPFIND"])
@pytest.mark.parametrize("label", HTTP.names)
def test_port_80_only_redirects_to_https(web, alice, label, method, authenticated):
    """Nothing of DAV in plain text, even for a client that (wrongly) sends its password there:
    a redirect to the same host and path over HTTPS, and the same security headers."""
    path = default_calendar(alice) if label == CALDAV else default_book(alice)
    response = web.request(
        method,
        web.url(label, path, scheme="http"),
        login(alice) if authenticated else None,
        depth=0 if method == "PROPFIND" else None,
        body=propfind(GETETAG) if method == "PROPFIND" else None,
    )
    assert response.status_code == 301
    assert location(response) == web.url(label, path)
    assert "DAV" not in response.headers
    assert "xml" not in response.headers.get("Content-Type", "")
    for marker in ("multistatus", "BEGIN:VCARD", "BEGIN:VCALENDAR", "getetag"):
        assert marker.lower() not in response.text.lower(), marker
    assert_security_headers(response)


# --- security headers on every kind of response -------------------------------------------------


def assert_security_headers(response: requests.Response) -> None:
    """HSTS for a year with subdomains, a CSP that allows nothing (DAV serves no page), no
    sniffing, no referrer, and a Server header that names no version. Each header once: a
    repeated one (two nginx `add_header` levels) is read differently by each client."""
    raw = response.raw.headers
    what = f"{response.request.method} {response.url} ({response.status_code})"
    for header in ("Strict-Transport-Security", "Content-Security-Policy"):
        assert len(raw.getlist(header)) == 1, f"{what}: {header} {raw.getlist(header)}"
    hsts = [
        part.strip().lower() for part in response.headers["Strict-Transport-Security"].split(";")
    ]
    ages = [
        int(part.split("=", 1)[1].strip().strip('"'))
        for part in hsts
        if part.startswith("max-age=")
    ]
    assert ages and ages[0] >= 31536000, f"{what}: {hsts}"
    assert "includesubdomains" in hsts, f"{what}: {hsts}"
    csp = [
        " ".join(part.split()) for part in response.headers["Content-Security-Policy"].split(";")
    ]
    assert "default-src 'none'" in csp, f"{what}: {csp}"
    assert "frame-ancestors 'none'" in csp, f"{what}: {csp}"
    assert response.headers.get("X-Content-Type-Options", "").lower() == "nosniff", what
    assert response.headers.get("Referrer-Policy", "").lower() == "no-referrer", what
    assert response.headers.get("Server", "nginx") == "nginx", (
        f"{what}: {response.headers['Server']}"
    )


@dataclass(frozen=True)
class Context:
    """What a header probe needs."""

    web: Web
    alice: LabAccount
    bob: LabAccount
    created: list[tuple[str, LabAccount]]


def _propfind_own_book(c: Context) -> requests.Response:
    url = c.web.url(CARDDAV, default_book(c.alice))
    return c.web.request("PROPFIND", url, login(c.alice), depth=0, body=propfind(GETETAG))


def _propfind_own_calendar(c: Context) -> requests.Response:
    url = c.web.url(CALDAV, default_calendar(c.alice))
    return c.web.request("PROPFIND", url, login(c.alice), depth=0, body=propfind(GETETAG))


def _propfind_at_the_secondary(c: Context) -> requests.Response:
    url = c.web.url(CARDDAV, default_book(c.alice), sites(c.web.topology)[1])
    return c.web.request("PROPFIND", url, login(c.alice), depth=0, body=propfind(GETETAG))


def _put_contact(c: Context) -> requests.Response:
    uid = token()
    url = contact_url(c.web, default_book(c.alice), uid)
    c.created.append((url, c.alice))
    return put_contact(c.web, url, login(c.alice), uid)


def _delete_contact(c: Context) -> requests.Response:
    uid = token()
    url = contact_url(c.web, default_book(c.alice), uid)
    c.created.append((url, c.alice))
    assert put_contact(c.web, url, login(c.alice), uid).status_code == 201
    return c.web.request("DELETE", url, login(c.alice))


def _without_credentials(c: Context) -> requests.Response:
    url = c.web.url(CARDDAV, default_book(c.alice))
    return c.web.request("PROPFIND", url, depth=0, body=propfind(GETETAG))


def _other_accounts_book(c: Context) -> requests.Response:
    url = c.web.url(CARDDAV, default_book(c.bob))
    return c.web.request("PROPFIND", url, login(c.alice), depth=0, body=propfind(GETETAG))


def _missing_contact(c: Context) -> requests.Response:
    return c.web.request("GET", contact_url(c.web, default_book(c.alice), token()), login(c.alice))


def _well_known(c: Context) -> requests.Response:
    return c.web.request("GET", c.web.url(CARDDAV, "/.well-known/carddav"))


def _bare_host(c: Context) -> requests.Response:
    return c.web.request("GET", c.web.url(CALDAV, "/"))


def _write_at_the_secondary(c: Context) -> requests.Response:
    uid = token()
    url = contact_url(c.web, default_book(c.alice), uid, sites(c.web.topology)[1])
    c.created.append((url, c.alice))
    return put_contact(c.web, url, login(c.alice), uid)


def _port_80(c: Context) -> requests.Response:
    return c.web.request("GET", c.web.url(CARDDAV, ADDRESSBOOKS, scheme="http"))


HEADER_PROBES = [
    pytest.param(207, _propfind_own_book, id="207-book"),
    pytest.param(207, _propfind_own_calendar, id="207-calendar"),
    pytest.param(207, _propfind_at_the_secondary, id="207-secondary"),
    pytest.param(201, _put_contact, id="201-put"),
    pytest.param(DELETED, _delete_contact, id="200-delete"),
    pytest.param(401, _without_credentials, id="401-no-credentials"),
    pytest.param(403, _other_accounts_book, id="403-other-account"),
    pytest.param(404, _missing_contact, id="404-missing"),
    pytest.param(301, _well_known, id="301-well-known"),
    pytest.param(308, _bare_host, id="308-bare-host"),
    pytest.param(403, _write_at_the_secondary, id="403-read-only"),
    pytest.param(301, _port_80, id="301-port-80"),
]


@pytest.mark.parametrize(("status", "probe"), HEADER_PROBES)
def test_every_response_carries_the_security_headers(
    web, alice, bob, created, status, probe: Callable[[Context], requests.Response]
):
    """Not only the 200s: nginx's `add_header` skips error codes unless told `always`, and an
    inner `add_header` hides every outer one."""
    response = probe(Context(web, alice, bob, created))
    assert response.status_code == status
    assert_security_headers(response)


# --- replication: the primary writes, the other site serves a read-only replica -----------------


def _poll(web: Web, url: str, auth_for: LabAccount, wanted: int, deadline: float) -> float | None:
    """Seconds until GET `url` answers `wanted`, polling every REPLICATION_POLL until the
    monotonic `deadline`; None if it never did."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        if web.request("GET", url, login(auth_for)).status_code == wanted:
            return time.monotonic() - started
        time.sleep(REPLICATION_POLL)
    return None


def test_a_contact_written_at_the_primary_is_readable_at_the_secondary(
    web, topology, alice, created, record_property
):
    primary, other = sites(topology)
    uid = token()
    at_primary = contact_url(web, default_book(alice), uid, primary)
    at_other = contact_url(web, default_book(alice), uid, other)
    created.append((at_primary, alice))
    assert put_contact(web, at_primary, login(alice), uid).status_code == 201
    written = time.monotonic()
    delay = _poll(web, at_other, alice, 200, written + REPLICATION_DEADLINE)
    record_property("dav_replication_seconds", delay)
    print(f"dav replication {primary} -> {other}: {delay if delay is None else round(delay, 2)} s")
    assert delay is not None, f"not readable at {other} within {REPLICATION_DEADLINE} s"
    response = web.request("GET", at_other, login(alice))
    assert f"UID:{uid}" in response.text.splitlines()

    assert web.request("DELETE", at_primary, login(alice)).status_code == DELETED
    gone = _poll(web, at_other, alice, 404, time.monotonic() + REPLICATION_DEADLINE)
    assert gone is not None, f"still at {other} {REPLICATION_DEADLINE} s after its deletion"


@pytest.mark.parametrize("label", HTTPS.names)
def test_the_secondary_serves_reads_with_the_same_logins(web, topology, alice, label):
    path = default_calendar(alice) if label == CALDAV else default_book(alice)
    url = web.url(label, path, sites(topology)[1])
    response = web.request("PROPFIND", url, login(alice), depth=0, body=propfind(GETETAG))
    assert path in multistatus(response)


def _write_request(
    web: Web, label: str, method: str, alice: LabAccount, site: str
) -> tuple[str, dict[str, str], str | bytes | None]:
    """(URL, headers, body) of a write at `site` that could harm nothing had it been accepted:
    new names, a missing source, a display name set to the one it has."""
    uid = token()
    if label == CALDAV:
        home, collection, display_name = CALENDARS, default_calendar(alice), CALENDAR_DISPLAY_NAME
        suffix, item_type, item_body = ".ics", ICAL_TYPE, icalendar(uid, "replica")
    else:
        home, collection, display_name = ADDRESSBOOKS, default_book(alice), BOOK_DISPLAY_NAME
        suffix, item_type, item_body = ".vcf", VCARD_TYPE, vcard(uid)
    item = web.url(label, f"{collection}{uid}{suffix}", site)
    match method:
        case "PUT":
            return item, {"Content-Type": item_type, "If-None-Match": "*"}, item_body
        case "DELETE":
            return item, {}, None
        case "MKCOL":
            return web.url(label, f"{principal(home, alice)}{uid}/", site), {}, None
        case "PROPPATCH":
            return web.url(label, collection, site), {}, proppatch_display_name(display_name)
        case "MOVE":
            moved = web.url(label, f"{collection}{token()}{suffix}", site)
            return item, {"Destination": moved}, None
    raise AssertionError(method)


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize("label", HTTPS.names)
def test_the_secondary_refuses_writes_as_read_only(web, topology, alice, created, label, method):
    """A write at the replica would be lost at the next replication: refused, saying why, with
    a header a client or a monitor can test."""
    other = sites(topology)[1]
    url, headers, body = _write_request(web, label, method, alice, other)
    if method in ("PUT", "MKCOL"):
        created.append((url, alice))
    response = web.request(method, url, login(alice), headers=headers, body=body)
    assert response.status_code == 403
    assert response.headers.get(REPLICA_HEADER) == "read-only"
    assert response.headers.get("Content-Type", "").startswith("text/")
    assert "read-only" in response.text
    assert_security_headers(response)


# --- limits: far above what a user sends, in reach of a flood ------------------------------------

# The dav servers' request body limit (bulwark.web.DAV_BODY_LIMIT, nginx's "20m").
BODY_LIMIT = int(web_front.DAV_BODY_LIMIT.removesuffix("m")) * 1024**2
FLOOD_REQUESTS = 3000  # at most, sent by FLOOD_THREADS keep-alive sessions
FLOOD_THREADS = 6
FLOOD_SECONDS = 20  # at most


def test_a_contact_with_a_large_photo_is_taken(web, alice, created):
    """A vCard with a 4 MB photo, far more than any client sends, is under the limit."""
    uid = token()
    url = contact_url(web, default_book(alice), uid)
    created.append((url, alice))
    photo = base64.b64encode(os.urandom(3 * 1024**2)).decode()
    card = vcard(uid).replace("END:VCARD", f"PHOTO;ENCODING=b;TYPE=JPEG:{photo}\r\nEND:VCARD")
    headers = {"Content-Type": VCARD_TYPE, "If-None-Match": "*"}
    response = web.request("PUT", url, login(alice), headers=headers, body=card.encode())
    assert response.status_code == 201, response.text


def test_a_body_over_the_limit_is_refused_before_it_is_sent(web, topology, alice, ca_file):
    """The headers alone announce one byte over the limit: nginx answers 413 at once, and reads
    none of the body (none is sent)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection(
        host_name(topology, CARDDAV), 443, context=context, timeout=TIMEOUT
    )
    try:
        connection.putrequest("PUT", f"{default_book(alice)}{token()}.vcf")
        credentials = f"{alice.address}:{alice.password.reveal()}".encode()
        connection.putheader("Authorization", f"Basic {base64.b64encode(credentials).decode()}")
        connection.putheader("Content-Type", VCARD_TYPE)
        connection.putheader("Content-Length", str(BODY_LIMIT + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        for header in ("Strict-Transport-Security", "Content-Security-Policy"):
            assert response.getheader(header), f"413 without {header}"
    finally:
        connection.close()


def test_a_flood_from_one_address_gets_429_and_normal_use_does_not(web):
    """Requests as fast as six keep-alive sessions go (without credentials: each is answered
    401, which is no failed login) run past the per-address rate and its burst; a client at a
    human pace is served again once the flood stops. (The well-known redirects are answered
    before any limit applies: they cost nothing.)"""
    url = web.url(CARDDAV, ADDRESSBOOKS)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + FLOOD_SECONDS

    def flood() -> None:
        with requests.Session() as session:
            session.trust_env = False
            for _ in range(FLOOD_REQUESTS // FLOOD_THREADS):
                if time.monotonic() > deadline:
                    return
                status = session.get(
                    url, verify=str(web.ca_file), allow_redirects=False, timeout=TIMEOUT
                ).status_code
                with lock:
                    statuses[status] += 1
                if statuses[429] >= 50:
                    return

    threads = [threading.Thread(target=flood) for _ in range(FLOOD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses[429] > 0, f"no request refused: {dict(statuses)}"
    assert set(statuses) <= {401, 429}, dict(statuses)
    # The bucket refills at the configured rate: a request a second is served again soon after.
    for _ in range(15):
        time.sleep(1)
        if web.request("GET", url).status_code == 401:
            break
    else:
        pytest.fail("still refused 15 s after the flood")
    for _ in range(5):
        assert web.request("GET", url).status_code == 401
        time.sleep(0.2)


# --- failed logins (last; FAILED_LOGINS in all, each one counted towards a ban) -----------------


def test_a_wrong_password_is_refused(web, alice):
    wrong = Secret("alice/wrong", "bulwark-e2e-wrong-password")
    response = web.request(
        "PROPFIND",
        web.url(CARDDAV, default_book(alice)),
        login(alice, password=wrong),
        depth=0,
        body=propfind(GETETAG),
    )
    assert response.status_code == 401


def test_the_main_password_is_refused(web, alice):
    """Clients log in with app passwords only, each revocable on its own: the main password
    opens no service."""
    response = web.request(
        "PROPFIND",
        web.url(CARDDAV, default_book(alice)),
        login(alice, password=alice.main_password),
        depth=0,
        body=propfind(GETETAG),
    )
    assert response.status_code == 401


@pytest.mark.parametrize("book", [DEFAULT, SHARED])
def test_a_book_login_is_refused_for_calendars(web, topology, alice, book):
    """`+Default`/`+Shared` name an address book: such a login has no calendar to see."""
    response = web.request(
        "PROPFIND",
        web.url(CALDAV, default_calendar(alice)),
        login(alice, f"{alice.user}+{book}@{topology.domain}"),
        depth=0,
        body=propfind(GETETAG),
    )
    assert response.status_code == 401
