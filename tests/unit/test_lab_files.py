"""Files the lab renders: ssh_config, known_hosts, the internet namespace's hosts file."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from bulwark import catalogue
from bulwark.inventory import load_inventory, load_topology
from bulwark.lab.hostsfile import host_names, render_hosts_file
from bulwark.lab.plan import build_plan
from bulwark.lab.sshconfig import render_known_hosts, render_ssh_config

LAB = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"


@pytest.fixture(scope="module")
def topology():
    return load_topology(LAB)


@pytest.fixture(scope="module")
def plan(topology):
    return build_plan(topology, next(iter(load_inventory(LAB))).data.dict())


def test_ssh_config_resolves_each_host_as_paramiko_does(plan):
    """pyinfra reads the file with paramiko: every host must resolve to its pinned settings."""
    config = paramiko.SSHConfig.from_text(render_ssh_config(plan, "/run/ctl"))
    for host in plan.hosts:
        resolved = config.lookup(host.name)
        assert resolved["hostname"] == str(host.management.ip)
        assert resolved["user"] == plan.ssh.user
        assert resolved["identityfile"] == [plan.ssh.key]
        assert resolved["userknownhostsfile"] == plan.ssh.known_hosts_file
        assert resolved["stricthostkeychecking"] == "yes"
        assert resolved["controlpath"].startswith("/run/ctl/")


def test_ssh_config_applies_to_lab_hosts_only(plan):
    config = paramiko.SSHConfig.from_text(render_ssh_config(plan, "/run/ctl"))
    other = config.lookup("example.org")
    assert other["hostname"] == "example.org"
    assert "identityfile" not in other


def test_known_hosts_pins_every_key_under_name_and_address(plan):
    keys = {host.name: [f"ssh-ed25519 AAAA{host.name} root@build"] for host in plan.hosts}
    lines = render_known_hosts(plan, keys).splitlines()
    assert len(lines) == len(plan.hosts)
    for host, line in zip(plan.hosts, lines, strict=True):
        assert line == f"{host.name},{host.management.ip} ssh-ed25519 AAAA{host.name}"


def test_generic_names_point_at_the_primary_site(topology):
    names = host_names(topology)
    primary = topology.primary_site.name
    for service in catalogue.SERVICES:
        for fqdn in service.fqdns(topology.domain):
            serving = topology.hosts_with_role(service.role, primary)[0]
            assert names[fqdn] == str(serving.own_address(service) or serving.public_address)


def test_per_site_names_point_at_each_sites_host(topology):
    names = host_names(topology)
    mailstore = catalogue.service("imaps")
    for site in topology.sites:
        serving = topology.hosts_with_role(mailstore.role, site.name)[0]
        for label in mailstore.names:
            assert names[f"{label}.{site.name}.{topology.domain}"] == str(serving.public_address)


def test_hosts_file_keeps_localhost_and_lists_every_name_once(topology):
    lines = render_hosts_file(topology).splitlines()
    assert lines[0] == "127.0.0.1 localhost"
    names = [line.split()[1] for line in lines[2:]]
    assert names == sorted(set(names))
    assert set(names) == set(host_names(topology))


def test_once_dns_serves_the_names_the_hosts_file_keeps_localhost_alone(topology):
    assert render_hosts_file(topology, names=False).splitlines() == [
        "127.0.0.1 localhost",
        "::1 localhost ip6-localhost ip6-loopback",
    ]
