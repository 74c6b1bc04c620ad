"""The lab's pure checks of the controller: apt sources, apt-cacher-ng config, range overlaps."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bulwark.errors import BulwarkError
from bulwark.inventory import load_inventory, load_topology
from bulwark.lab import aptcache, aptsources
from bulwark.lab.network import ControllerRoute, foreign_overlaps
from bulwark.lab.plan import build_plan

LAB = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def _write_apt_root(tmp_path: Path, sources: str, one_line: str = "") -> Path:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    (tmp_path / "sources.list.d" / "other.list").write_text(
        "deb [signed-by=/k.gpg] https://packages.example/apt stable main\n"
    )
    (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_deb822_binary_entries_per_suite():
    sources = aptsources.parse_deb822(DEB822)
    assert [source.line for source in sources] == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]


def test_one_line_entries_drop_options_and_comments():
    text = "# deb http://old/debian buster main\ndeb [arch=amd64] http://m/debian bookworm main x\n"
    assert aptsources.parse_one_line(text) == [
        aptsources.AptSource("http://m/debian", "bookworm", ("main", "x"))
    ]


def test_controller_sources_keep_the_debian_archive_only(tmp_path):
    sources = aptsources.controller_sources(_write_apt_root(tmp_path, DEB822))
    assert all(source.is_debian_archive for source in sources)
    assert aptsources.mirror_url(sources) == "http://mirror.example/debian/"


def test_no_debian_mirror_is_an_error(tmp_path):
    with pytest.raises(BulwarkError, match="no Debian mirror"):
        aptsources.controller_sources(_write_apt_root(tmp_path, ""))


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_topology(LAB), next(iter(load_inventory(LAB))).data.dict())


def test_apt_cacher_config_binds_loopback_and_bridge_and_keeps_indexes(plan):
    config = aptcache.render_config(plan, aptsources.parse_deb822(DEB822)).splitlines()
    assert f"BindAddress: 127.0.0.1 {plan.bridge.ip}" in config
    assert f"Port: {plan.apt_proxy_port}" in config
    assert f"FreshIndexMaxAge: {aptcache.FRESH_INDEX_MAX_AGE}" in config
    assert any(
        line.startswith("Remap-secdeb:") and line.endswith("http://mirror.example/debian-security/")
        for line in config
    )


UPLINK = [
    ("eth0", ipaddress.IPv4Interface("192.0.2.2/24")),
    ("lo", ipaddress.IPv4Interface("127.0.0.1/8")),
]
ROUTES = [
    ControllerRoute("default", "eth0", None),
    ControllerRoute("192.0.2.0/24", "eth0", "kernel"),
]


def test_an_ordinary_controller_does_not_overlap(plan):
    nameservers = [ipaddress.IPv4Address("10.255.255.53")]
    assert foreign_overlaps(plan.ranges, UPLINK, ROUTES, nameservers) == []


def test_the_labs_own_links_and_routes_do_not_count(plan):
    addresses = [*UPLINK, ("bwl-mgmt", plan.bridge)]
    routes = [
        *ROUTES,
        ControllerRoute(str(plan.wan), None, "199"),
        ControllerRoute(str(plan.bridge.network), "bwl-mgmt", "kernel"),
    ]
    assert foreign_overlaps(plan.ranges, addresses, routes, []) == []


def test_foreign_address_route_or_nameserver_in_a_lab_range_is_reported(plan):
    addresses = [*UPLINK, ("eth1", ipaddress.IPv4Interface("10.81.1.77/16"))]
    routes = [*ROUTES, ControllerRoute("198.51.100.128/25", "eth0", "static")]
    nameservers = [ipaddress.IPv4Address("10.89.0.53")]
    found = foreign_overlaps(plan.ranges, addresses, routes, nameservers)
    assert any("address 10.81.1.77/16 on eth1" in line for line in found)
    assert any("route 198.51.100.128/25 dev eth0" in line for line in found)
    assert any("nameserver 10.89.0.53" in line for line in found)
