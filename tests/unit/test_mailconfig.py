"""The mailconfig role, rendered offline: what each client's configuration says (parsed as the
client parses it), the MTA-STS policy and its DNS id, what nginx serves them on, and placement
(the lab proves the serving: tests/e2e/test_mailconfig.py)."""

from __future__ import annotations

import dataclasses
import plistlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from nginxconf import Block, http_block, is_default, ports, server_names

from bulwark import catalogue, dns, mailconfig
from bulwark.audit import SealedSecrets
from bulwark.inventory import load_topology
from bulwark.render import render_host_configs
from bulwark.topology import Topology
from roles import mailconfig as role

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")
AUTODISCOVER_NS = {
    "r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
}


def rendered(topology: Topology, host_name: str = "nj-web") -> dict[str, str]:
    files = render_host_configs(topology, topology.host(host_name), SealedSecrets(), reveal=False)
    return {item.path: item.content for item in files}


def without_dav(topology: Topology) -> Topology:
    """The topology with dav, and what needs it beside it, on no host (the mail alone)."""
    gone = {"dav", "directory", "files"}
    hosts = tuple(
        dataclasses.replace(host, roles=tuple(r for r in host.roles if r not in gone))
        for host in topology.hosts
    )
    return dataclasses.replace(topology, hosts=hosts)


@pytest.mark.parametrize("topology", [LAB, PRODUCTION], ids=["lab", "production"])
def test_thunderbird_is_told_the_implicit_tls_ports_and_the_full_address(topology: Topology):
    tree = ET.fromstring(rendered(topology)[mailconfig.THUNDERBIRD_FILE])  # noqa: S314 - ours
    provider = tree.find("emailProvider")
    assert provider.get("id") == topology.domain
    assert provider.findtext("domain") == topology.domain
    servers = [
        (s.tag, s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in provider
        if s.tag in ("incomingServer", "outgoingServer")
    ]
    domain = topology.domain
    assert servers == [
        ("incomingServer", "imap", f"imap.{domain}", "993", "SSL"),
        ("incomingServer", "pop3", f"pop.{domain}", "995", "SSL"),
        ("outgoingServer", "smtp", f"smtp.{domain}", "465", "SSL"),
    ]
    for server in provider.iter():
        if server.tag in ("incomingServer", "outgoingServer"):
            assert server.findtext("username") == "%EMAILADDRESS%"
            assert server.findtext("authentication") == "password-cleartext"
    assert tree.find("addressBook/serverURL").text == f"https://carddav.{domain}/"
    assert tree.find("calendar/serverURL").text == f"https://caldav.{domain}/"


def test_the_ports_come_from_the_catalogue():
    """The configurations name each service's catalogue port, never a number of their own."""
    settings = mailconfig.client_settings(LAB)
    assert [(s["type"], s["port"]) for s in settings["incoming"]] == [
        ("imap", catalogue.service("imaps").port),
        ("pop3", catalogue.service("pop3s").port),
    ]
    assert settings["outgoing"]["port"] == catalogue.service("submissions").port


def test_outlook_gets_the_same_servers_whatever_it_posts():
    tree = ET.fromstring(rendered(LAB)[mailconfig.AUTODISCOVER_FILE])  # noqa: S314 - ours
    protocols = [
        (p.findtext("r:Type", namespaces=AUTODISCOVER_NS),
         p.findtext("r:Server", namespaces=AUTODISCOVER_NS),
         p.findtext("r:Port", namespaces=AUTODISCOVER_NS),
         p.findtext("r:SSL", namespaces=AUTODISCOVER_NS),
         p.findtext("r:SPA", namespaces=AUTODISCOVER_NS))
        for p in tree.iterfind("r:Response/r:Account/r:Protocol", AUTODISCOVER_NS)
    ]  # fmt: skip
    assert protocols == [
        ("IMAP", "imap.example.net", "993", "on", "off"),
        ("POP3", "pop.example.net", "995", "on", "off"),
        ("SMTP", "smtp.example.net", "465", "on", "off"),
    ]


def test_the_apple_profile_is_a_valid_plist_with_stable_unique_identifiers():
    profile = plistlib.loads(rendered(LAB)[mailconfig.APPLE_PROFILE_FILE].encode())
    assert profile["PayloadType"] == "Configuration"
    payloads = {item["PayloadType"]: item for item in profile["PayloadContent"]}
    assert sorted(payloads) == [
        "com.apple.caldav.account",
        "com.apple.carddav.account",
        "com.apple.mail.managed",
    ]
    mail = payloads["com.apple.mail.managed"]
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == (
        "imap.example.net",
        993,
    )
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"]) == (
        "smtp.example.net",
        465,
    )
    assert mail["IncomingMailServerUseSSL"] and mail["OutgoingMailServerUseSSL"]
    # No address and no password in the profile: the device asks for both.
    assert not {"EmailAddress", "IncomingMailServerUsername", "IncomingPassword"} & set(mail)
    assert payloads["com.apple.caldav.account"]["CalDAVHostName"] == "caldav.example.net"
    assert payloads["com.apple.carddav.account"]["CardDAVUseSSL"] is True
    uuids = [profile["PayloadUUID"], *(item["PayloadUUID"] for item in payloads.values())]
    assert len(set(uuids)) == len(uuids)
    again = plistlib.loads(rendered(LAB, "sea-web")[mailconfig.APPLE_PROFILE_FILE].encode())
    assert again["PayloadUUID"] == profile["PayloadUUID"]
    other = plistlib.loads(rendered(PRODUCTION)[mailconfig.APPLE_PROFILE_FILE].encode())
    assert other["PayloadUUID"] != profile["PayloadUUID"]


