"""The firewall-friendly proxies as a client behind a strict firewall meets them: IMAP, POP and
SMTP over TLS on any port of `imaps-proxy`, `pops-proxy` and `smtps-proxy.DOMAIN` (the seeds'
"Firewall access"), the proxy names verified on the certificates, the client's own address in
the mail host's logs, and nothing else on those addresses.

Each proxy login here succeeds (a failed one would count towards the ban of this namespace's
address on the mail host, which tests/e2e/test_bruteforce.py provokes on its own).
"""

from __future__ import annotations

import imaplib
import ipaddress
import poplib
import smtplib
import socket
import ssl
import time

import pytest
from endpoints import assert_modern_tls, host_name
from labhost import on_host
from mailclient import TIMEOUT, message, wait_for

from bulwark import catalogue
from bulwark.lab.accounts import LabAccount
from bulwark.topology import Host, Topology

# The seed's commonly open ports, the services' own, and others a firewall may leave open.
PORTS = (80, 21, 25, 443, 993, 8443, 2525, 61000)
IMAPS_PROXY, POPS_PROXY, SMTPS_PROXY = catalogue.proxies()
SILENCE = 2  # seconds a plaintext client waits for a greeting that must never come
CONNECT_TIMEOUT = 3


def _gateway(topology: Topology, site: str | None = None) -> Host:
    return topology.hosts_with_role("proxy", site or topology.primary_site.name)[0]


def _mail_host(topology: Topology, site: str | None = None) -> Host:
    return topology.hosts_with_role("mailstore", site or topology.primary_site.name)[0]


def _client_address(topology: Topology) -> str:
    """This namespace's address on the lab's WAN."""
    target = (host_name(topology, IMAPS_PROXY.names[0]), 993)
    with socket.create_connection(target, timeout=CONNECT_TIMEOUT) as probe:
        return probe.getsockname()[0]


def _since(topology: Topology, host: Host) -> str:
    """The host's clock now, for journalctl --since (the lab's containers share this clock)."""
    return on_host(topology, host, ["date", "+@%s"]).strip()


def _journal(topology: Topology, host: Host, since: str, *units: str) -> list[str]:
    argv = ["journalctl", "--quiet", "-o", "short", f"--since={since}"]
    for unit in units:
        argv += ["-u", unit]
    return on_host(topology, host, argv).splitlines()


@pytest.mark.parametrize("site", [None, "sea"], ids=["generic", "sea"])
@pytest.mark.parametrize("port", PORTS)
def test_imap_pop_and_smtp_log_in_through_their_proxies(
    topology, tls_context, alice: LabAccount, bob: LabAccount, cleanup, port, site
):
    """Each client checks its proxy's name on the certificate (the platform CA's default
    context), logs in with an app password and works; the message sent through smtps-proxy
    arrives."""
    password = alice.password.reveal()
    with imaplib.IMAP4_SSL(
        host_name(topology, IMAPS_PROXY.names[0], site), port, ssl_context=tls_context,
        timeout=TIMEOUT,
    ) as mailbox:  # fmt: skip
        mailbox.login(alice.address, password)
        assert mailbox.select("INBOX")[0] == "OK"
    pop = poplib.POP3_SSL(
        host_name(topology, POPS_PROXY.names[0], site), port, context=tls_context, timeout=TIMEOUT
    )
    try:
        pop.user(alice.address)
        assert pop.pass_(password).startswith(b"+OK")
        assert len(pop.stat()) == 2
    finally:
        pop.quit()
    mail = message(alice.address, bob.address)
    cleanup.append((bob, "INBOX", mail["Subject"]))
    with smtplib.SMTP_SSL(
        host_name(topology, SMTPS_PROXY.names[0], site), port, context=tls_context,
        timeout=TIMEOUT,
    ) as smtp:  # fmt: skip
        smtp.login(alice.address, password)
        assert smtp.send_message(mail) == {}
    assert wait_for(topology, tls_context, bob, mail["Subject"], site)


def test_the_mail_host_logs_the_clients_own_address(topology, tls_context, alice, bob, cleanup):
    """Dovecot and Postfix see this namespace's address (the PROXY header), never the
    gateway's LAN address the connections really come from."""
    store, gateway = _mail_host(topology), _gateway(topology)
    client = _client_address(topology)
    since = _since(topology, store)
    password = alice.password.reveal()
    with imaplib.IMAP4_SSL(
        host_name(topology, IMAPS_PROXY.names[0]), 8443, ssl_context=tls_context, timeout=TIMEOUT
    ) as mailbox:
        mailbox.login(alice.address, password)
    mail = message(alice.address, bob.address)
    cleanup.append((bob, "INBOX", mail["Subject"]))
    with smtplib.SMTP_SSL(
        host_name(topology, SMTPS_PROXY.names[0]), 2525, context=tls_context, timeout=TIMEOUT
    ) as smtp:
        smtp.login(alice.address, password)
        smtp.send_message(mail)
    proxy_address = gateway.proxy_address(IMAPS_PROXY.name)
    time.sleep(1)  # the journal's last lines
    lines = _journal(topology, store, since, "dovecot.service", "postfix@-.service")
    logins = [
        line for line in lines if "imap-login: Login:" in line and f"lip={proxy_address}," in line
    ]
    assert logins and all(f"rip={client}," in line for line in logins), lines[-20:]
    proxied = [line for line in lines if "postfix/submissions-proxied/smtpd" in line]
    assert any(f"connect from unknown[{client}]" in line for line in proxied), proxied
    assert not [line for line in lines if str(gateway.lan_address) in line]


