"""bulwark.exposure: internal services open only to the hosts of the roles that use them,
resolved from the lab and production inventories; a client role without a host opens nothing."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from bulwark import catalogue
from bulwark.catalogue import Clients, Exposure, Scope
from bulwark.exposure import client_hosts, host_openings, role_sources
from bulwark.inventory import load_topology
from bulwark.topology import Topology

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")


def _sources(topology: Topology, host_name: str, service: str) -> list[str] | None:
    """The sources `host_name` opens `service` to (None: the service is not opened)."""
    for opening in host_openings(topology, topology.host(host_name)):
        if opening.service.name == service:
            return [str(network) for network in opening.sources or ()]
    return None


# (inventory, mail store, its LMTP clients, its replication client): every address written out,
# so a resolution that drifts (a LAN, a management address, a whole site) shows here.
EXPECTED = [
    (LAB, "nj-mail", ["10.81.1.11/32"], ["10.82.1.11/32"]),
    (LAB, "sea-mail", ["10.82.1.11/32"], ["10.81.1.11/32"]),
    (PRODUCTION, "nj-store", ["10.1.0.25/32"], ["10.2.0.30/32"]),
    (PRODUCTION, "sea-store", ["10.2.0.25/32"], ["10.1.0.30/32"]),
]


@pytest.mark.parametrize(
    ("topology", "store", "lmtp", "replication"),
    EXPECTED,
    ids=[f"{'lab' if row[0] is LAB else 'production'}-{row[1]}" for row in EXPECTED],
)
def test_lmtp_resolves_to_the_sites_mx_hosts_and_replication_to_the_peer_store(
    topology, store, lmtp, replication
):
    assert _sources(topology, store, "lmtp") == lmtp
    assert _sources(topology, store, "mail-replication") == replication


def test_no_internal_service_opens_to_a_whole_network():
    for topology in (LAB, PRODUCTION):
        for host in topology.hosts:
            for opening in host_openings(topology, host):
                if opening.service.exposure is Exposure.ROLE:
                    assert opening.sources
                    assert {network.prefixlen for network in opening.sources} == {32}


def test_clients_are_the_hosts_deploying_the_role_in_the_asked_site():
    nj_store = PRODUCTION.host("nj-store")
    same = client_hosts(PRODUCTION, nj_store, Clients("mx", Scope.SAME_SITE))
    peer = client_hosts(PRODUCTION, nj_store, Clients("mx", Scope.PEER_SITE))
    assert [host.name for host in same] == ["nj-mx"]
    assert [host.name for host in peer] == ["sea-mx"]
    # A role every host runs (base) names every host of the site, the service's own included.
    everyone = client_hosts(LAB, LAB.host("nj-mail"), Clients("base", Scope.SAME_SITE))
    assert [host.name for host in everyone] == ["nj-backup", "nj-gw", "nj-mail", "nj-web"]


def test_a_client_role_without_a_host_opens_nothing():
    """nj loses its MX: nj's store opens LMTP to nobody, rather than to everybody."""
    without_mx = replace(
        PRODUCTION,
        hosts=tuple(
            replace(host, roles=()) if host.name == "nj-mx" else host for host in PRODUCTION.hosts
        ),
    )
    store = without_mx.host("nj-store")
    assert role_sources(without_mx, store, catalogue.service("lmtp")) == ()
    assert _sources(without_mx, "nj-store", "lmtp") is None
    assert _sources(without_mx, "nj-store", "mail-replication") == ["10.2.0.30/32"]


@pytest.mark.usefixtures("logs_not_deployed")
def test_a_client_role_not_deployed_yet_opens_nothing():
    """Clients of a role without a module never connect: they are not let in either."""
    lmtp_from_logs = replace(catalogue.service("lmtp"), clients=(Clients("logs", Scope.SAME_SITE),))
    assert role_sources(PRODUCTION, PRODUCTION.host("nj-store"), lmtp_from_logs) == ()


@pytest.mark.usefixtures("every_role_deployed")
def test_backups_are_received_from_the_other_sites_data_hosts_alone():
    sources = role_sources(PRODUCTION, PRODUCTION.host("nj-backup"), catalogue.service("backup"))
    data_roles = ("mailstore", "dav", "files")
    assert sources == tuple(
        sorted(
            IPv4Network(f"{host.lan_address}/32")
            for host in PRODUCTION.hosts
            if host.site == "sea" and any(host.has_role(role) for role in data_roles)
        )
    )
    assert sources  # sea-store and sea-web
