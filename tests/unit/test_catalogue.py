"""The service catalogue: the seeds' ports and TLS modes, and the rules the rest relies on."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from bulwark import catalogue, registry
from bulwark.catalogue import SERVICES, Clients, Exposure, Scope, Tls, Transport

ALL_ROLE_SETS = [
    roles
    for size in range(len(registry.INVENTORY_ROLES) + 1)
    for roles in itertools.combinations(registry.INVENTORY_ROLES, size)
]


def test_every_service_belongs_to_a_known_role():
    known = {*registry.INVENTORY_ROLES, *registry.EVERY_HOST_ROLES}
    assert {service.role for service in SERVICES} <= known
    # Every role a host may carry listens on something (else it could not be placed or checked).
    assert {service.role for service in SERVICES} >= set(registry.INVENTORY_ROLES)


def test_service_names_are_unique():
    names = [service.name for service in SERVICES]
    assert len(names) == len(set(names))


def test_every_service_has_ports_in_range_without_repeats():
    for service in SERVICES:
        assert service.ports, service.name
        assert len(service.ports) == len(set(service.ports)), service.name
        assert all(0 < port < 65536 for port in service.ports), service.name
        assert service.port == service.ports[0]


def test_ports_are_unique_within_each_role_and_transport():
    owners: dict[tuple[str, Transport, int], list[str]] = defaultdict(list)
    for service in SERVICES:
        for port in service.bound_ports:
            owners[(service.role, service.transport, port)].append(service.name)
    assert {key: names for key, names in owners.items() if len(names) > 1} == {}


def test_ports_shared_between_roles_are_only_the_expected_ones():
    """mailconfig, dav and files share nginx; the proxies' listeners take the ports of the
    services they stand for, so topology refuses them beside mx or mailstore. Any other
    sharing is a catalogue mistake."""
    roles_by_port: dict[tuple[Transport, int], set[str]] = defaultdict(set)
    for service in SERVICES:
        for port in service.bound_ports:
            roles_by_port[(service.transport, port)].add(service.role)
    shared = {key: roles for key, roles in roles_by_port.items() if len(roles) > 1}
    assert shared == {
        (Transport.TCP, 80): {"mailconfig", "dav", "files"},
        (Transport.TCP, 443): {"mailconfig", "dav", "files"},
        (Transport.TCP, 465): {"proxy", "mx"},
        (Transport.TCP, 993): {"proxy", "mailstore"},
        (Transport.TCP, 995): {"proxy", "mailstore"},
    }


@pytest.mark.parametrize("port", [110, 143, 389])
def test_plaintext_twins_never_listen(port):
    """Nothing binds them; on a proxy's own address they are one more port of its range, which
    speaks TLS from the first byte (the issue: every port)."""
    assert port in catalogue.FORBIDDEN_PORTS
    assert [service.name for service in SERVICES if port in service.bound_ports] == []
    through_proxies = [service for service in SERVICES if port in service.ports]
    assert {service.name for service in through_proxies} == {
        "imaps-proxy",
        "pops-proxy",
        "smtps-proxy",
    }
    assert {service.tls for service in through_proxies} == {Tls.IMPLICIT}


def test_forbidden_ports_are_exactly_the_plaintext_twins():
    assert sorted(catalogue.FORBIDDEN_PORTS) == [110, 143, 389]


def test_every_service_is_encrypted_except_http_redirects_and_loopback_ones():
    for service in SERVICES:
        if service.tls is Tls.REDIRECT:
            assert service.ports == (80,), service.name
            assert service.names, service.name
        elif service.tls is Tls.LOOPBACK:
            assert service.exposure is Exposure.LOCAL, service.name
        else:
            assert service.tls in {Tls.IMPLICIT, Tls.STARTTLS, Tls.OPPORTUNISTIC, Tls.NATIVE}
            assert service.exposure is not Exposure.LOCAL, service.name


def test_only_inbound_smtp_is_opportunistic():
    opportunistic = [service.name for service in SERVICES if service.tls is Tls.OPPORTUNISTIC]
    assert opportunistic == ["smtp"]


def test_internal_services_use_tls_inside_the_vpn():
    """Replication (mail, DAV, files), LMTP and backups stay on the site LANs and are still
    encrypted (DESIGN.md): TLS, or SSH's own for borg's backups; LMTP from the first byte, so
    no plaintext session can deliver. Tang is not TLS: its exchange never carries what opens
    a volume, and clients pin its key."""
    internal = {service.name: service for service in SERVICES if service.exposure is Exposure.ROLE}
    assert internal.pop("tang").tls is Tls.NATIVE
    assert set(internal) == {
        "lmtp",
        "mail-replication",
        "dav-replication",
        "files-replication",
        "backup",
        "imaps-proxied",
        "pop3s-proxied",
        "submissions-proxied",
    }
    assert internal.pop("backup").tls is Tls.NATIVE
    for service in internal.values():
        assert service.tls in {Tls.IMPLICIT, Tls.STARTTLS}, service.name
        assert service.names == (), service.name
    assert internal["lmtp"].tls is Tls.IMPLICIT


def test_internal_services_name_the_roles_that_use_them():
    assert catalogue.service("lmtp").clients == (Clients("mx", Scope.SAME_SITE),)
    assert catalogue.service("mail-replication").clients == (Clients("mailstore", Scope.PEER_SITE),)
    assert catalogue.service("files-replication").clients == (Clients("files", Scope.PEER_SITE),)
    assert catalogue.service("backup").clients == tuple(
        Clients(role, Scope.PEER_SITE) for role in ("mailstore", "dav", "files")
    )


def test_only_role_exposures_have_clients_and_they_are_known_roles():
    known = {role.name for role in registry.ROLES}
    for service in SERVICES:
        assert bool(service.clients) == (service.exposure is Exposure.ROLE), service.name
        assert {clients.role for clients in service.clients} <= known, service.name


def test_logins_are_the_public_services_that_check_passwords():
    logins = {service.name for service in SERVICES if service.logins}
    assert logins == {
        "submissions",
        "submission",
        "imaps",
        "pop3s",
        "https-dav",
        "https-files",
        "ftp",
        "ldaps",
    }
    assert all(catalogue.service(name).exposure is Exposure.PUBLIC for name in logins)


# The seeds' table (DESIGN.md): client host name label, port, transport, TLS mode.
SEED_TABLE = [
    ("imap", 993, Transport.TCP, Tls.IMPLICIT),
    ("pop", 995, Transport.TCP, Tls.IMPLICIT),
    ("smtp", 465, Transport.TCP, Tls.IMPLICIT),
    ("smtp", 587, Transport.TCP, Tls.STARTTLS),
    ("mx", 25, Transport.TCP, Tls.OPPORTUNISTIC),
    ("caldav", 443, Transport.TCP, Tls.IMPLICIT),
    ("carddav", 443, Transport.TCP, Tls.IMPLICIT),
    ("webdav", 443, Transport.TCP, Tls.IMPLICIT),
    ("myfiles", 443, Transport.TCP, Tls.IMPLICIT),
    ("ftp", 21, Transport.TCP, Tls.STARTTLS),
    ("ldap", 636, Transport.TCP, Tls.IMPLICIT),
]


@pytest.mark.parametrize(
    ("label", "port", "transport", "tls"),
    [pytest.param(*row, id=f"{row[0]}-{row[1]}") for row in SEED_TABLE],
)
def test_seed_table_client_endpoints(label, port, transport, tls):
    matches = [
        service
        for service in SERVICES
        if label in service.names and port in service.ports and service.transport is transport
    ]
    assert len(matches) == 1, matches
    assert matches[0].tls is tls
    assert matches[0].exposure is Exposure.PUBLIC


def test_wireguard_is_udp_51820_for_the_peer_gateway_only():
    wireguard = catalogue.service("wireguard")
    assert (wireguard.ports, wireguard.transport) == ((51820,), Transport.UDP)
    assert wireguard.exposure is Exposure.PEER_GATEWAY
    assert wireguard.role == "gateway"
    udp = [service.name for service in SERVICES if service.transport is Transport.UDP]
    assert udp == ["wireguard"]


def test_ssh_is_22_from_management_only():
    ssh = catalogue.service("ssh")
    assert (ssh.ports, ssh.transport, ssh.role) == ((22,), Transport.TCP, "base")
    assert ssh.exposure is Exposure.MANAGEMENT
    assert [service.name for service in SERVICES if 22 in service.ports] == ["ssh"]


def test_proxies_answer_on_every_port_but_the_proxy_hosts_own():
    """The seed's commonly open ports and any other (8443, 2525, a high one), all but SSH's:
    the proxy host's own TCP service. Each proxy is one name on one address of its own."""
    proxies = catalogue.proxies()
    assert [proxy.name for proxy in proxies] == ["imaps-proxy", "pops-proxy", "smtps-proxy"]
    for proxy in proxies:
        assert set(proxy.ports) == set(range(1, 65536)) - {catalogue.SSH_PORT}, proxy.name
        assert {21, 25, 80, 443, 8443, 2525, 61000} <= set(proxy.ports)
        assert proxy.tls is Tls.IMPLICIT and proxy.exposure is Exposure.PUBLIC
        assert proxy.names == (proxy.name,)
        assert not proxy.logins  # the mail host behind it checks the password and counts
    assert (catalogue.service("ssh").port,) == catalogue.PROXY_EXCLUDED_PORTS


