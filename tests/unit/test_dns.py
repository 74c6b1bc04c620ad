"""The DNS records `bulwark dns` renders (bulwark.dns), and the lab's server for them
(bulwark.lab.dns): what each record says, that only deployed services are announced, that the
fragment is a zone a real parser and a real knotd accept, deterministic bytes, the CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from pathlib import Path

import dns.rdatatype
import dns.reversename
import dns.zone
import pytest
from click.testing import CliRunner

from bulwark import catalogue, pki
from bulwark.cli import main
from bulwark.dns import client_addresses, render_zone, zone_records
from bulwark.inventory import load_inventory, load_topology
from bulwark.lab import dns as lab_dns
from bulwark.lab.plan import build_plan
from bulwark.topology import Topology
from bulwark.validation import TopologyError

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")


def records_of(topology: Topology, vault, kind: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in zone_records(topology, vault):
        if record.type == kind:
            found.setdefault(record.name, []).append(record.data)
    return found


def parsed_zone(topology: Topology, vault) -> dns.zone.Zone:
    """The fragment with an SOA and NS in front, through dnspython's zone parser (strict)."""
    head = (
        f"{topology.domain}. 3600 IN SOA ns.{topology.domain}. h.{topology.domain}. 1 1 1 1 1\n"
        f"{topology.domain}. 3600 IN NS ns.{topology.domain}.\n"
    )
    text = head + render_zone(topology, zone_records(topology, vault))
    return dns.zone.from_text(text, origin=topology.domain, relativize=False, check_origin=True)


def test_every_catalogue_name_has_the_address_of_the_host_serving_it(lab_vault):
    a_records = records_of(LAB, lab_vault, "A")
    primary = LAB.primary_site.name
    for service in catalogue.SERVICES:
        for site in LAB.sites:
            for host in LAB.hosts_with_role(service.role, site.name):
                address = str(host.own_address(service) or host.public_address)
                for label in service.names:
                    assert address in a_records[f"{label}.{site.name}.{LAB.domain}"]
                    if site.name == primary:
                        assert a_records[f"{label}.{LAB.domain}"] == [address]
    assert a_records[LAB.content_origin] == [str(LAB.host("nj-web").public_address)]
    # Each exchanger's own name (its HELO) resolves to it; other hosts' names are not published.
    assert a_records["nj-mail.example.net"] == ["198.51.100.11"]
    assert "nj-gw.example.net" not in a_records
    assert set(client_addresses(LAB)) <= set(a_records)


def test_mail_goes_to_the_primary_sites_exchangers_first_and_spf_names_them_alone(lab_vault):
    assert records_of(LAB, lab_vault, "MX") == {
        "example.net": ["10 mx.nj.example.net.", "20 mx.sea.example.net."]
    }
    txt = records_of(LAB, lab_vault, "TXT")
    assert txt["example.net"] == ['"v=spf1 ip4:198.51.100.11 ip4:198.51.100.75 -all"']
    # Bounces come from the exchanger's own name: its SPF is its address.
    assert txt["nj-mail.example.net"] == txt["sea-mail.example.net"] == ['"v=spf1 a -all"']
    sea = dataclasses.replace(
        LAB,
        sites=tuple(dataclasses.replace(site, primary=site.name == "sea") for site in LAB.sites),
    )
    assert records_of(sea, lab_vault, "MX")["example.net"] == [
        "10 mx.sea.example.net.",
        "20 mx.nj.example.net.",
    ]


def test_tlsa_is_the_sha256_of_each_exchangers_public_key_as_openssl_computes_it(lab_vault):
    tlsa = records_of(LAB, lab_vault, "TLSA")
    assert sorted(tlsa) == ["_25._tcp.mx.nj.example.net", "_25._tcp.mx.sea.example.net"]
    for site, host in (("nj", "nj-mail"), ("sea", "sea-mail")):
        certificate = pki.host_certificate_chain(lab_vault, host)
        public = subprocess.run(
            ["openssl", "x509", "-noout", "-pubkey"],
            input=certificate.encode(), capture_output=True, check=True,
        ).stdout  # fmt: skip
        der = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "DER"],
            input=public, capture_output=True, check=True,
        ).stdout  # fmt: skip
        digest = (
            subprocess.run(
                ["openssl", "dgst", "-sha256", "-r"], input=der, capture_output=True, check=True
            )
            .stdout.split()[0]
            .decode()
        )
        assert tlsa[f"_25._tcp.mx.{site}.example.net"] == [f"3 1 1 {digest}"]


