"""The DNS records the operator publishes for the platform, from the topology and the vault.

What other servers and clients look up before they reach us: an A record for every catalogue
name at the address that serves it (and each mail exchanger's own name, which its HELO
announces), the MX records (the primary site's exchangers preferred), SPF naming the exchangers'
addresses (and for each exchanger's own name, which its bounces come from), each DKIM key and
the DMARC policy (bulwark.mailtrust), the MTA-STS policy's id (the policy, served by the
mailconfig role, is made here), TLSA for SMTP on 25 (DANE, `3 1 1`: the SHA-256 of the
certificate's public key, which a renewal keeps: bulwark.pki), SRV records for client discovery
(RFC 6186 mail, RFC 6764 CalDAV/CardDAV, Outlook's autodiscover; a plaintext variant is
published as "not offered", target "."), and CAA. Only the services of roles some host deploys
get records, so nothing is announced that does not answer.

`zone_records` is pure: the same topology and vault give the same records, sorted, and
`render_zone` writes them as a zone-file fragment with absolute names (no SOA or NS: those
are the zone operator's). TLSA needs each exchanger's certificate from the vault, DKIM its keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bulwark import catalogue, mailtrust, pki, registry
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

# Seconds resolvers may cache the records.
TTL = 3600
# MX preference of the primary site's exchangers, and of every other site's.
MX_PRIMARY_PREFERENCE = 10
MX_OTHER_PREFERENCE = 20
# The SPF record of an exchanger's own name: the name's A record, nothing else.
HELO_SPF = "v=spf1 a -all"
# The catalogue label every site's exchangers answer to (`mx.SITE.DOMAIN`): the MX targets.
MX_LABEL = "mx"
# Client discovery (RFC 6186 mail, RFC 6764 CalDAV/CardDAV): SRV service -> the catalogue
# service a client reaches through it. Each plaintext variant is published as not offered.
DISCOVERY: dict[str, str] = {
    "_imaps._tcp": "imaps",
    "_pop3s._tcp": "pop3s",
    "_submissions._tcp": "submissions",
    "_submission._tcp": "submission",
    "_caldavs._tcp": "https-dav",
    "_carddavs._tcp": "https-dav",
    # Outlook's autodiscover when autodiscover.DOMAIN is not tried or answers nothing.
    "_autodiscover._tcp": "https-mailconfig",
}
NOT_OFFERED: dict[str, str] = {
    "_imap._tcp": "imaps",
    "_pop3._tcp": "pop3s",
    "_caldav._tcp": "https-dav",
    "_carddav._tcp": "https-dav",
}
# The host-name label each discovered service is reached by (its catalogue names).
DISCOVERY_LABEL: dict[str, str] = {
    "_caldavs._tcp": "caldav",
    "_carddavs._tcp": "carddav",
    "_autodiscover._tcp": "autodiscover",
}
# The DANE record for SMTP: usage 3 (the server's own key), selector 1 (SubjectPublicKeyInfo),
# matching 1 (SHA-256). A key kept across certificate renewals keeps it valid.
TLSA_PARAMETERS = "3 1 1"
SMTP_TLSA_SERVICE = "_25._tcp"
# MTA-STS (RFC 8461): senders refuse to deliver over anything but verified TLS to our
# exchangers, and cache the policy for a week (§3.2 advises weeks; a new id announces a change).
# The policy is served by the mailconfig role at https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
MTA_STS_MODE = "enforce"
MTA_STS_MAX_AGE = 604800
MTA_STS_LABEL = "mta-sts"


@dataclass(frozen=True, order=True)
class Record:
    """One resource record: its absolute owner name (no trailing dot), type and data."""

    name: str
    type: str
    data: str

    def line(self) -> str:
        return f"{self.name}.\t{TTL}\tIN\t{self.type}\t{self.data}"


# Record types in the order the fragment lists them.
TYPE_ORDER: tuple[str, ...] = ("A", "MX", "TXT", "TLSA", "SRV", "CAA")


def client_addresses(topology: Topology) -> dict[str, tuple[str, ...]]:
    """Client host name -> the public addresses of the hosts serving it, in inventory order:
    `LABEL.SITE.DOMAIN` names each site's, `LABEL.DOMAIN` the primary site's; a proxy name its
    own address. Users' files open from the content origin the primary's files hosts serve."""
    names: dict[str, list[str]] = {}
    primary = topology.primary_site.name

    def add(name: str, address: str) -> None:
        addresses = names.setdefault(name, [])
        if address not in addresses:
            addresses.append(address)

    for service in catalogue.SERVICES:
        if not service.names:
            continue
        for site in topology.sites:
            for host in topology.hosts_with_role(service.role, site.name):
                if host.public_address is None:
                    continue
                address = str(host.own_address(service) or host.public_address)
                for label in service.names:
                    add(catalogue.qualified_name(label, topology.domain, site.name), address)
                    if site.name == primary:
                        add(catalogue.qualified_name(label, topology.domain), address)
    for host in topology.hosts_with_role("files", primary):
        if host.public_address is not None:
            add(topology.content_origin, str(host.public_address))
    return {name: tuple(addresses) for name, addresses in names.items()}


def exchangers(topology: Topology) -> list[tuple[int, str]]:
    """(preference, target) of every site whose hosts receive mail, the primary's first."""
    return [
        (
            MX_PRIMARY_PREFERENCE if site.primary else MX_OTHER_PREFERENCE,
            catalogue.qualified_name(MX_LABEL, topology.domain, site.name),
        )
        for site in topology.sites
        if any(host.public_address for host in topology.hosts_with_role("mx", site.name))
    ]


