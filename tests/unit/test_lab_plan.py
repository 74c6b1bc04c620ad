"""The lab's address and naming plan, from inventory/lab.py and from broken lab data."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from bulwark.errors import BulwarkError
from bulwark.inventory import load_inventory, load_topology
from bulwark.lab import hostsfile
from bulwark.lab.plan import LabPlan, build_plan, link_name

LAB = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"


@pytest.fixture(scope="module")
def lab_data() -> dict:
    return dict(next(iter(load_inventory(LAB))).data.dict())


@pytest.fixture(scope="module")
def topology():
    return load_topology(LAB)


@pytest.fixture(scope="module")
def plan(topology, lab_data) -> LabPlan:
    return build_plan(topology, lab_data)


def test_every_inventory_host_gets_a_container(plan, topology):
    assert [host.name for host in plan.hosts] == [host.name for host in topology.hosts]


def test_interfaces_carry_inventory_addresses_with_their_segment_prefix(plan, topology):
    for host in plan.hosts:
        inventory_host = topology.host(host.name)
        site = topology.site(host.site)
        assert host.lan == ipaddress.IPv4Interface(
            f"{inventory_host.lan_address}/{site.lan.prefixlen}"
        )
        assert host.management.ip == inventory_host.management_address
        assert host.management.network == plan.bridge.network
        assert host.public.ip == inventory_host.public_address
        assert host.public.network == plan.wan


def test_a_proxy_hosts_own_addresses_join_its_wan_interface(plan, topology):
    """Each proxy name's address sits on the gateway's wan0 beside its own (the WAN is one
    segment with the internet namespace: no route needed), inside the blackholed lab_wan."""
    for host in plan.hosts:
        inventory_host = topology.host(host.name)
        assert [extra.ip for extra in host.extra_public] == [
            address for _, address in inventory_host.proxy_addresses
        ]
        assert all(extra.network == plan.wan for extra in host.extra_public)
    assert sum(len(host.extra_public) for host in plan.hosts) == 6


def test_the_proxy_names_resolve_to_their_own_addresses(topology):
    names = hostsfile.host_names(topology)
    for gateway in topology.hosts_with_role("proxy"):
        for label, address in gateway.proxy_addresses:
            assert names[f"{label}.{gateway.site}.{topology.domain}"] == str(address)
    primary = topology.hosts_with_role("proxy", topology.primary_site.name)[0]
    assert names[f"imaps-proxy.{topology.domain}"] == str(primary.proxy_address("imaps-proxy"))
    assert names[f"imap.{topology.domain}"] != names[f"imaps-proxy.{topology.domain}"]


def test_a_proxy_address_outside_the_lab_wan_is_refused(topology, lab_data):
    gateway = topology.host("nj-gw")
    moved = dataclasses.replace(
        gateway,
        proxy_addresses=(("imaps-proxy", ipaddress.IPv4Address("203.0.113.13")),),
    )
    broken = dataclasses.replace(
        topology, hosts=tuple(moved if h is gateway else h for h in topology.hosts)
    )
    with pytest.raises(BulwarkError, match=r"nj-gw.proxy_addresses.imaps-proxy 203.0.113.13 is "
                       r"outside lab_wan 198.51.100.0/24"):  # fmt: skip
        build_plan(broken, lab_data)


def test_every_lab_range_is_blackholed(plan, topology):
    expected = {plan.wan, plan.bridge.network}
    for site in topology.sites:
        expected |= {site.lan, site.public, site.management}
    assert set(plan.ranges) == expected


def test_management_ranges_narrower_than_the_bridge_get_explicit_routes(plan, topology):
    assert set(plan.management_routes) == {site.management for site in topology.sites}


def test_names_are_unique_and_fit_the_kernel(plan):
    namespaces = plan.namespaces
    assert len(set(namespaces)) == len(namespaces)
    ports = [host.management_port for host in plan.hosts]
    assert len(set(ports)) == len(ports)
    assert all(len(name) <= 15 for name in ports + [host.switch_port for host in plan.hosts])


def test_long_link_names_are_shortened_deterministically():
    long_name = "a-very-long-host-name"
    assert link_name("bwl-m-", long_name) == link_name("bwl-m-", long_name)
    assert len(link_name("bwl-m-", long_name)) == 15
    assert link_name("bwl-m-", long_name) != link_name("bwl-m-", long_name + "2")
    assert link_name("bwl-m-", "nj-gw") == "bwl-m-nj-gw"


def test_ssh_settings_come_from_the_inventory(plan, lab_data):
    assert plan.ssh.config_file == lab_data["ssh_config_file"]
    assert plan.ssh.known_hosts_file == lab_data["ssh_known_hosts_file"]
    assert plan.ssh.key == lab_data["ssh_key"]


def test_unknown_host_is_an_error_naming_the_hosts(plan):
    with pytest.raises(BulwarkError, match="nj-gw"):
        plan.host("nowhere")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lab_wan", None, "lacks the lab's fields: lab_wan"),
        ("lab_management_bridge", "10.99.0.1/24", "outside lab_management_bridge"),
        ("lab_wan", "203.0.113.0/24", "outside lab_wan"),
        ("lab_internet_address", "198.51.100.10", "also a host's public_address"),
        ("lab_internet_address", "198.51.100.255", "not a host address"),
        ("apt_proxy", "http://10.89.0.5:3142", "must be on lab_management_bridge"),
        ("lab_wan", "not a network", "inventory lab fields"),
    ],
)
def test_inconsistent_lab_data_is_refused(topology, lab_data, field, value, message):
    with pytest.raises(BulwarkError, match=message):
        build_plan(topology, {**lab_data, field: value})


def test_bridge_address_may_not_be_a_host(topology, lab_data):
    with pytest.raises(BulwarkError, match="also a host's management_address"):
        build_plan(topology, {**lab_data, "lab_management_bridge": "10.89.0.10/24"})
