"""What mail clients and remote mail servers find from the bare domain, from the internet
namespace, resolving through the lab's DNS server: a client that knows only an address and an
app password configures itself from what is served and logs in with it; Outlook's POST and the
Apple profile give the same servers; a sender checking MTA-STS finds the policy, its TXT record,
and exchangers whose certificates match it."""

from __future__ import annotations

import imaplib
import plistlib
import poplib
import re
import smtplib
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path

import dns.resolver
import pytest
import requests

from bulwark.lab.accounts import LabAccount
from bulwark.topology import Topology

TIMEOUT = 30
AUTODISCOVER_NS = {
    "r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
}
# What Outlook posts (MS-OXDSCLI 2.2.3): its address, and the schema it wants the answer in.
OUTLOOK_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""
SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "Content-Security-Policy",
    "X-Content-Type-Options",
)


def get(url: str, ca_file: Path, **options) -> requests.Response:
    return requests.get(url, verify=str(ca_file), timeout=TIMEOUT, allow_redirects=False, **options)


def parsed(response: requests.Response) -> ET.Element:
    return ET.fromstring(response.content)  # noqa: S314 - the lab's own server's answer


def test_a_client_given_only_an_address_configures_itself_and_logs_in(
    topology: Topology, ca_file: Path, tls_context: ssl.SSLContext, alice: LabAccount
):
    """Thunderbird's lookup: https://autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=...;
    every server it names is then used exactly as named (host, port, implicit TLS, the
    address as user name) with an app password."""
    response = get(
        f"https://autoconfig.{topology.domain}/mail/config-v1.1.xml",
        ca_file,
        params={"emailaddress": alice.address},
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/xml")
    provider = parsed(response).find("emailProvider")
    servers = {
        server.get("type"): server
        for server in provider
        if server.tag in ("incomingServer", "outgoingServer")
    }
    assert sorted(servers) == ["imap", "pop3", "smtp"]
    password = alice.password.reveal()
    for kind, server in servers.items():
        host, port = server.findtext("hostname"), int(server.findtext("port"))
        assert server.findtext("socketType") == "SSL"
        user = server.findtext("username").replace("%EMAILADDRESS%", alice.address)
        if kind == "imap":
            with imaplib.IMAP4_SSL(host, port, ssl_context=tls_context, timeout=TIMEOUT) as box:
                assert box.login(user, password)[0] == "OK"
        elif kind == "pop3":
            pop = poplib.POP3_SSL(host, port, context=tls_context, timeout=TIMEOUT)
            try:
                pop.user(user)
                assert pop.pass_(password).startswith(b"+OK")
            finally:
                pop.quit()
        else:
            with smtplib.SMTP_SSL(host, port, context=tls_context, timeout=TIMEOUT) as smtp:
                assert smtp.login(user, password)[0] == 235
    well_known = get(
        f"https://autoconfig.{topology.domain}/.well-known/autoconfig/mail/config-v1.1.xml",
        ca_file,
    )
    assert well_known.content == response.content


def test_outlook_posting_its_request_gets_the_servers(topology: Topology, ca_file: Path, alice):
    url = f"https://autodiscover.{topology.domain}/Autodiscover/Autodiscover.xml"
    response = requests.post(
        url,
        data=OUTLOOK_REQUEST.format(address=alice.address).encode(),
        headers={"Content-Type": "text/xml"},
        verify=str(ca_file),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text[:200]
    protocols = {
        p.findtext("r:Type", namespaces=AUTODISCOVER_NS): (
            p.findtext("r:Server", namespaces=AUTODISCOVER_NS),
            p.findtext("r:Port", namespaces=AUTODISCOVER_NS),
            p.findtext("r:SSL", namespaces=AUTODISCOVER_NS),
        )
        for p in parsed(response).iterfind("r:Response/r:Account/r:Protocol", AUTODISCOVER_NS)
    }
    domain = topology.domain
    assert protocols == {
        "IMAP": (f"imap.{domain}", "993", "on"),
        "POP3": (f"pop.{domain}", "995", "on"),
        "SMTP": (f"smtp.{domain}", "465", "on"),
    }
    # Outlook finds the name through DNS too (SRV), when autodiscover.DOMAIN is not its first try.
    (srv,) = dns.resolver.resolve(f"_autodiscover._tcp.{domain}", "SRV")
    assert (str(srv.target).rstrip("."), srv.port) == (f"autodiscover.{domain}", 443)
    for method in ("PUT", "DELETE"):
        refused = requests.request(method, url, verify=str(ca_file), timeout=TIMEOUT)
        assert refused.status_code == 403


def test_the_apple_profile_downloads_as_a_profile(topology: Topology, ca_file: Path):
    response = get(f"https://autoconfig.{topology.domain}/apple.mobileconfig", ca_file)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(response.content)
    mail = next(
        item
        for item in profile["PayloadContent"]
        if item["PayloadType"] == "com.apple.mail.managed"
    )
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == (
        f"imap.{topology.domain}",
        993,
    )


def test_a_sender_checking_mta_sts_finds_a_policy_the_exchangers_meet(
    topology: Topology, ca_file: Path, tls_context: ssl.SSLContext
):
    """RFC 8461 as a sending MTA applies it: the `_mta-sts` TXT record, the policy over HTTPS
    (a certificate valid for mta-sts.DOMAIN), every MX target listed in it, and each target
    presenting a certificate valid for its name after STARTTLS on 25."""
    domain = topology.domain
    (txt,) = dns.resolver.resolve(f"_mta-sts.{domain}", "TXT")
    record = b"".join(txt.strings).decode()
    assert re.fullmatch(r"v=STSv1; id=[A-Za-z0-9]{1,32}", record), record
    response = get(f"https://mta-sts.{domain}/.well-known/mta-sts.txt", ca_file)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    fields = [line.split(": ", 1) for line in response.text.splitlines()]
    policy = {key: value for key, value in fields if key != "mx"}
    assert policy == {"version": "STSv1", "mode": "enforce", "max_age": "604800"}
    listed = {value for key, value in fields if key == "mx"}
    targets = {str(mx.exchange).rstrip(".") for mx in dns.resolver.resolve(domain, "MX")}
    assert targets and targets <= listed
    for target in sorted(targets):
        with smtplib.SMTP(target, 25, timeout=TIMEOUT) as smtp:
            smtp.starttls(context=tls_context)  # verifies the certificate for `target`
            assert smtp.noop()[0] == 250


@pytest.mark.parametrize("label", ["autoconfig", "autodiscover", "mta-sts"])
def test_each_name_is_hardened_serves_only_its_files_and_redirects_from_http(
    topology: Topology, ca_file: Path, label: str
):
    base = f"https://{label}.{topology.domain}"
    missing = get(f"{base}/index.html", ca_file)
    assert missing.status_code == 404
    for response in (missing, get(f"{base}/.well-known/mta-sts.txt", ca_file)):
        for header in SECURITY_HEADERS:
            assert header in response.headers, (response.url, header)
        assert "Server" not in response.headers or "/" not in response.headers["Server"]
    plain = requests.get(
        f"http://{label}.{topology.domain}/mail/config-v1.1.xml", timeout=TIMEOUT,
        allow_redirects=False,
    )  # fmt: skip
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"{base}/mail/config-v1.1.xml"