def test_ftp_passive_range_is_opened_explicitly():
    passive = catalogue.service("ftp-passive")
    first, last = catalogue.FTP_PASSIVE_PORTS
    assert passive.ports == tuple(range(first, last + 1))
    assert passive.role == catalogue.service("ftp").role


def test_each_proxy_passes_to_a_lan_listener_of_the_service_it_stands_for():
    """Its listener is the port of the public service it stands for, and it forwards to an
    implicit-TLS listener of that service's role that only the site's proxies reach."""
    stands_for = {"imaps-proxy": "imaps", "pops-proxy": "pop3s", "smtps-proxy": "submissions"}
    for proxy in catalogue.proxies():
        public = catalogue.service(stands_for[proxy.name])
        backend = catalogue.service(proxy.forwards_to)  # KeyError if not a real service
        assert proxy.listen == public.port, proxy.name
        assert backend.role == public.role != "proxy", proxy.name
        assert backend.tls is Tls.IMPLICIT, proxy.name
        assert backend.clients == (Clients("proxy", Scope.SAME_SITE),), proxy.name
        assert backend.port not in public.ports


def test_service_lookup_of_an_unknown_name_says_so():
    with pytest.raises(KeyError, match="no service 'imap4' in the catalogue"):
        catalogue.service("imap4")


