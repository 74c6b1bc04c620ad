"""The PKI: certificate names, the internal CA, issuing and renewing, supplied certificates, CLI."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bulwark import pki
from bulwark.cli import main
from bulwark.cli import pki as cli_pki
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology
from bulwark.secret import Secret
from bulwark.topology import Topology

INVENTORY = Path(__file__).resolve().parents[2] / "inventory"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class FakeVault:
    """An in-memory vault with exactly the methods of `bulwark.vault.Vault` the PKI uses."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def get(self, name: str) -> Secret:
        return Secret(name, self._values[name])

    def set(self, name: str, value: str) -> None:
        self._values[name] = value

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def names(self) -> list[str]:
        return sorted(self._values)


@pytest.fixture(scope="module")
def lab() -> Topology:
    return load_topology(INVENTORY / "lab.py")


@pytest.fixture(scope="module")
def production() -> Topology:
    return load_topology(INVENTORY / "production.py")


@pytest.fixture
def vault(lab: Topology) -> FakeVault:
    """A vault holding the lab's CA and host certificates, issued at NOW."""
    vault = FakeVault()
    pki.ensure_pki(lab, vault, now=NOW)
    return vault


def with_roles(topology: Topology, host_name: str, roles: tuple[str, ...]) -> Topology:
    hosts = tuple(
        dataclasses.replace(host, roles=roles) if host.name == host_name else host
        for host in topology.hosts
    )
    return dataclasses.replace(topology, hosts=hosts)


def cert_of(vault: FakeVault, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(vault.get(name).reveal().encode())[0]


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return tuple(sorted(san.get_values_for_type(x509.DNSName)))


def both(domain: str, site: str, *labels: str) -> set[str]:
    """Each label's generic and per-site name."""
    return {f"{label}.{domain}" for label in labels} | {
        f"{label}.{site}.{domain}" for label in labels
    }


# An operator's own CA and certificates, for the supplied-certificate tests.


def common_name(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_cert(
    subject: str,
    key,
    issuer: x509.Certificate | None,
    issuer_key,
    names: tuple[str, ...] = (),
    not_after: datetime = NOW + timedelta(days=90),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(common_name(subject))
        .issuer_name(issuer.subject if issuer else common_name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=300))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def operator_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, make_cert("operator CA", key, None, key)


def supplied(operator_ca, names, not_after=NOW + timedelta(days=90), key=None):
    """(chain PEM, key PEM) of a certificate from the operator's CA."""
    ca_key, ca_cert = operator_ca
    key = key or ec.generate_private_key(ec.SECP256R1())
    leaf = make_cert(names[0], key, ca_cert, ca_key, tuple(names), not_after)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca_cert))
    return chain.decode(), key_pem(key)


def key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# Certificate names.


def test_mail_host_names_cover_its_services_and_the_proxies_in_front(lab):
    names = pki.certificate_names(lab, lab.host("nj-mail"))
    labels = ("imap", "pop", "smtp", "mx", "imaps-proxy", "pops-proxy", "smtps-proxy")
    assert names == tuple(sorted({"nj-mail.example.net"} | both("example.net", "nj", *labels)))


def test_web_host_names_have_no_mail_names(lab):
    """A files host also answers as the content origin (the same at every site: the primary
    serves it, and the primary can move). The mail clients' configuration names are web
    names (mailconfig); the mail services' own are not there."""
    names = pki.certificate_names(lab, lab.host("sea-web"))
    labels = ("autoconfig", "autodiscover", "mta-sts", "caldav", "carddav", "webdav", "myfiles")
    labels += ("ftp", "ldap")
    own = {"sea-web.example.net", "usercontent.example.net"}
    assert names == tuple(sorted(own | both("example.net", "sea", *labels)))


