"""The proxy role and what it asks of the firewall and the mail roles, rendered offline from the
lab and production inventories (the lab proves the behaviour: tests/e2e/test_proxy.py)."""

from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path

import pytest

from bulwark import catalogue, checks
from bulwark.audit import SealedSecrets, port_matrix
from bulwark.inventory import load_topology
from bulwark.pki import certificate_names
from bulwark.probes import expected_ports
from bulwark.render import render_host_configs
from bulwark.topology import Topology
from roles import firewall, proxy

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")


def _file(topology: Topology, host_name: str, path: str) -> str:
    files = render_host_configs(topology, topology.host(host_name), SealedSecrets(), reveal=False)
    return next(item.content for item in files if item.path == path)


@pytest.mark.parametrize("topology", [LAB, PRODUCTION], ids=["lab", "production"])
def test_every_port_but_ssh_reaches_each_proxys_listener(topology: Topology):
    """Per proxy address: every TCP port but SSH's translated to the proxy's listener there,
    the input rule accepting that listener on that address alone, nginx listening on it."""
    for gateway in topology.hosts_with_role("proxy"):
        ruleset = _file(topology, gateway.name, firewall.RULESET)
        config = _file(topology, gateway.name, proxy.CONFIG)
        assert "type nat hook prerouting priority dstnat; policy accept;" in ruleset
        for service in catalogue.proxies():
            address = gateway.proxy_address(service.name)
            assert (
                f"ip daddr {address} tcp dport {{ 1-21, 23-65535 }} "
                f'dnat ip to {address}:{service.listen} comment "{service.name}"'
            ) in ruleset
            assert (
                f"ip daddr {address} tcp dport {service.listen} ct state new accept "
                f'comment "{service.name}"'
            ) in ruleset
            assert f"listen {address}:{service.listen};" in config
        # Nothing of the proxies is open on the gateway's own address.
        assert not re.search(rf"ip daddr {gateway.public_address} ", ruleset)


def test_each_site_proxies_to_its_own_mail_hosts_with_the_proxy_protocol():
    """Upstreams are the proxied listeners on the LAN addresses of the proxy's own site:
    nothing crosses the WAN, and every connection starts with the client's address."""
    for gateway in LAB.hosts_with_role("proxy"):
        config = _file(LAB, gateway.name, proxy.CONFIG)
        assert re.search(r"^\tproxy_protocol on;$", config, re.M)
        assert "ssl" not in config  # passed through: the proxy holds no key
        upstreams = set(re.findall(r"^\t\tserver (\S+);$", config, re.M))
        site_lan = LAB.site(gateway.site).lan
        mail = [host for host in LAB.hosts if host.site == gateway.site and host.has_role("mx")]
        assert upstreams == {
            f"{host.lan_address}:{catalogue.service(name).port}"
            for host in mail
            for name in ("imaps-proxied", "pop3s-proxied", "submissions-proxied")
        }
        assert all(ipaddress.ip_address(item.split(":")[0]) in site_lan for item in upstreams)


def test_the_mail_hosts_proxied_listeners_trust_the_sites_proxies_alone():
    """Dovecot takes a PROXY header from the site's proxy hosts alone (it refuses anyone
    else's); Postfix takes any, so its listener is on the LAN address and the firewall admits
    the proxies alone."""
    for mail in LAB.hosts_with_role("mailstore"):
        proxies = [str(host.lan_address) for host in LAB.hosts_with_role("proxy", mail.site)]
        dovecot = _file(LAB, mail.name, "/etc/dovecot/dovecot.conf")
        assert f"haproxy_trusted_networks = {' '.join(f'{a}/32' for a in proxies)}" in dovecot
        assert dovecot.count("haproxy = yes") == 2
        assert f"address = {mail.lan_address}\n    port = 10993" in dovecot
        master = _file(LAB, mail.name, "/etc/postfix/master.cf")
        assert f"\n{mail.lan_address}:10465 inet" in master
        ruleset = _file(LAB, mail.name, firewall.RULESET)
        for name in ("imaps_proxied", "pop3s_proxied", "submissions_proxied"):
            block = re.search(rf"set {name}_clients_v4 {{[^}}]*}}", ruleset).group()
            assert f"elements = {{ {', '.join(proxies)} }}" in block


def test_a_site_without_a_proxy_gets_no_proxied_listener(two_site_inventory):
    """No proxy host in a site, no proxied listener, rule or expected socket there."""
    two_site_inventory.host("sea-gw")["roles"] = ["gateway"]
    del two_site_inventory.host("sea-gw")["proxy_addresses"]
    topology = load_topology(two_site_inventory.write())
    sea_mail = topology.host("sea-mail")
    assert "haproxy" not in _file(topology, "sea-mail", "/etc/dovecot/dovecot.conf")
    assert "proxied" not in _file(topology, "sea-mail", "/etc/postfix/master.cf")
    assert "proxied" not in _file(topology, "sea-mail", firewall.RULESET)
    assert not [port for port in expected_ports(topology, sea_mail) if "proxied" in port.service]
    nj_ports = {port.service for port in expected_ports(topology, topology.host("nj-mail"))}
    assert {"imaps-proxied", "pop3s-proxied", "submissions-proxied"} <= nj_ports


def test_the_port_matrix_shows_each_proxy_address_with_its_whole_range():
    rows = [row for row in port_matrix(LAB) if row["host"] == "nj-gw" and "address" in row]
    assert [
        (row["service"], row["address"], row["ports"], row["translated_to"]) for row in rows
    ] == [
        ("imaps-proxy", "198.51.100.13", "1-21, 23-65535", 993),
        ("pops-proxy", "198.51.100.14", "1-21, 23-65535", 995),
        ("smtps-proxy", "198.51.100.15", "1-21, 23-65535", 465),
    ]
    assert {row["sources"] for row in rows} == {"any"}


def test_the_proxy_names_are_on_the_mail_hosts_certificates_not_the_gateways():
    """TLS is passed through: the mail host answers the handshake for the proxy names."""
    assert not [name for name in certificate_names(LAB, LAB.host("nj-gw")) if "proxy" in name]
    assert {
        "imaps-proxy.example.net",
        "pops-proxy.nj.example.net",
        "smtps-proxy.example.net",
    } <= set(certificate_names(LAB, LAB.host("nj-mail")))


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed (make checkers)")
def test_the_proxy_configuration_passes_nginx_t(tmp_path: Path):
    assert checks.CHECKERS["nginx"][1](_file(LAB, "nj-gw", proxy.CONFIG), tmp_path) is None
