"""The platform's PKI: an internal CA and one TLS certificate per host, all kept in the vault.

The CA is ECDSA P-256, self-signed, valid ten years and may sign host certificates only
(pathlen 0). Each host gets one ECDSA P-256 key, kept across renewals (DANE records name it),
and a certificate for it valid 397 days, for serverAuth and
clientAuth (replication and LMTP peers authenticate each other), carrying every name clients
use to reach it (`certificate_names`). An operator may supply a host's certificate instead
(`import_certificate`); bulwark then never replaces it, and only warns when it falls short.

Vault entries (`bulwark.secret_names`), all PEM: the CA's key and certificate, and per host its
key, its certificate (issued: the leaf alone; supplied: the leaf and its issuers) and a mark
("yes") for an operator's certificate. Keys are unencrypted PKCS#8: the
vault encrypts them. `ensure_pki` rewrites an entry only when it must, so the rendered
configuration stays byte-identical from one run to the next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bulwark import catalogue
from bulwark.errors import BulwarkError
from bulwark.secret import MutableSecretStore, Secret, SecretStore
from bulwark.secret_names import (
    CA_CERT,
    CA_KEY,
    host_certificate_name,
    host_key_name,
    host_supplied_name,
)
from bulwark.topology import Host, Topology

# Where hosts keep their certificate material (written by the pki role, read by every TLS
# service's configuration).
CA_CERT_PATH = "/usr/local/share/ca-certificates/bulwark-ca.crt"
HOST_CERT_PATH = "/etc/ssl/bulwark/host.crt"  # leaf + issuing CA, as daemons serve it
HOST_KEY_PATH = "/etc/ssl/bulwark/host.key"
# Daemons that read the key (slapd, postfix ...) do so through this group.
KEY_GROUP = "ssl-cert"

CA_LIFETIME = timedelta(days=3653)
HOST_LIFETIME = timedelta(days=397)
# A certificate with less than this left is renewed (issued) or reported (supplied).
RENEW_BEFORE = timedelta(days=30)
# Certificates start a little in the past, so that a host whose clock lags still accepts them.
_BACKDATE = timedelta(hours=1)
_SUPPLIED = "yes"
_log = logging.getLogger(__name__)
_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


@dataclass(frozen=True)
class CertificateStatus:
    """One host's certificate as the vault holds it, and what is wrong with it."""

    host: str
    names: tuple[str, ...]  # the DNS names on the certificate, sorted; () when there is none
    not_after: datetime | None
    days_left: int | None
    supplied: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def certificate_names(topology: Topology, host: Host) -> tuple[str, ...]:
    """The DNS names the host's certificate carries, sorted and unique.

    The host's own name, each client host name of the services it runs, generic
    (`imap.DOMAIN`) and of its site (`imap.nj.DOMAIN`); and, when the platform has TLS
    pass-through proxies, the proxy names that reach those services, since the backend
    answers the TLS handshake the proxy forwards; on a files host, the content origin.
    """
    services = topology.services(host)
    # A proxy passes TLS through: its name is on the certificate of the host it forwards to.
    labels = {label for service in services if service.listen is None for label in service.names}
    if topology.hosts_with_role("proxy"):
        served = {service.name for service in services}
        labels |= {
            label
            for proxy in catalogue.proxies()
            if proxy.forwards_to in served
            for label in proxy.names
        }
    domain = topology.domain
    names = {topology.fqdn(host)}
    names |= {catalogue.qualified_name(label, domain) for label in labels}
    names |= {catalogue.qualified_name(label, domain, host.site) for label in labels}
    if host.has_role("files"):
        names.add(topology.content_origin)
    return tuple(sorted(names))


def ensure_pki(
    topology: Topology, vault: MutableSecretStore, now: datetime | None = None
) -> list[str]:
    """Create the CA if missing and (re)issue each host certificate that needs it.

    A host certificate is issued when it is missing or unreadable, its names differ from
    `certificate_names`, the CA did not sign it, its key does not match, or less than 30 days
    remain; otherwise it is left untouched. Supplied certificates are never replaced: each of
    their problems is logged as a warning (`certificate_status` lists them too). Returns the
    vault entries written; the caller saves the vault. `now` (timezone-aware) defaults to the
    current time.
    """
    now = _now(now)
    written: list[str] = []
    if CA_KEY not in vault or CA_CERT not in vault:
        key, cert = _new_ca(topology.domain, now)
        written += _store(vault, {CA_KEY: _key_pem(key), CA_CERT: _cert_pem(cert)})
    ca_key, ca_cert = _load_ca(vault)
    for host in topology.hosts:
        status = _status(topology, vault, host, ca_cert, now)
        if status.ok:
            continue
        if status.supplied:
            for problem in status.problems:
                _log.warning(
                    "%s: %s (supplied: replace it with `bulwark pki import`)", host.name, problem
                )
            continue
        key, cert = _new_host_certificate(
            topology, host, _kept_key(vault, host.name), ca_key, ca_cert, now
        )
        written += _store(
            vault,
            {
                host_key_name(host.name): _key_pem(key),
                host_certificate_name(host.name): _cert_pem(cert),
            },
        )
    return written


