"""The firewall and vpn roles, rendered offline from the lab and production inventories.

Every host's ruleset passes `nft -c`; its openings are exactly the catalogue's for its roles; the
WireGuard configuration peers each gateway with the other site's, with keys from the vault.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from bulwark import bruteforce, catalogue, registry
from bulwark.audit import SealedSecrets
from bulwark.exposure import host_openings, public_ports
from bulwark.inventory import load_topology
from bulwark.platform_secrets import wireguard_public_key
from bulwark.render import render_host_configs, render_role_files
from bulwark.vault import Vault
from roles import firewall, vpn

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")


def _file(topology, host_name: str, path: str, secrets=None) -> str:
    host = topology.host(host_name)
    files = render_host_configs(topology, host, secrets or SealedSecrets(), reveal=False)
    return next(item.content for item in files if item.path == path)


def _ruleset(topology, host_name: str) -> str:
    """The firewall role's ruleset alone (renders under `every_role_deployed` too)."""
    host = topology.host(host_name)
    (ruleset,) = render_role_files(firewall, topology, host, SealedSecrets(), reveal=False)
    return ruleset.content


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables not installed (make checkers)")
@pytest.mark.parametrize(
    "topology,host_name",
    [(LAB, host.name) for host in LAB.hosts]
    + [(PRODUCTION, host.name) for host in PRODUCTION.hosts],
)
def test_every_ruleset_passes_nft_check(tmp_path: Path, topology, host_name: str) -> None:
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_text(_file(topology, host_name, firewall.RULESET))
    result = subprocess.run(["nft", "-c", "-f", str(ruleset)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ruleset_defaults_drop_and_opens_exactly_the_hosts_services() -> None:
    ruleset = _file(LAB, "nj-mail", firewall.RULESET)
    assert "type filter hook input priority filter; policy drop;" in ruleset
    assert "type filter hook forward priority filter; policy drop;" in ruleset
    assert ruleset.startswith("#!/usr/sbin/nft -f") and "\nflush ruleset\n" in ruleset
    accepted = {
        line.split(" dport ")[1].split(" ct state")[0]
        for line in ruleset.splitlines()
        if " dport " in line and line.strip().endswith('"') and "accept" in line
    }
    assert accepted == {"25", "465", "587", "993", "995", "24", "12345", "22"} | {
        "10465",  # the site's proxies, a PROXY header first
        "10993",
        "10995",
    }
    for forbidden in catalogue.FORBIDDEN_PORTS:
        assert f"dport {forbidden} " not in ruleset


def _set_elements(ruleset: str, name: str) -> str:
    return ruleset.split(f"\tset {name} {{\n", 1)[1].split("elements = { ", 1)[1].split(" }")[0]


@pytest.mark.parametrize(
    ("topology", "store", "mx", "peer"),
    [(LAB, "nj-mail", "nj-mail", "sea-mail"), (PRODUCTION, "sea-store", "sea-mx", "nj-store")],
)
def test_lmtp_opens_to_the_sites_mx_hosts_and_replication_to_the_peer_store(
    topology, store, mx, peer
) -> None:
    ruleset = _file(topology, store, firewall.RULESET)
    lmtp, replication = (catalogue.service(name).port for name in ("lmtp", "mail-replication"))
    lmtp_rule = f'ip saddr @lmtp_clients_v4 tcp dport {lmtp} ct state new accept comment "lmtp"'
    assert [line.strip() for line in ruleset.splitlines() if f"dport {lmtp} " in line] == [
        lmtp_rule
    ]
    assert (
        f"ip saddr @mail_replication_clients_v4 tcp dport {replication} ct state new accept "
        'comment "mail-replication"' in ruleset
    )
    assert _set_elements(ruleset, "lmtp_clients_v4") == str(topology.host(mx).lan_address)
    assert _set_elements(ruleset, "mail_replication_clients_v4") == str(
        topology.host(peer).lan_address
    )


def test_a_client_role_without_a_host_gets_no_rule_and_no_set() -> None:
    from dataclasses import replace

    without_mx = replace(
        PRODUCTION,
        hosts=tuple(
            replace(host, roles=()) if host.name == "nj-mx" else host for host in PRODUCTION.hosts
        ),
    )
    ruleset = _file(without_mx, "nj-store", firewall.RULESET)
    assert "dport 24 " not in ruleset
    assert "lmtp_clients_v4" not in ruleset
    assert "mail_replication_clients_v4" in ruleset


@pytest.mark.parametrize(
    ("topology", "host_name", "ports"),
    [
        (LAB, "nj-mail", "{ 25, 465, 587, 993, 995 }"),
        (PRODUCTION, "nj-mx", "{ 25, 465, 587 }"),
        (PRODUCTION, "sea-store", "{ 993, 995 }"),
    ],
)
def test_banned_addresses_are_dropped_on_the_public_ports_never_from_operators_or_sites(
    topology, host_name, ports
) -> None:
    ruleset = _file(topology, host_name, firewall.RULESET)
    lines = [line.strip() for line in ruleset.splitlines()]
    ban = (
        f"ip saddr @{bruteforce.BAN_SET} ip saddr != @management_v4 ip saddr != @site_lans_v4 "
        f"tcp dport {ports} drop"
    )
    # Before established connections are accepted: a banned address's open ones stop too.
    assert lines.index(ban) < lines.index("ct state { established, related } accept")
    ban_set = ruleset.split(f"\tset {bruteforce.BAN_SET} {{\n", 1)[1].split("}", 1)[0]
    assert "flags dynamic,timeout" in ban_set  # its elements stay out of the live digest
    assert f"timeout {bruteforce.BAN_MINUTES}m" in ban_set
    sites = ", ".join(str(site.lan) for site in sorted(topology.sites, key=lambda s: s.lan))
    assert _set_elements(ruleset, "site_lans_v4") == sites


@pytest.mark.parametrize("host_name", ["nj-gw", "sea-gw"])
def test_hosts_without_logins_have_no_ban(host_name) -> None:
    assert bruteforce.BAN_SET not in _file(LAB, host_name, firewall.RULESET)


def test_ssh_only_from_management_and_admin_networks_rate_limited() -> None:
    ruleset = _file(PRODUCTION, "nj-mx", firewall.RULESET)
    assert "elements = { 10.101.0.0/24, 10.102.0.0/24, 203.0.113.0/28 }" in ruleset
    ssh_rules = [line.strip() for line in ruleset.splitlines() if "dport 22 " in line]
    assert ssh_rules[0].endswith("} drop") and "limit rate over" in ssh_rules[0]
    assert ssh_rules[1].startswith("ip saddr @management_v4 tcp dport 22 ")


def test_wireguard_only_from_the_peer_gateway() -> None:
    ruleset = _file(LAB, "nj-gw", firewall.RULESET)
    sea_gw = LAB.gateway("sea").public_address
    assert f"ip saddr {{ {sea_gw}/32 }} udp dport 51820 ct state new accept" in ruleset
    assert "udp dport 51820" not in _file(LAB, "nj-mail", firewall.RULESET)


def test_only_gateways_forward_and_only_between_lan_and_tunnel() -> None:
    gateway = _file(LAB, "nj-gw", firewall.RULESET)
    assert 'ip saddr 10.81.1.0/24 ip daddr { 10.82.1.0/24 } oifname "wg0" accept' in gateway
    assert 'iifname "wg0" ip saddr { 10.82.1.0/24 } ip daddr 10.81.1.0/24 accept' in gateway
    mail = _file(LAB, "nj-mail", firewall.RULESET)
    forward = mail.split("chain forward {")[1].split("}")[0]
    assert "accept" not in forward


@pytest.mark.usefixtures("every_role_deployed")
def test_ftp_passive_range_is_one_rule() -> None:
    assert firewall.nft_ports(range(50000, 50101)) == "50000-50100"
    assert firewall.nft_ports([993]) == "993"
    assert firewall.nft_ports([80, 21, 25]) == "{ 21, 25, 80 }"
    assert "tcp dport 50000-50100 ct state new accept" in _ruleset(LAB, "nj-web")


@pytest.mark.parametrize(
    ("ports", "written"),
    [
        ([21, 80, 443, *range(50000, 50101)], "{ 21, 80, 443, 50000-50100 }"),
        ([*range(50000, 50101), 21], "{ 21, 50000-50100 }"),
        ([21, 22, 80], "{ 21-22, 80 }"),
        ([1, 2, 3, 5, 7, 8], "{ 1-3, 5, 7-8 }"),
        ([443, 443, 80, 80], "{ 80, 443 }"),
        ([8731, 8730], "8730-8731"),
        ((25,), "25"),
    ],
)
def test_nft_ports_writes_each_run_of_ports_as_a_range(ports, written) -> None:
    """A set of ports keeps each run of consecutive ones a range: a web host's public ports
    (the ban rule) stay five elements, not a hundred and four."""
    assert firewall.nft_ports(ports) == written


def test_a_web_hosts_ban_covers_its_public_ports_in_ranges() -> None:
    """A banned address is dropped on every public port of the host, FTP's passive range
    included (no data connection either) and LDAPS, in one rule whose runs are ranges."""
    ruleset = _ruleset(LAB, "nj-web")
    ban = [line.strip() for line in ruleset.splitlines() if f"@{bruteforce.BAN_SET} " in line]
    assert ban == [
        f"ip saddr @{bruteforce.BAN_SET} ip saddr != @management_v4 ip saddr != @site_lans_v4 "
        "tcp dport { 21, 80, 443, 636, 50000-50100 } drop"
    ]


@pytest.mark.usefixtures("every_role_deployed")
def test_public_ports_match_the_catalogue_per_role() -> None:
    assert public_ports(LAB, LAB.host("nj-gw")) == {"tcp": catalogue.PROXY_PORTS}
    assert public_ports(LAB, LAB.host("nj-web")) == {
        "tcp": (21, 80, 443, 636, *range(50000, 50101))
    }
    backup = PRODUCTION.host("nj-backup")
    assert public_ports(PRODUCTION, backup) == {}
    openings = {opening.service.name: opening for opening in host_openings(PRODUCTION, backup)}
    assert set(openings) == {"ssh", "backup", "tang"}
    # Tang answers only the other site's hosts (over the VPN), never its own site's.
    assert {str(source.network_address) for source in openings["tang"].sources} == {
        str(host.lan_address) for host in PRODUCTION.hosts if host.site != backup.site
    }


def test_wireguard_config_peers_the_gateways(lab_vault: Vault) -> None:
    config = _file(LAB, "nj-gw", vpn.WG_CONFIG, lab_vault)
    sea_private = lab_vault.get("wireguard/sea-gw/private").reveal()
    assert f"PublicKey = {wireguard_public_key(sea_private)}" in config
    assert "AllowedIPs = 10.82.1.0/24" in config
    assert f"Endpoint = {LAB.gateway('sea').public_address}:51820" in config
    assert "Address = 10.81.1.10/32" in config
    # A restarted gateway handshakes at once instead of waiting for its peer to notice.
    assert f"PersistentKeepalive = {vpn.KEEPALIVE_SECONDS}" in config
    for name in ("wireguard/nj-gw/private", "wireguard/psk/nj-sea"):
        assert lab_vault.get(name).reveal() not in config
        assert f"<secret:{name} sha256:{lab_vault.get(name).digest}>" in config


def test_wireguard_config_reveals_keys_only_for_deploy(lab_vault: Vault) -> None:
    host = LAB.host("sea-gw")
    files = render_host_configs(LAB, host, lab_vault, reveal=True)
    wg = next(item for item in files if item.path == vpn.WG_CONFIG)
    assert wg.holds_secrets and wg.mode == "0600"
    assert f"PrivateKey = {lab_vault.get('wireguard/sea-gw/private').reveal()}" in wg.content
    assert not next(item for item in files if item.path == firewall.RULESET).holds_secrets


def test_non_gateways_route_the_other_site_through_their_gateway() -> None:
    unit = _file(LAB, "sea-web", vpn.ROUTES_UNIT)
    assert "ExecStart=/sbin/ip route replace 10.81.1.0/24 via 10.82.1.10" in unit
    paths = {item.path for item in render_host_configs(LAB, LAB.host("sea-web"), SealedSecrets())}
    assert vpn.WG_CONFIG not in paths


def test_a_third_site_is_a_data_change() -> None:
    """AllowedIPs and peers come from the topology: adding a site adds a peer, no code."""
    from dataclasses import replace

    from bulwark.topology import Host, Site

    network, address = ipaddress.IPv4Network, ipaddress.IPv4Address
    chi = Site(
        "chi",
        "lab: Chicago",
        False,
        network("10.83.1.0/24"),
        network("198.51.100.128/26"),
        network("10.89.0.128/26"),
    )
    chi_gw = Host(
        "chi-gw",
        "chi",
        ("gateway",),
        address("10.83.1.10"),
        address("10.89.0.138"),
        address("198.51.100.138"),
    )
    three = replace(LAB, sites=(*LAB.sites, chi), hosts=(*LAB.hosts, chi_gw))
    ruleset = _file(three, "nj-gw", firewall.RULESET)
    assert "ip daddr { 10.82.1.0/24, 10.83.1.0/24 }" in ruleset
    config = _file(three, "nj-gw", vpn.WG_CONFIG)
    assert config.count("[Peer]") == 2 and "AllowedIPs = 10.83.1.0/24" in config


@pytest.mark.parametrize(
    ("topology", "host_name"),
    [(LAB, host.name) for host in LAB.hosts]
    + [(PRODUCTION, host.name) for host in PRODUCTION.hosts],
)
def test_no_port_is_open_for_a_role_without_a_module(topology, host_name) -> None:
    """The ruleset opens only services of deployed roles, and SSH; nothing of proxy,
    directory or backup, which have no module yet."""
    host = topology.host(host_name)
    deployed = {role.name for role in registry.deployed_roles(host)}
    openings = host_openings(topology, host)
    assert {opening.service.role for opening in openings} <= deployed
    ruleset = _file(topology, host_name, firewall.RULESET)
    opened = {
        name
        for line in ruleset.splitlines()
        if " accept comment " in line
        for name in line.split(' comment "')[1].rstrip('"').split(", ")
    }
    assert opened == {opening.service.name for opening in openings}
    waiting = {
        port
        for service in catalogue.SERVICES
        if not registry.role(service.role).implemented
        for port in service.ports
    } - {port for opening in openings for port in opening.service.ports}
    for port in sorted(waiting & {21, 80, 443, 636, 8443, 50000}):
        assert f"dport {port} " not in ruleset, (host_name, port)