def test_discovery_names_the_implicit_tls_ports_and_refuses_the_plaintext_ones(lab_vault):
    srv = records_of(LAB, lab_vault, "SRV")
    assert srv == {
        "_imaps._tcp.example.net": ["0 1 993 imap.example.net."],
        "_pop3s._tcp.example.net": ["0 1 995 pop.example.net."],
        "_submissions._tcp.example.net": ["0 1 465 smtp.example.net."],
        "_submission._tcp.example.net": ["0 1 587 smtp.example.net."],
        "_caldavs._tcp.example.net": ["0 1 443 caldav.example.net."],
        "_carddavs._tcp.example.net": ["0 1 443 carddav.example.net."],
        "_autodiscover._tcp.example.net": ["0 1 443 autodiscover.example.net."],
        "_imap._tcp.example.net": ["0 0 0 ."],
        "_pop3._tcp.example.net": ["0 0 0 ."],
        "_caldav._tcp.example.net": ["0 0 0 ."],
        "_carddav._tcp.example.net": ["0 0 0 ."],
    }


def test_a_service_no_host_serves_gets_no_record(lab_vault):
    """Without the dav role anywhere, nothing announces CalDAV or CardDAV."""
    hosts = tuple(
        dataclasses.replace(host, roles=tuple(role for role in host.roles if role != "dav"))
        for host in LAB.hosts
    )
    # The directory lives beside dav: it goes too.
    hosts = tuple(
        dataclasses.replace(host, roles=tuple(r for r in host.roles if r != "directory"))
        for host in hosts
    )
    without = dataclasses.replace(LAB, hosts=hosts)
    names = {record.name for record in zone_records(without, lab_vault)}
    assert not {name for name in names if "caldav" in name or "carddav" in name}
    assert "_imaps._tcp.example.net" in names
    assert "caldav.example.net" in {record.name for record in zone_records(LAB, lab_vault)}


def test_caa_forbids_public_cas_unless_the_inventory_names_them(lab_vault):
    assert records_of(LAB, lab_vault, "CAA") == {"example.net": ['0 issue ";"']}
    named = dataclasses.replace(LAB, caa_issuers=("letsencrypt.org", "sectigo.com"))
    assert records_of(named, lab_vault, "CAA") == {
        "example.net": ['0 issue "letsencrypt.org"', '0 issue "sectigo.com"']
    }


def caa_problems(two_site_inventory, value) -> list[str]:
    two_site_inventory.set_platform("caa_issuers", value)
    path = two_site_inventory.write(f"caa-{uuid.uuid4().hex}.py")
    try:
        load_topology(path)
    except TopologyError as error:
        return [str(problem) for problem in error.problems]
    return []


@pytest.mark.parametrize("value", [["letsencrypt.org"], ["pki.goog", "letsencrypt.org"]])
def test_caa_issuers_are_ca_domains(two_site_inventory, value):
    assert caa_problems(two_site_inventory, value) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("letsencrypt.org", "expected a list of CA domains, got 'letsencrypt.org'"),
        ([], "expected a list of CA domains, got []"),
        (["Let's Encrypt"], "expected a CA's domain like 'letsencrypt.org', got \"Let's Encrypt\""),
        ([5], "expected a CA's domain like 'letsencrypt.org', got 5"),
    ],
)
def test_caa_issuers_that_are_not_ca_domains_are_refused_naming_the_field(
    two_site_inventory, value, message
):
    assert caa_problems(two_site_inventory, value) == [f"platform.caa_issuers: {message}"]


def test_the_fragment_is_a_zone_a_strict_parser_reads_back_record_for_record(lab_vault):
    zone = parsed_zone(LAB, lab_vault)
    records = zone_records(LAB, lab_vault)
    parsed = {
        (name.to_text().rstrip("."), dns.rdatatype.to_text(rdataset.rdtype), rdata.to_text())
        for name, rdataset in zone.iterate_rdatasets()
        for rdata in rdataset
        if rdataset.rdtype not in (dns.rdatatype.SOA, dns.rdatatype.NS)
    }
    assert parsed == {(r.name, r.type, r.data) for r in records}


def test_production_renders_byte_identically_twice_and_sorted(generated_vaults, tmp_path):
    production = load_topology(REPO / "inventory/production.py")
    vault = generated_vaults.copy(production, tmp_path).vault
    first = render_zone(production, zone_records(production, vault))
    assert first == render_zone(production, zone_records(production, vault))
    assert parsed_zone(production, vault)
    lines = [line for line in first.splitlines() if not line.startswith(";")]
    assert len(lines) == len(set(lines))