def import_certificate(
    vault: MutableSecretStore,
    host_name: str,
    cert_pem_chain: str,
    key_pem: str,
    now: datetime | None = None,
) -> None:
    """Store an operator-supplied certificate for `host_name`; bulwark will never replace it.

    `cert_pem_chain` is the host's certificate followed by its issuers, `key_pem` its
    unencrypted private key (ECDSA P-256/P-384 or RSA of at least 2048 bits). Raises
    `BulwarkError` naming what is wrong; the message never includes key material.
    """
    now = _now(now)

    def refuse(reason: str) -> BulwarkError:
        return BulwarkError(f"cannot import the certificate for {host_name}: {reason}")

    try:
        chain = _parse_chain(cert_pem_chain)
    except ValueError:
        raise refuse("the certificate file holds no PEM certificate") from None
    try:
        key = _parse_key(key_pem)
    except ValueError as error:
        raise refuse(f"the key file {error}") from None
    leaf = chain[0]
    for position, (cert, issuer) in enumerate(pairwise(chain), start=1):
        if not _issued_by(cert, issuer):
            raise refuse(
                f"certificate {position} of the chain is not issued by certificate "
                f"{position + 1}: put the host's certificate first, then each issuer"
            )
    if not _acceptable_key(key):
        raise refuse("the key must be ECDSA P-256 or P-384, or RSA of at least 2048 bits")
    if key.public_key() != leaf.public_key():
        raise refuse(f"the private key does not match the certificate {_subject(leaf)}")
    if leaf.not_valid_after_utc <= now:
        raise refuse(f"the certificate {_subject(leaf)} expired on {_day(leaf)}")
    _store(
        vault,
        {
            host_certificate_name(host_name): "".join(_cert_pem(cert) for cert in chain),
            host_key_name(host_name): _key_pem(key),
            host_supplied_name(host_name): _SUPPLIED,
        },
    )


def certificate_status(
    topology: Topology, vault: SecretStore, now: datetime | None = None
) -> list[CertificateStatus]:
    """Every host's certificate status, in topology order (read-only)."""
    now = _now(now)
    ca_cert = _load_ca(vault)[1] if CA_CERT in vault and CA_KEY in vault else None
    return [_status(topology, vault, host, ca_cert, now) for host in topology.hosts]


def ca_certificate(vault: SecretStore) -> str:
    """The internal CA's certificate, PEM: what clients and peers trust."""
    return _require(vault, CA_CERT).reveal()


def host_certificate_chain(vault: SecretStore, host_name: str) -> str:
    """The host's certificate and its issuers, PEM, as daemons serve it."""
    chain = _require(vault, host_certificate_name(host_name)).reveal()
    return chain if _is_supplied(vault, host_name) else chain + ca_certificate(vault)


def host_private_key(vault: SecretStore, host_name: str) -> Secret:
    """The host certificate's private key (PKCS#8 PEM), as a `Secret`."""
    return _require(vault, host_key_name(host_name))