def test_only_a_files_host_carries_the_content_origin_and_the_inventory_may_name_it(lab):
    without_files = with_roles(lab, "sea-web", ("dav", "directory"))
    assert "usercontent.example.net" not in pki.certificate_names(
        without_files, without_files.host("sea-web")
    )
    renamed = dataclasses.replace(lab, content_origin_name="files-content.example.org")
    names = pki.certificate_names(renamed, renamed.host("nj-web"))
    assert "files-content.example.org" in names
    assert "usercontent.example.net" not in names


def test_a_proxy_host_carries_no_proxy_name(lab):
    """The proxies pass TLS through: the mail hosts answer for their names, never the
    gateway (which then holds no certificate a client of the proxies would ever see)."""
    assert pki.certificate_names(lab, lab.host("nj-gw")) == ("nj-gw.example.net",)


def test_split_production_hosts_carry_only_the_proxy_names_of_their_own_services(production):
    store = set(pki.certificate_names(production, production.host("nj-store")))
    mx = set(pki.certificate_names(production, production.host("sea-mx")))
    assert both("example.com", "nj", "imap", "pop", "imaps-proxy", "pops-proxy") <= store
    assert not store & both("example.com", "nj", "smtp", "mx", "smtps-proxy")
    assert both("example.com", "sea", "smtp", "mx", "smtps-proxy") <= mx
    assert not mx & both("example.com", "sea", "imap", "imaps-proxy")
    assert pki.certificate_names(production, production.host("nj-backup")) == (
        "nj-backup.example.com",
    )


def test_no_proxy_names_without_a_proxy_host(lab):
    topology = with_roles(with_roles(lab, "nj-gw", ("gateway",)), "sea-gw", ("gateway",))
    names = pki.certificate_names(topology, topology.host("nj-mail"))
    assert "imap.nj.example.net" in names
    assert not [name for name in names if "-proxy" in name]


# Issuing.


def test_first_run_writes_the_ca_and_every_host_certificate(lab):
    vault = FakeVault()
    written = pki.ensure_pki(lab, vault, now=NOW)
    hosts = [f"pki/{host.name}/{item}" for host in lab.hosts for item in ("key", "cert")]
    assert written == [pki.CA_KEY, pki.CA_CERT, *hosts]
    assert vault.names() == sorted(written)


def test_ca_is_a_p256_ca_for_host_certificates_only(vault):
    ca = cert_of(vault, pki.CA_CERT)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert ca.subject.rfc4514_string() == "CN=bulwark internal CA (example.net)"
    assert isinstance(ca.public_key().curve, ec.SECP256R1)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)
    ca.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(vault.get(pki.CA_KEY).reveal().encode(), None)
    assert key.public_key() == ca.public_key()


def test_host_certificates_are_p256_signed_by_the_ca_with_the_hosts_names(lab, vault):
    ca = cert_of(vault, pki.CA_CERT)
    serials = set()
    for host in lab.hosts:
        cert = cert_of(vault, f"pki/{host.name}/cert")
        key = serialization.load_pem_private_key(
            pki.host_private_key(vault, host.name).reveal().encode(), None
        )
        cert.verify_directly_issued_by(ca)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert key.public_key() == cert.public_key()
        assert dns_names(cert) == pki.certificate_names(lab, host)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=397)
        serials.add(cert.serial_number)
    assert len(serials) == len(lab.hosts)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("purpose", ["sslserver", "sslclient"])
def test_openssl_verifies_a_host_chain(vault, tmp_path, purpose):
    (tmp_path / "ca.pem").write_text(pki.ca_certificate(vault))
    (tmp_path / "chain.pem").write_text(pki.host_certificate_chain(vault, "nj-mail"))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            purpose,
            "-attime",
            str(int((NOW + timedelta(days=1)).timestamp())),
            "-verify_hostname",
            "imaps-proxy.nj.example.net",
            "-CAfile",
            tmp_path / "ca.pem",
            tmp_path / "chain.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_run_writes_nothing_and_keeps_every_byte(lab, vault):
    before = {name: vault.get(name).reveal() for name in vault.names()}
    assert pki.ensure_pki(lab, vault, now=NOW + timedelta(days=100)) == []
    assert {name: vault.get(name).reveal() for name in vault.names()} == before