def test_a_forged_proxy_header_is_refused(topology, tls_context):
    """Sent to a proxy, a forged header is bytes before the TLS handshake: the handshake
    fails. The mail host's proxied listeners are on its LAN address: the internet has no
    route there, and another host of the site (the web host) is refused by the firewall."""
    gateway, store = _gateway(topology), _mail_host(topology)
    forged = f"PROXY TCP4 203.0.113.66 {gateway.proxy_address(IMAPS_PROXY.name)} 5555 993\r\n"
    name = host_name(topology, IMAPS_PROXY.names[0])
    with socket.create_connection((name, 8443), timeout=CONNECT_TIMEOUT) as raw:
        raw.sendall(forged.encode())
        with pytest.raises((ssl.SSLError, ConnectionResetError, TimeoutError)):
            tls_context.wrap_socket(raw, server_hostname=name).do_handshake()
    for service in ("imaps-proxied", "pop3s-proxied", "submissions-proxied"):
        target = (str(store.lan_address), catalogue.service(service).port)
        with pytest.raises(OSError):
            socket.create_connection(target, timeout=CONNECT_TIMEOUT).close()
        web = next(h for h in topology.hosts if h.site == store.site and h.has_role("dav"))
        reached = on_host(
            topology, web,
            ["sh", "-c", f"timeout 5 bash -c 'exec 3<>/dev/tcp/{target[0]}/{target[1]}' "
                         "&& echo open || echo refused"],
        )  # fmt: skip
        assert reached.strip() == "refused", service


@pytest.mark.parametrize("port", [110, 143, 25, 587, 8443])
@pytest.mark.parametrize("proxy", catalogue.proxies(), ids=lambda proxy: proxy.name)
def test_plaintext_and_starttls_clients_get_no_greeting(topology, proxy, port):
    """TLS from the first byte on every port: a plaintext IMAP, POP or SMTP client (or one
    that means to STARTTLS) waits for a greeting that never comes."""
    target = (str(_gateway(topology).proxy_address(proxy.name)), port)
    with socket.create_connection(target, timeout=CONNECT_TIMEOUT) as raw:
        raw.settimeout(SILENCE)
        with pytest.raises(TimeoutError):
            raw.recv(64)


@pytest.mark.parametrize("proxy", catalogue.proxies(), ids=lambda proxy: proxy.name)
def test_ssh_and_udp_are_refused_on_every_proxy_address(topology, proxy):
    for gateway in topology.hosts_with_role("proxy"):
        address = str(gateway.proxy_address(proxy.name))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, catalogue.SSH_PORT), timeout=CONNECT_TIMEOUT)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect((address, 993))
            sock.send(b"\x00" * 32)
            with pytest.raises(OSError) as refused:  # ICMP admin-prohibited: no route to host
                sock.recv(64)
            assert not isinstance(refused.value, TimeoutError), "dropped instead of refused"


def test_every_sampled_port_is_a_tls_server_with_the_proxys_name(topology, tls_context):
    """Twenty ports spread over the range, each a verified handshake for the proxy's name."""
    ports = [port for port in range(1, 65536, 3277) if port != catalogue.SSH_PORT]
    for proxy in catalogue.proxies():
        name = host_name(topology, proxy.names[0])
        for port in ports:
            with (
                socket.create_connection((name, port), timeout=CONNECT_TIMEOUT) as raw,
                tls_context.wrap_socket(raw, server_hostname=name) as tls,
            ):
                assert tls.version() in ("TLSv1.2", "TLSv1.3"), (proxy.name, port)
    assert ipaddress.IPv4Address(socket.gethostbyname(host_name(topology, "imaps-proxy"))) == (
        _gateway(topology).proxy_address(IMAPS_PROXY.name)
    )


@pytest.mark.parametrize("proxy", catalogue.proxies(), ids=lambda proxy: proxy.name)
def test_tls_through_a_proxy_is_the_platforms(topology, proxy):
    """The mail host's TLS, seen through the proxy on an unusual port: 1.2+, forward secret."""
    assert_modern_tls(host_name(topology, proxy.names[0]), 8443)