def mta_sts_policy(topology: Topology) -> str:
    """The MTA-STS policy file (RFC 8461 §3.2): every site's exchanger name the MX records
    name, each covered by its exchangers' certificates."""
    lines = [
        "version: STSv1",
        f"mode: {MTA_STS_MODE}",
        *(f"mx: {target}" for _, target in exchangers(topology)),
        f"max_age: {MTA_STS_MAX_AGE}",
    ]
    return "\r\n".join(lines) + "\r\n"


def mta_sts_id(topology: Topology) -> str:
    """The policy's id for the `_mta-sts` TXT record: changes whenever the policy does."""
    return hashlib.sha256(mta_sts_policy(topology).encode()).hexdigest()[:20]


def serves_mta_sts(topology: Topology) -> bool:
    """Whether `mta-sts.DOMAIN` answers (the primary site deploys mailconfig) and there are
    exchangers for a policy to name."""
    primary = topology.primary_site.name
    return bool(topology.hosts_with_role("mailconfig", primary)) and bool(exchangers(topology))


def spki_sha256(certificate_pem: str) -> str:
    """Hex SHA-256 of the first certificate's SubjectPublicKeyInfo (TLSA selector 1, type 1)."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def zone_records(topology: Topology, secrets: SecretStore | None) -> list[Record]:
    """Every record the platform needs, sorted by type (TYPE_ORDER), name and data. Without
    the vault (`secrets` None: an audit without its key), the records made from its keys,
    TLSA and DKIM, are left out."""
    domain = topology.domain
    records = [
        Record(name, "A", address)
        for name, addresses in client_addresses(topology).items()
        for address in addresses
    ]
    mx_hosts = [host for host in topology.hosts_with_role("mx") if host.public_address]
    # Each exchanger's own name, which its HELO/EHLO gives (Postfix's myhostname).
    records += [Record(topology.fqdn(host), "A", str(host.public_address)) for host in mx_hosts]
    records += [
        Record(domain, "MX", f"{preference} {target}.")
        for preference, target in exchangers(topology)
    ]
    if mx_hosts:
        addresses = " ".join(f"ip4:{host.public_address}" for host in mx_hosts)
        records.append(Record(domain, "TXT", _txt(f"v=spf1 {addresses} -all")))
    # SPF for each exchanger's own name: its bounces (empty sender, From MAILER-DAEMON@ that
    # name) are checked against the HELO name, and DMARC's sp=reject covers the name.
    records += [Record(topology.fqdn(host), "TXT", _txt(HELO_SPF)) for host in mx_hosts]
    if secrets is not None:
        records += _keyed_records(topology, secrets, mx_hosts)
    if serves_mta_sts(topology):
        records.append(
            Record(f"_{MTA_STS_LABEL}.{domain}", "TXT", _txt(f"v=STSv1; id={mta_sts_id(topology)}"))
        )
    if mx_hosts:
        records.append(Record(f"_dmarc.{domain}", "TXT", _txt(mailtrust.dmarc_record(topology))))
    records += _discovery(topology)
    records += [
        Record(domain, "CAA", f'0 issue "{issuer}"') for issuer in (topology.caa_issuers or (";",))
    ]
    return sorted(set(records), key=lambda r: (TYPE_ORDER.index(r.type), r.name, r.data))


def _keyed_records(topology: Topology, secrets: SecretStore, mx_hosts: list[Host]) -> list[Record]:
    """TLSA for each exchanger (every key a site's exchangers present is valid for that site's
    MX target) and each DKIM key's record: made from the vault's certificates and keys."""
    domain = topology.domain
    records = [
        Record(
            f"{SMTP_TLSA_SERVICE}.{catalogue.qualified_name(MX_LABEL, domain, host.site)}",
            "TLSA",
            f"{TLSA_PARAMETERS} {spki_sha256(pki.host_certificate_chain(secrets, host.name))}",
        )
        for host in mx_hosts
    ]
    if mx_hosts:
        records += [
            Record(
                f"{selector}._domainkey.{domain}",
                "TXT",
                _txt(mailtrust.dkim_record(algorithm, secrets.get(name).reveal())),
            )
            for algorithm, selector, name in mailtrust.dkim_keys(topology)
        ]
    return records


def _discovery(topology: Topology) -> list[Record]:
    """SRV records for the discovered services some host serves (RFC 6186, RFC 6764)."""
    served = registry.served_services(topology)
    records = []
    for owner, name in DISCOVERY.items():
        if name in served:
            service = served[name]
            label = DISCOVERY_LABEL.get(owner, service.names[0])
            target = catalogue.qualified_name(label, topology.domain)
            records.append(
                Record(f"{owner}.{topology.domain}", "SRV", f"0 1 {service.port} {target}.")
            )
    records += [
        Record(f"{owner}.{topology.domain}", "SRV", "0 0 0 .")
        for owner, name in NOT_OFFERED.items()
        if name in served
    ]
    return records


def _txt(text: str) -> str:
    """A TXT record's data: quoted strings of at most 255 bytes each (RFC 1035 §3.3)."""
    chunks = [text[start : start + 255] for start in range(0, len(text), 255)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def render_zone(topology: Topology, records: Iterable[Record], keyed: bool = True) -> str:
    """The zone-file fragment: a header saying what it is (and, not `keyed`, that the records
    made from the vault's keys are left out), then one record a line."""
    lines = [
        f"; DNS records of the platform {topology.domain}, rendered by `bulwark dns`.",
        "; Publish them in the zone; SOA and NS are the zone operator's.",
        "; Each exchanger's address needs its PTR set to the exchanger's own name (the A record",
        "; of the same name) by whoever holds the address block.",
    ]
    if not keyed:
        lines += [
            "; Rendered without the vault's key: the TLSA and DKIM records, made from the",
            "; vault's certificates and keys, are left out.",
        ]
    lines += [record.line() for record in records]
    return "\n".join(lines) + "\n"
