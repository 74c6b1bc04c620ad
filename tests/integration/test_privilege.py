"""Least privilege inside the sites, on the running lab: internal services answer only the hosts
of the roles that use them, LMTP speaks only TLS, and the brute-force watcher runs.

Addresses and ports come from the inventory and the catalogue; probes run on the lab hosts
(python3 is on every host) and connect only to other lab hosts' LAN addresses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import testinfra

from bulwark import bruteforce, catalogue, pki
from bulwark.exposure import host_openings
from bulwark.inventory import load_topology

LAB = load_topology(Path(__file__).resolve().parents[2] / "inventory" / "lab.py")
LMTP = catalogue.service("lmtp").port
REPLICATION = catalogue.service("mail-replication").port
# A refused (reset) or dropped connection ends within this; an open port answers far sooner.
CONNECT_TIMEOUT = 5


@pytest.fixture(scope="module")
def on(request):
    """testinfra host by inventory name, over the lab's ssh_config (pinned keys)."""
    config = request.config.option.ssh_config

    def get(name: str):
        return testinfra.get_host(f"ssh://{name}", ssh_config=config)

    return get


def _connects(source, target: str, port: int) -> bool:
    """Whether a TCP connection from the lab host `source` to `target`:`port` is accepted."""
    probe = (
        f"import socket; socket.create_connection(('{target}', {port}), "
        f"timeout={CONNECT_TIMEOUT}).close()"
    )
    return source.run("python3 -c %s", probe).rc == 0


def _stores():
    return LAB.hosts_with_role("mailstore")


@pytest.mark.parametrize("store", _stores(), ids=lambda host: host.name)
def test_web_hosts_reach_neither_lmtp_nor_replication(on, store):
    for web in LAB.hosts_with_role("dav"):
        for port in (LMTP, REPLICATION):
            assert not _connects(on(web.name), str(store.lan_address), port), (web.name, port)


@pytest.mark.parametrize("store", _stores(), ids=lambda host: host.name)
def test_lmtp_refuses_the_other_sites_mail_hosts_and_replication_admits_the_peer_store(on, store):
    for peer in LAB.hosts_with_role("mailstore"):
        if peer.site == store.site:
            continue
        peer_host = on(peer.name)
        assert not _connects(peer_host, str(store.lan_address), LMTP), peer.name
        assert _connects(peer_host, str(store.lan_address), REPLICATION), peer.name


def test_the_live_client_sets_are_the_rendered_ones(on):
    for store in _stores():
        live = on(store.name)
        for opening in host_openings(LAB, store):
            if opening.service.exposure is not catalogue.Exposure.ROLE:
                continue
            name = f"{opening.service.name.replace('-', '_')}_clients_v4"
            listing = live.check_output(f"nft list set inet bulwark {name}")
            for network in opening.sources or ():
                assert str(network.network_address) in listing, (store.name, name)


_PLAINTEXT_LHLO = f"""
import socket
s = socket.create_connection(('{{address}}', {LMTP}), timeout={CONNECT_TIMEOUT})
s.sendall(b'LHLO probe.invalid\\r\\n')
try:
    answer = s.recv(512)
except OSError:
    answer = b''
print(repr(answer))
"""

_TLS_LHLO = f"""
import socket, ssl
context = ssl.create_default_context(cafile='{pki.CA_CERT_PATH}')
context.load_cert_chain('{pki.HOST_CERT_PATH}', '{pki.HOST_KEY_PATH}')
raw = socket.create_connection(('{{address}}', {LMTP}), timeout={CONNECT_TIMEOUT})
s = context.wrap_socket(raw, server_hostname='{{name}}')
greeting = s.recv(512)
s.sendall(b'LHLO probe.invalid\\r\\n')
reply = s.recv(4096)
s.sendall(b'QUIT\\r\\n')
print(greeting.decode().split()[0], reply.decode().split('\\r\\n')[0][:3])
"""


@pytest.mark.parametrize(
    "store", [host for host in _stores() if host.has_role("mx")], ids=lambda host: host.name
)
def test_lmtp_from_the_mx_host_works_only_over_tls(on, store):
    """The lab's mail hosts are MX and store at once: the MX's own LMTP client is local."""
    host = on(store.name)
    plain = host.check_output("python3 -c %s", _PLAINTEXT_LHLO.format(address=store.lan_address))
    assert not plain.strip("b'\"").startswith("220"), plain  # no greeting in plaintext
    script = _TLS_LHLO.format(address=store.lan_address, name=LAB.fqdn(store))
    assert host.check_output("python3 -c %s", script).split() == ["220", "250"]


def test_no_plaintext_lmtp_is_offered_anywhere(on):
    for store in _stores():
        settings = on(store.name).check_output(
            "doveconf -h -f protocol=lmtp ssl_verify_client_cert"
        )
        assert settings == "yes"
        services = on(store.name).check_output("doveconf -n")
        assert "ssl = yes" in services.split("inet_listener lmtp {", 1)[1].split("}", 1)[0]


@pytest.mark.parametrize("name", [host.name for host in LAB.hosts if bruteforce.protects(host)])
def test_the_brute_force_watcher_runs_and_the_ban_set_is_live(on, name):
    host = on(name)
    assert host.service(bruteforce.UNIT).is_running
    assert host.service(bruteforce.UNIT).is_enabled
    listing = host.check_output(f"nft list set inet {bruteforce.TABLE} {bruteforce.BAN_SET}")
    assert "flags dynamic,timeout" in listing or "flags timeout,dynamic" in listing
    watched = host.check_output(f"systemctl show -p ExecStart --value {bruteforce.UNIT}")
    topology_host = LAB.host(name)
    for role in bruteforce.login_roles(topology_host):
        for unit in bruteforce.WATCHED_UNITS[role]:
            assert f"--unit {unit}" in watched