def test_the_lab_zone_and_config_are_what_knotd_loads(lab_vault, tmp_path):
    """knotc checks the configuration; the zone has the lab server's own address."""
    plan = build_plan(LAB, next(iter(load_inventory(REPO / "inventory/lab.py"))).data.dict())
    zone = lab_dns.render_lab_zone(LAB, plan, zone_records(LAB, lab_vault))
    (tmp_path / "example.net.zone").write_text(zone)
    outside = lab_dns.render_outside_zone(plan)
    (tmp_path / f"{lab_dns.OUTSIDE_DOMAIN}.zone").write_text(outside)
    reverse = lab_dns.render_reverse_zone(plan)
    (tmp_path / f"{lab_dns.reverse_zone_name(plan)}.zone").write_text(reverse)
    config = lab_dns.render_config(LAB, plan).replace(str(lab_dns.DNS_DIR), str(tmp_path))
    config = config.replace(f"    user: {lab_dns.USER}:{lab_dns.USER}\n", "")
    (tmp_path / "knot.conf").write_text(config)
    checked = subprocess.run(
        ["knotc", "-c", str(tmp_path / "knot.conf"), "conf-check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    parsed = dns.zone.from_text(zone, origin="example.net", relativize=False)
    assert parsed.get_rdataset("ns.example.net.", "A")[0].to_text() == str(plan.internet.ip)
    world = dns.zone.from_text(outside, origin=lab_dns.OUTSIDE_DOMAIN, relativize=False)
    (spf,) = world.get_rdataset(f"{lab_dns.OUTSIDE_DOMAIN}.", "TXT")
    assert spf.to_text() == f'"v=spf1 ip4:{plan.internet.ip} -all"'
    (mx,) = world.get_rdataset(f"{lab_dns.OUTSIDE_DOMAIN}.", "MX")
    assert mx.to_text() == f"10 {lab_dns.OUTSIDE_MX}."
    (address,) = world.get_rdataset(f"{lab_dns.OUTSIDE_MX}.", "A")
    assert address.to_text() == str(plan.internet.ip)
    ptr_zone = dns.zone.from_text(reverse, origin=lab_dns.reverse_zone_name(plan))
    ptr_name = dns.reversename.from_address(str(plan.internet.ip))
    (ptr,) = ptr_zone.get_rdataset(ptr_name, "PTR")
    assert ptr.to_text() == f"{lab_dns.OUTSIDE_MX}."


def test_bulwark_dns_prints_the_fragment_and_names_the_missing_vault_key(
    inventory_with_vault, monkeypatch
):
    inventory, vault = inventory_with_vault
    result = CliRunner().invoke(main, ["dns", str(inventory)])
    assert result.exit_code == 0, result.output
    topology = load_topology(inventory)
    assert result.output == render_zone(topology, zone_records(topology, vault))
    monkeypatch.delenv("BULWARK_VAULT_KEY")
    result = CliRunner().invoke(main, ["dns", str(inventory)])
    assert result.exit_code == 2
    assert "BULWARK_VAULT_KEY" in result.output


def test_the_audit_bundle_holds_the_zone_and_without_the_key_leaves_out_the_keyed_records(
    inventory_with_vault, monkeypatch, tmp_path
):
    """`bulwark render` writes what `bulwark dns` prints (dns.zone); an auditor without the
    vault's key gets every record but TLSA and DKIM, and a line saying so."""
    inventory, vault = inventory_with_vault
    topology = load_topology(inventory)
    keyed = CliRunner().invoke(main, ["render", str(inventory), "--out", str(tmp_path / "a")])
    assert keyed.exit_code == 0, keyed.output
    printed = CliRunner().invoke(main, ["dns", str(inventory)]).output
    assert (tmp_path / "a" / "dns.zone").read_text() == printed
    monkeypatch.delenv("BULWARK_VAULT_KEY")
    sealed = CliRunner().invoke(main, ["render", str(inventory), "--out", str(tmp_path / "b")])
    assert sealed.exit_code == 0, sealed.output
    text = (tmp_path / "b" / "dns.zone").read_text()
    assert "are left out" in text
    records = [line for line in text.splitlines() if not line.startswith(";")]
    expected = [
        record.line()
        for record in zone_records(topology, vault)
        if record.type != "TLSA" and "._domainkey." not in record.name
    ]
    assert records == expected