def test_without_dav_the_configurations_offer_mail_alone():
    topology = without_dav(LAB)
    settings = mailconfig.client_settings(topology)
    assert settings["dav"] == {}
    assert [s["type"] for s in settings["incoming"]] == ["imap", "pop3"]


def test_the_mta_sts_policy_names_every_exchanger_and_its_id_follows_it(lab_vault):
    policy = rendered(LAB)[mailconfig.MTA_STS_FILE]
    assert policy == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx.nj.example.net\r\nmx: mx.sea.example.net\r\n"
        "max_age: 604800\r\n"
    )
    assert rendered(LAB, "sea-web")[mailconfig.MTA_STS_FILE] == policy
    mx_targets = {
        record.data.split()[1].rstrip(".")
        for record in dns.zone_records(LAB, lab_vault)
        if record.type == "MX"
    }
    assert set(re.findall(r"^mx: (\S+)\r$", policy, re.M)) == mx_targets
    txt = [r.data for r in dns.zone_records(LAB, lab_vault) if r.name == "_mta-sts.example.net"]
    assert txt == [f'"v=STSv1; id={dns.mta_sts_id(LAB)}"']
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", dns.mta_sts_id(LAB))
    one_site = dataclasses.replace(
        LAB,
        hosts=tuple(
            dataclasses.replace(host, roles=tuple(r for r in host.roles if r != "mx"))
            if host.site == "sea"
            else host
            for host in LAB.hosts
        ),
    )
    assert "mx.sea" not in dns.mta_sts_policy(one_site)
    assert dns.mta_sts_id(one_site) != dns.mta_sts_id(LAB)


def test_no_policy_record_without_the_role_at_the_primary(lab_vault):
    hosts = tuple(
        dataclasses.replace(host, roles=tuple(r for r in host.roles if r != "mailconfig"))
        for host in LAB.hosts
    )
    topology = dataclasses.replace(LAB, hosts=hosts)
    records = dns.zone_records(topology, lab_vault)
    names = {record.name for record in records}
    assert "_mta-sts.example.net" not in names
    assert not {name for name in names if name.split(".")[0] in ("autoconfig", "mta-sts")}
    assert "_autodiscover._tcp.example.net" not in names


@pytest.mark.parametrize("host_name", ["nj-web", "sea-web"])
def test_nginx_serves_each_file_on_its_name_and_nothing_else(host_name: str):
    servers = {
        tuple(server_names(server)): server
        for server in http_block(LAB, host_name).named("server")
        if "443" in ports(server) and not is_default(server)
    }
    site = LAB.host(host_name).site

    def server(label: str) -> Block:
        return servers[(f"{label}.example.net", f"{label}.{site}.example.net")]

    def served(label: str) -> dict[str, str]:
        return {
            block.header[-1]: block.directive("alias")[0][0]
            for block in server(label).named("location")
            if block.directive("alias")
        }

    assert served("autoconfig") == {
        "/mail/config-v1.1.xml": mailconfig.THUNDERBIRD_FILE,
        "/.well-known/autoconfig/mail/config-v1.1.xml": mailconfig.THUNDERBIRD_FILE,
        "/apple.mobileconfig": mailconfig.APPLE_PROFILE_FILE,
    }
    assert served("autodiscover") == {
        r"^/autodiscover/autodiscover\.xml$": mailconfig.AUTODISCOVER_FILE
    }
    assert served("mta-sts") == {"/.well-known/mta-sts.txt": mailconfig.MTA_STS_FILE}
    for label in ("autoconfig", "autodiscover", "mta-sts"):
        (fallback,) = server(label).named("location", "/")
        assert fallback.directive("return") == [["404"]]
        assert not [b for b in server(label).walk() if b.directive("auth_request")]


def test_the_files_are_world_readable_and_the_directory_too():
    files = {managed.path: managed for managed in role.managed_files(LAB, LAB.host("nj-web"))}
    assert sorted(files) == sorted(
        (
            mailconfig.THUNDERBIRD_FILE,
            mailconfig.AUTODISCOVER_FILE,
            mailconfig.APPLE_PROFILE_FILE,
            mailconfig.MTA_STS_FILE,
        )
    )
    assert {managed.mode for managed in files.values()} == {"0644"}