def test_renews_with_29_days_left_not_with_31(lab, vault):
    not_after = cert_of(vault, "pki/nj-web/cert").not_valid_after_utc
    assert pki.ensure_pki(lab, vault, now=not_after - timedelta(days=31)) == []
    keys = {host.name: vault.get(f"pki/{host.name}/key").reveal() for host in lab.hosts}
    written = pki.ensure_pki(lab, vault, now=not_after - timedelta(days=29))
    assert written == [f"pki/{host.name}/cert" for host in lab.hosts]
    assert cert_of(vault, "pki/nj-web/cert").not_valid_after_utc > not_after
    # Renewed for the same key: DANE's TLSA records (3 1 1) of the public key stay valid.
    assert {host.name: vault.get(f"pki/{host.name}/key").reveal() for host in lab.hosts} == keys
    renewed = cert_of(vault, "pki/nj-mail/cert").public_key()
    kept = serialization.load_pem_private_key(keys["nj-mail"].encode(), None).public_key()
    assert renewed.public_numbers() == kept.public_numbers()


def test_a_key_bulwark_cannot_keep_is_replaced_by_a_fresh_one(lab, vault):
    vault.set("pki/nj-web/key", "not a key")
    assert pki.ensure_pki(lab, vault, now=NOW) == ["pki/nj-web/key", "pki/nj-web/cert"]
    cert = cert_of(vault, "pki/nj-web/cert")
    key = serialization.load_pem_private_key(vault.get("pki/nj-web/key").reveal().encode(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_a_role_change_reissues_that_host_only(lab, vault):
    changed = with_roles(lab, "nj-web", ("dav", "files"))
    assert pki.ensure_pki(changed, vault, now=NOW) == ["pki/nj-web/cert"]
    assert "ldap.nj.example.net" not in dns_names(cert_of(vault, "pki/nj-web/cert"))


def test_a_new_ca_reissues_every_host(lab, vault):
    other = FakeVault()
    pki.ensure_pki(lab, other, now=NOW)
    vault.set(pki.CA_KEY, other.get(pki.CA_KEY).reveal())
    vault.set(pki.CA_CERT, other.get(pki.CA_CERT).reveal())
    assert pki.ensure_pki(lab, vault, now=NOW) == [f"pki/{host.name}/cert" for host in lab.hosts]
    cert_of(vault, "pki/sea-gw/cert").verify_directly_issued_by(cert_of(other, pki.CA_CERT))


def test_a_ca_whose_key_does_not_match_is_refused(lab, vault):
    vault.set(pki.CA_KEY, key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(BulwarkError, match="pki/ca/key does not match pki/ca/cert"):
        pki.ensure_pki(lab, vault, now=NOW)


# Status and accessors.


def test_status_of_a_fresh_vault_and_after_issuing(lab, vault):
    assert {s.problems for s in pki.certificate_status(lab, FakeVault(), now=NOW)} == {
        ("no certificate",)
    }
    statuses = pki.certificate_status(lab, vault, now=NOW)
    assert [s.host for s in statuses] == [host.name for host in lab.hosts]
    assert all(s.ok and not s.supplied and s.days_left == 396 for s in statuses)
    late = pki.certificate_status(lab, vault, now=statuses[0].not_after - timedelta(days=29))
    assert late[0].problems == (f"expires in 29 days, on {statuses[0].not_after:%Y-%m-%d}",)


def test_accessors_give_the_chain_and_a_key_that_never_shows(vault):
    chain = pki.host_certificate_chain(vault, "nj-web")
    assert chain == vault.get("pki/nj-web/cert").reveal() + pki.ca_certificate(vault)
    key = pki.host_private_key(vault, "nj-web")
    assert isinstance(key, Secret)
    assert "PRIVATE KEY" not in f"{key} {key!r}"
    with pytest.raises(BulwarkError, match="holds no pki/nowhere/cert"):
        pki.host_certificate_chain(vault, "nowhere")


# Operator-supplied certificates.


def test_a_supplied_certificate_is_kept_and_served_with_its_own_chain(lab, vault, operator_ca):
    names = pki.certificate_names(lab, lab.host("nj-web"))
    chain, key = supplied(operator_ca, names, not_after=NOW + timedelta(days=20))
    pki.import_certificate(vault, "nj-web", chain, key, now=NOW)
    stored = vault.get("pki/nj-web/cert").reveal()
    written = pki.ensure_pki(lab, vault, now=NOW)
    assert written == []
    assert vault.get("pki/nj-web/cert").reveal() == stored
    assert vault.get("pki/nj-web/supplied").reveal() == "yes"
    assert pki.host_certificate_chain(vault, "nj-web") == chain
    status = next(
        row for row in pki.certificate_status(lab, vault, now=NOW) if row.host == "nj-web"
    )
    assert (status.host, status.supplied, status.days_left) == ("nj-web", True, 20)


def test_a_supplied_certificate_with_problems_is_only_warned_about(lab, vault, operator_ca, caplog):
    names = ("nj-web.example.net", "*.example.net", "caldav.nj.example.net")
    chain, key = supplied(operator_ca, names, not_after=NOW + timedelta(days=10))
    pki.import_certificate(vault, "nj-web", chain, key, now=NOW)
    with caplog.at_level(logging.WARNING, logger="bulwark.pki"):
        assert pki.ensure_pki(lab, vault, now=NOW) == []
    assert vault.get("pki/nj-web/cert").reveal() == chain
    lacks = (
        "lacks autoconfig.nj.example.net, autodiscover.nj.example.net, carddav.nj.example.net, "
        "ftp.nj.example.net, ldap.nj.example.net, mta-sts.nj.example.net, "
        "myfiles.nj.example.net, webdav.nj.example.net"
    )
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(" (supplied")[0] for m in messages] == [
        f"nj-web: {lacks}",
        "nj-web: expires in 10 days, on 2026-06-11",
    ]


def test_a_supplied_key_that_does_not_match_is_refused(vault, operator_ca):
    chain, _ = supplied(operator_ca, ("nj-web.example.net",))
    other = key_pem(ec.generate_private_key(ec.SECP256R1()))
    before = vault.get("pki/nj-web/cert").reveal()
    with pytest.raises(BulwarkError) as refused:
        pki.import_certificate(vault, "nj-web", chain, other, now=NOW)
    message = str(refused.value)
    assert message == (
        "cannot import the certificate for nj-web: the private key does not match the "
        "certificate CN=nj-web.example.net"
    )
    assert refused.value.__cause__ is None and refused.value.__context__ is None
    assert vault.get("pki/nj-web/cert").reveal() == before
    assert "pki/nj-web/supplied" not in vault


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage certificate", "the certificate file holds no PEM certificate"),
        ("encrypted key", "the key file is not an unencrypted PEM private key"),
        ("expired", "the certificate CN=nj-web.example.net expired on 2026-05-31"),
        ("chain out of order", "certificate 1 of the chain is not issued by certificate 2"),
        ("ed25519 key", "the key must be ECDSA P-256 or P-384, or RSA of at least 2048 bits"),
    ],
)
def test_import_refuses_with_a_one_line_reason(operator_ca, case, reason):
    key = ed25519.Ed25519PrivateKey.generate() if case == "ed25519 key" else None
    not_after = NOW - timedelta(days=1) if case == "expired" else NOW + timedelta(days=90)
    chain, key_text = supplied(operator_ca, ("nj-web.example.net",), not_after, key)
    if case == "garbage certificate":
        chain = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    if case == "encrypted key":
        key_text = (
            ec.generate_private_key(ec.SECP256R1())
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
            .decode()
        )
    if case == "chain out of order":
        leaf, ca = x509.load_pem_x509_certificates(chain.encode())
        chain = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (ca, leaf))
    vault = FakeVault()
    with pytest.raises(BulwarkError) as refused:
        pki.import_certificate(vault, "nj-web", chain, key_text, now=NOW)
    assert str(refused.value).startswith(f"cannot import the certificate for nj-web: {reason}")
    assert "\n" not in str(refused.value)
    assert vault.names() == []