def _status(
    topology: Topology,
    vault: SecretStore,
    host: Host,
    ca_cert: x509.Certificate | None,
    now: datetime,
) -> CertificateStatus:
    supplied = _is_supplied(vault, host.name)
    cert_entry, key_entry = host_certificate_name(host.name), host_key_name(host.name)
    if cert_entry not in vault or key_entry not in vault:
        return CertificateStatus(host.name, (), None, None, supplied, ("no certificate",))
    try:
        leaf = _parse_chain(vault.get(cert_entry).reveal())[0]
        key = _parse_key(vault.get(key_entry).reveal())
    except ValueError:
        return CertificateStatus(
            host.name, (), None, None, supplied, ("the vault's certificate or key is unreadable",)
        )
    names = _dns_names(leaf)
    expected = certificate_names(topology, host)
    remaining = leaf.not_valid_after_utc - now
    problems = []
    if key.public_key() != leaf.public_key():
        problems.append("the key does not match the certificate")
    if not supplied and (ca_cert is None or not _issued_by(leaf, ca_cert)):
        problems.append("not issued by the internal CA")
    if missing := [name for name in expected if not _covers(names, name)]:
        problems.append(f"lacks {', '.join(missing)}")
    if not supplied and (extra := sorted(set(names) - set(expected))):
        problems.append(f"names no longer served: {', '.join(extra)}")
    if remaining <= timedelta(0):
        problems.append(f"expired on {_day(leaf)}")
    elif remaining < RENEW_BEFORE:
        problems.append(f"expires in {remaining.days} days, on {_day(leaf)}")
    return CertificateStatus(
        host.name,
        names,
        leaf.not_valid_after_utc,
        remaining.days,
        supplied,
        tuple(problems),
    )


def _new_ca(domain: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"bulwark internal CA ({domain})")
    cert = (
        _builder(name, name, key, now, CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_host_certificate(
    topology: Topology,
    host: Host,
    kept: ec.EllipticCurvePrivateKey | None,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for the host, signed by the CA, for the `kept` key or a fresh one."""
    key = kept or ec.generate_private_key(ec.SECP256R1())
    names = certificate_names(topology, host)
    cert = (
        _builder(_name(topology.fqdn(host)), ca_cert.subject, key, now, HOST_LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage("digital_signature"), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    lifetime: timedelta,
) -> x509.CertificateBuilder:
    """What every certificate shares: names, key, random serial, validity, key identifier."""
    start = now - _BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _load_ca(vault: SecretStore) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = _parse_key(vault.get(CA_KEY).reveal())
        cert = _parse_chain(vault.get(CA_CERT).reveal())[0]
    except ValueError:
        raise BulwarkError(f"the vault's {CA_KEY} or {CA_CERT} is unreadable") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise BulwarkError(f"the vault's {CA_KEY} does not match {CA_CERT}")
    return key, cert


def _parse_chain(pem: str) -> list[x509.Certificate]:
    """Every certificate in `pem`, in order; ValueError when there is none."""
    return x509.load_pem_x509_certificates(pem.encode())


def _kept_key(vault: SecretStore, host_name: str) -> ec.EllipticCurvePrivateKey | None:
    """The host's key already in the vault, if it is a P-256 key bulwark made: a renewed or
    re-named certificate keeps it, so the TLSA records of its public key (DANE `3 1 1`,
    bulwark.dns) stay valid across renewals."""
    if host_key_name(host_name) not in vault:
        return None
    try:
        key = _parse_key(vault.get(host_key_name(host_name)).reveal())
    except ValueError:
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def _parse_key(pem: str) -> PrivateKeyTypes:
    """The private key in `pem`; the ValueError never quotes it."""
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("is not an unencrypted PEM private key") from None


def _acceptable_key(key: PrivateKeyTypes) -> bool:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1)
    return isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(sorted(set(san.get_values_for_type(x509.DNSName))))


def _covers(names: tuple[str, ...], name: str) -> bool:
    """Whether a certificate for `names` is valid for `name`; a wildcard covers one label."""
    return name in names or f"*.{name.partition('.')[2]}" in names


def _is_supplied(vault: SecretStore, host_name: str) -> bool:
    entry = host_supplied_name(host_name)
    return entry in vault and vault.get(entry).reveal() == _SUPPLIED


def _require(vault: SecretStore, entry: str) -> Secret:
    if entry not in vault:
        raise BulwarkError(f"the vault holds no {entry}: deploy the pki role or import one")
    return vault.get(entry)


def _store(vault: MutableSecretStore, entries: dict[str, str]) -> list[str]:
    """Set each entry whose value changed (a kept key is not rewritten); the names set."""
    changed = [
        entry
        for entry, value in entries.items()
        if entry not in vault or vault.get(entry).reveal() != value
    ]
    for entry in changed:
        vault.set(entry, entries[entry])
    return changed


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*enabled: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{usage: usage in enabled for usage in _KEY_USAGES})


def _key_pem(key: PrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _day(cert: x509.Certificate) -> str:
    return f"{cert.not_valid_after_utc:%Y-%m-%d}"


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).replace(microsecond=0)
