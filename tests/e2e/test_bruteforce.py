"""Brute force, as an attacker on the internet meets it: after MAX_FAILURES failed IMAP logins
(or LDAP binds) within the window the address is dropped, while another address still logs in;
the ban is lifted at the end so no later run is affected. Runs after every other e2e test
(marker, conftest).

Commands on lab hosts (restarting the watcher, lifting the ban, a login from another address)
run through the container's own systemd, as `bulwark lab exec` does: the internet namespace has
no route to the hosts' SSH.
"""

from __future__ import annotations

import base64
import imaplib
import ipaddress
import socket
import ssl
import time

import pytest
from labhost import on_host
from ldap3 import Connection, Server, Tls

from bulwark import bruteforce, catalogue, exposure, pki
from bulwark.lab.accounts import LabAccount
from bulwark.topology import Host, Topology

pytestmark = pytest.mark.bans_the_client  # conftest.BANS_THE_CLIENT: run after every other test

IMAPS = catalogue.service("imaps")
LDAPS = catalogue.service("ldaps")
TIMEOUT = 30  # seconds per IMAP exchange: a refused login may wait out Dovecot's penalty
BAN_DEADLINE = 30  # seconds the watcher may take to ban once the last failure is logged
CONNECT_TIMEOUT = 3  # a dropped SYN gets no answer; an open port answers at once


def _client_address(topology: Topology) -> ipaddress.IPv4Address:
    """This namespace's address on the lab's WAN: the one the watcher sees and bans."""
    with socket.create_connection((_imap_name(topology), IMAPS.port), timeout=TIMEOUT) as probe:
        return ipaddress.IPv4Address(probe.getsockname()[0])


def _imap_name(topology: Topology) -> str:
    return f"{IMAPS.names[0]}.{topology.domain}"


def _store(topology: Topology) -> Host:
    """The host serving imap.DOMAIN, whose watcher counts this namespace's failures."""
    address = ipaddress.IPv4Address(socket.gethostbyname(_imap_name(topology)))
    (store,) = (host for host in topology.hosts if host.public_address == address)
    return store


def _login(
    topology: Topology,
    context: ssl.SSLContext,
    alice: LabAccount,
    password: str,
    via: tuple[str, int] | None = None,
) -> None:
    """One IMAP connection and login, to imap.DOMAIN or `via` (a proxy name and port)."""
    name, port = via or (_imap_name(topology), IMAPS.port)
    with imaplib.IMAP4_SSL(name, port, ssl_context=context, timeout=TIMEOUT) as mailbox:
        mailbox.login(alice.address, password)


def _fail_once(
    topology: Topology,
    context: ssl.SSLContext,
    alice: LabAccount,
    via: tuple[str, int] | None = None,
) -> None:
    """One connection, one wrong password (always the same: Dovecot then does not raise its
    penalty), logged out: Dovecot logs the failure as the connection ends."""
    with pytest.raises(imaplib.IMAP4.error):
        _login(topology, context, alice, "bulwark-e2e-wrong-password", via)


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def _unban(topology: Topology, store: Host, address: ipaddress.IPv4Address) -> None:
    """Delete the element if it is there (a set lookup first: deleting a missing one fails),
    and its line from the list Dovecot's passdb reads."""
    listing = on_host(topology, store, ["nft", "list", "set", "inet", bruteforce.TABLE,
                                         bruteforce.BAN_SET])  # fmt: skip
    if str(address) in listing:
        on_host(topology, store, ["nft", "delete", "element", "inet", bruteforce.TABLE,
                                   bruteforce.BAN_SET, "{", str(address), "}"])  # fmt: skip
    pattern = "/^" + str(address).replace(".", "[.]") + " /d"
    on_host(topology, store, ["sh", "-c", 'test ! -e "$0" || sed -i "$1" "$0"',
                              bruteforce.BAN_FILE, pattern])  # fmt: skip


def _ban_list(topology: Topology, store: Host) -> str:
    """The list Dovecot's passdb reads; the watcher writes it at its first ban."""
    return on_host(topology, store, ["sh", "-c", 'test ! -e "$0" || cat "$0"',
                                     bruteforce.BAN_FILE])  # fmt: skip


# Logs in over IMAP from a lab host's own public address (stdin carries the script and the
# password: neither appears on a command line or in a log). Prints the tagged reply's status.
_LOGIN_FROM_ELSEWHERE = """
import base64, socket, ssl
context = ssl.create_default_context(cafile={ca!r})
raw = socket.create_connection(({address!r}, {port}), timeout={timeout})
imap = context.wrap_socket(raw, server_hostname={name!r})
reader = imap.makefile("rb")
reader.readline()
imap.sendall(b"a AUTHENTICATE PLAIN " + {plain!r}.encode() + b"\\r\\n")
line = reader.readline()
while not line.startswith(b"a "):
    line = reader.readline()
imap.sendall(b"b LOGOUT\\r\\n")
print(line.split()[1].decode())
"""