def test_fqdns_qualify_each_label():
    assert catalogue.service("https-dav").fqdns("example.com") == (
        "caldav.example.com",
        "carddav.example.com",
    )
    assert catalogue.service("ssh").fqdns("example.com") == ()


def test_services_for_roles_always_include_ssh_in_catalogue_order():
    assert len(ALL_ROLE_SETS) == 2 ** len(registry.INVENTORY_ROLES)
    for roles in ALL_ROLE_SETS:
        services = catalogue.services_for_roles(roles)
        assert services[0] == catalogue.service("ssh"), roles
        positions = [SERVICES.index(service) for service in services]
        assert positions == sorted(positions), roles
        assert {service.role for service in services} == {"base", *roles}


def test_services_for_no_roles_is_ssh_alone():
    assert catalogue.services_for_roles([]) == (catalogue.service("ssh"),)
    assert catalogue.services_for_roles(iter(["dav"]))[0].name == "ssh"  # any iterable


def test_host_names_are_sorted_and_unique():
    for roles in ALL_ROLE_SETS:
        names = catalogue.host_names(roles, "example.com")
        assert list(names) == sorted(set(names)), roles
        assert all(name.endswith(".example.com") for name in names), roles


def test_host_names_of_a_web_host():
    assert catalogue.host_names(["dav", "files"], "example.org") == (
        "caldav.example.org",
        "carddav.example.org",
        "ftp.example.org",
        "myfiles.example.org",
        "webdav.example.org",
    )
    assert catalogue.host_names(["gateway", "backup"], "example.org") == ()
