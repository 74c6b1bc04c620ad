"""The records `bulwark dns` publishes, as resolvers outside see them (the lab's knotd serves the
rendered zone to the internet namespace): each leads to something that answers as the record
says — the MX targets accept mail over verified TLS, the TLSA records match the key each
exchanger presents on 25, the SRV records name the implicit-TLS ports a client then reaches."""

from __future__ import annotations

import hashlib
import smtplib
import socket
import ssl

import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bulwark import catalogue
from bulwark.topology import Topology

TIMEOUT = 30


def presented_spki_sha256(target: str, context: ssl.SSLContext) -> str:
    """SHA-256 of the public key the exchanger `target` presents after STARTTLS on 25."""
    with smtplib.SMTP(target, 25, timeout=TIMEOUT) as smtp:
        smtp.starttls(context=context)
        der = smtp.sock.getpeercert(binary_form=True)
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def test_mail_goes_to_the_primary_sites_exchanger_first(topology: Topology):
    answers = sorted(dns.resolver.resolve(topology.domain, "MX"), key=lambda mx: mx.preference)
    targets = [str(mx.exchange).rstrip(".") for mx in answers]
    primary = topology.primary_site.name
    assert targets[0] == f"mx.{primary}.{topology.domain}"
    assert len(targets) == len(topology.sites)


def test_each_exchangers_tlsa_record_matches_the_key_it_presents(
    topology: Topology, tls_context: ssl.SSLContext
):
    for mx in dns.resolver.resolve(topology.domain, "MX"):
        target = str(mx.exchange).rstrip(".")
        records = dns.resolver.resolve(f"_25._tcp.{target}", "TLSA")
        published = {
            (record.usage, record.selector, record.mtype, record.cert.hex()) for record in records
        }
        presented = presented_spki_sha256(target, tls_context)
        assert (3, 1, 1, presented) in published, target


def spf_of(name: str) -> str:
    txt = [b"".join(r.strings).decode() for r in dns.resolver.resolve(name, "TXT")]
    (spf,) = [text for text in txt if text.startswith("v=spf1 ")]
    return spf


def test_spf_names_each_exchangers_address_and_covers_its_bounces(topology: Topology):
    """The domain's SPF names every MX target's address; each exchanger's own name (its HELO,
    and the From of its bounces) has an SPF record of its own address."""
    spf = spf_of(topology.domain)
    assert spf.endswith(" -all")
    for mx in dns.resolver.resolve(topology.domain, "MX"):
        for address in dns.resolver.resolve(str(mx.exchange), "A"):
            assert f"ip4:{address}" in spf.split()
    for host in topology.hosts_with_role("mx"):
        name = topology.fqdn(host)
        assert spf_of(name) == "v=spf1 a -all"
        assert [str(a) for a in dns.resolver.resolve(name, "A")] == [str(host.public_address)]


def test_each_srv_record_leads_to_a_tls_server_on_its_port(
    topology: Topology, tls_context: ssl.SSLContext
):
    """RFC 6186/6764: the implicit-TLS services, each a TLS server for the name the record
    gives; the plaintext ones are published as not offered (target ".")."""
    implicit = {"_imaps": "imaps", "_pop3s": "pop3s", "_submissions": "submissions"}
    implicit |= {"_caldavs": "https-dav", "_carddavs": "https-dav"}
    for owner, service in implicit.items():
        (srv,) = dns.resolver.resolve(f"{owner}._tcp.{topology.domain}", "SRV")
        target = str(srv.target).rstrip(".")
        assert srv.port == catalogue.service(service).port
        with (
            socket.create_connection((target, srv.port), timeout=TIMEOUT) as raw,
            tls_context.wrap_socket(raw, server_hostname=target) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    for owner in ("_imap", "_pop3", "_caldav", "_carddav"):
        (srv,) = dns.resolver.resolve(f"{owner}._tcp.{topology.domain}", "SRV")
        assert (str(srv.target), srv.port) == (".", 0)


def test_caa_allows_the_issuers_the_inventory_names(topology: Topology):
    answers = dns.resolver.resolve(topology.domain, "CAA")
    issued = sorted(record.value.decode() for record in answers if record.tag == b"issue")
    assert issued == sorted(topology.caa_issuers or (";",))