def _logs_in_from(topology: Topology, host: Host, store: Host, alice: LabAccount) -> bool:
    plain = base64.b64encode(f"\0{alice.address}\0{alice.password.reveal()}".encode()).decode()
    script = _LOGIN_FROM_ELSEWHERE.format(
        ca=pki.CA_CERT_PATH,
        address=str(store.public_address),
        port=IMAPS.port,
        timeout=TIMEOUT,
        name=_imap_name(topology),
        plain=plain,
    )
    return on_host(topology, host, ["python3", "-"], stdin=script).strip() == "OK"


def test_an_address_failing_too_often_is_dropped_while_others_still_log_in(
    topology, tls_context, alice
):
    store = _store(topology)
    client = _client_address(topology)
    exempt = [ipaddress.IPv4Network(network) for network in exposure.exempt_networks(topology)]
    assert not any(client in network for network in exempt), "the client would never be banned"
    # Another outsider: the web (DAV) host's public address on the WAN (not a site LAN, not exempt).
    (elsewhere,) = (
        host
        for host in topology.hosts
        if host.site == store.site and host.public_address and host.has_role("dav")
    )
    assert not any(elsewhere.public_address in network for network in exempt)
    _unban(topology, store, client)
    # A fresh count: the failures earlier e2e tests made must not decide when the ban comes.
    on_host(topology, store, ["systemctl", "restart", bruteforce.UNIT])
    time.sleep(2)  # journalctl follows from the moment it starts
    try:
        for attempt in range(bruteforce.MAX_FAILURES - 1):
            _fail_once(topology, tls_context, alice)
            assert _connects(str(store.public_address), IMAPS.port), f"banned after {attempt + 1}"
        _fail_once(topology, tls_context, alice)
        deadline = time.monotonic() + BAN_DEADLINE
        while _connects(str(store.public_address), IMAPS.port):
            assert time.monotonic() < deadline, (
                f"still reachable {BAN_DEADLINE} s after {bruteforce.MAX_FAILURES} failures"
            )
            time.sleep(1)
        listing = on_host(topology, store, ["nft", "list", "set", "inet", bruteforce.TABLE,
                                             bruteforce.BAN_SET])  # fmt: skip
        assert str(client) in listing
        assert _logs_in_from(topology, elsewhere, store, alice), "another address was refused"
    finally:
        _unban(topology, store, client)
    assert _connects(str(store.public_address), IMAPS.port), "still dropped after the unban"


def test_failed_ldap_binds_ban_the_address_on_the_web_host(topology, ca_file, alice):
    """slapd names the address when it accepts a connection and the failure of a bind later,
    by connection number: the watcher pairs them (bulwark.banwatch.SlapdConnections)."""
    ldap_name = f"{LDAPS.names[0]}.{topology.domain}"
    address = ipaddress.IPv4Address(socket.gethostbyname(ldap_name))
    (web,) = (host for host in topology.hosts if host.public_address == address)
    client = _client_address(topology)
    tls = Tls(ca_certs_file=str(ca_file), validate=ssl.CERT_REQUIRED)
    server = Server(ldap_name, port=LDAPS.port, use_ssl=True, tls=tls, connect_timeout=TIMEOUT)
    _unban(topology, web, client)
    on_host(topology, web, ["systemctl", "restart", bruteforce.UNIT])
    time.sleep(2)  # journalctl follows from the moment it starts
    try:
        for attempt in range(bruteforce.MAX_FAILURES):
            assert _connects(str(web.public_address), LDAPS.port), f"banned after {attempt}"
            wrong = Connection(server, f"cn={alice.address},dc=User", "bulwark-e2e-wrong")
            assert not wrong.bind()
            wrong.unbind()
        deadline = time.monotonic() + BAN_DEADLINE
        while _connects(str(web.public_address), LDAPS.port):
            assert time.monotonic() < deadline, (
                f"still reachable {BAN_DEADLINE} s after {bruteforce.MAX_FAILURES} failed binds"
            )
            time.sleep(1)
    finally:
        _unban(topology, web, client)
    assert _connects(str(web.public_address), LDAPS.port), "still dropped after the unban"


def test_failed_logins_through_a_proxy_are_refused_at_authentication(topology, tls_context, alice):
    """Through imaps-proxy the failures reach the mail host from the gateway, whose address
    the firewall's ban never drops: the watcher's list makes Dovecot refuse the banned
    client's next login, the right password included, until the ban ends (lifted here)."""
    store = _store(topology)
    client = _client_address(topology)
    proxy = (f"{catalogue.proxies()[0].names[0]}.{topology.domain}", 8443)
    _unban(topology, store, client)
    on_host(topology, store, ["systemctl", "restart", bruteforce.UNIT])
    time.sleep(2)  # journalctl follows from the moment it starts
    try:
        for _ in range(bruteforce.MAX_FAILURES):
            _fail_once(topology, tls_context, alice, via=proxy)
        deadline = time.monotonic() + BAN_DEADLINE
        while str(client) not in _ban_list(topology, store):
            assert time.monotonic() < deadline, "the watcher listed no ban"
            time.sleep(1)
        with pytest.raises(imaplib.IMAP4.error):
            _login(topology, tls_context, alice, alice.password.reveal(), via=proxy)
    finally:
        _unban(topology, store, client)
    _login(topology, tls_context, alice, alice.password.reveal(), via=proxy)