# The CLI.


class SavingVault(FakeVault):
    """The vault `bulwark pki` opens: counts saves and records the path it was opened at."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self.path: str | None = None

    def save(self) -> None:
        self.saves += 1


@pytest.fixture
def cli_vault(monkeypatch) -> SavingVault:
    """Stands in for `open_vault` in `bulwark pki`, which reads the key from BULWARK_VAULT_KEY."""
    vault = SavingVault()

    def open_vault(path: str) -> SavingVault:
        vault.path = path
        return vault

    monkeypatch.setattr(cli_pki, "open_vault", open_vault)
    return vault


def test_cli_status_exits_2_until_every_host_has_a_certificate(lab, cli_vault):
    inventory = str(INVENTORY / "lab.py")
    missing = CliRunner().invoke(main, ["pki", "status", inventory])
    assert missing.exit_code == 2
    assert missing.output.splitlines()[1].split() == [
        "nj-backup", "-", "-", "no", "no", "certificate",
    ]  # fmt: skip
    assert cli_vault.path == str(INVENTORY / "lab.vault")
    pki.ensure_pki(lab, cli_vault)
    issued = CliRunner().invoke(main, ["pki", "status", inventory])
    assert issued.exit_code == 0, issued.output
    assert issued.output.splitlines()[0].split() == [
        "HOST",
        "EXPIRES",
        "DAYS",
        "LEFT",
        "SUPPLIED",
        "PROBLEMS",
    ]
    rows = [line.split() for line in issued.output.splitlines()[1:]]
    assert [(row[0], row[2], row[3:]) for row in rows] == [
        (host.name, "396", ["no", "ok"]) for host in lab.hosts
    ]


def test_cli_import_stores_and_saves_or_refuses_saving_nothing(cli_vault, operator_ca, tmp_path):
    chain, key = supplied(
        operator_ca, ("nj-web.example.net",), datetime.now(UTC) + timedelta(days=60)
    )
    (tmp_path / "chain.pem").write_text(chain)
    (tmp_path / "key.pem").write_text(key)
    (tmp_path / "other.pem").write_text(key_pem(ec.generate_private_key(ec.SECP256R1())))
    command = [
        "pki",
        "import",
        str(INVENTORY / "lab.py"),
        "nj-web",
        "--cert",
        str(tmp_path / "chain.pem"),
    ]
    refused = CliRunner().invoke(main, [*command, "--key", str(tmp_path / "other.pem")])
    assert refused.exit_code == 2
    assert "the private key does not match" in refused.output
    assert cli_vault.saves == 0
    imported = CliRunner().invoke(main, [*command, "--key", str(tmp_path / "key.pem")])
    assert imported.exit_code == 0, imported.output
    assert "nj-web: imported; expires" in imported.output
    assert "warning: nj-web: lacks autoconfig.example.net" in imported.output
    assert cli_vault.saves == 1
    assert pki.host_certificate_chain(cli_vault, "nj-web") == chain
    command[3] = "nowhere"
    unknown = CliRunner().invoke(main, [*command, "--key", str(tmp_path / "key.pem")])
    assert unknown.exit_code == 2
    assert f"{INVENTORY / 'lab.py'}: no host 'nowhere'" in unknown.output
