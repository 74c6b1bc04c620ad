"""The firewall and the VPN on the running lab: live rulesets, the tunnel, and safe apply.

Expectations come from the renderer and the catalogue (never listed here). Traffic stays inside
the lab: between its containers, and captured on its own WAN switch.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from bulwark import catalogue
from bulwark.audit import SealedSecrets
from bulwark.inventory import load_topology
from bulwark.lab.access import ssh_argv
from bulwark.lab.plan import SWITCH_BRIDGE, WAN_NETNS
from bulwark.render import render_host_configs
from roles import firewall, vpn

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
TOPOLOGY = load_topology(LAB_INVENTORY)
WIREGUARD_PORT = catalogue.service("wireguard").port
# A port every mail store opens to the site LANs: the LAN-to-LAN probe's target.
SITE_PORT = catalogue.service("mail-replication").port


def _fresh_ssh_works(lab_plan, name: str) -> bool:
    """A NEW SSH connection (no ControlMaster reuse, which would hide a lock-out)."""
    argv = ssh_argv(
        lab_plan,
        lab_plan.host(name),
        ["true"],
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        "ConnectTimeout=5",
    )
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def _rendered_ruleset(name: str) -> str:
    files = render_host_configs(TOPOLOGY, TOPOLOGY.host(name), SealedSecrets())
    return next(item.content for item in files if item.path == firewall.RULESET)


def _chain_policy(host, chain: str) -> str:
    listing = json.loads(host.check_output(f"nft -j list chain inet bulwark {chain}"))
    return next(item["chain"]["policy"] for item in listing["nftables"] if "chain" in item)


def test_live_ruleset_is_the_rendered_one(host):
    name = host.backend.get_hostname()
    wanted = hashlib.sha256(_rendered_ruleset(name).encode()).hexdigest()
    installed = host.file(firewall.RULESET)
    assert installed.sha256sum == wanted
    assert installed.mode == 0o600
    assert _chain_policy(host, "input") == "drop"
    assert _chain_policy(host, "forward") == "drop"
    assert host.service("nftables").is_enabled
    assert host.run(f"systemctl is-active {firewall.ROLLBACK_TIMER}").stdout.strip() != "active"


def _latest_handshake(gw) -> int:
    return int(gw.check_output(f"wg show {vpn.VPN_INTERFACE} latest-handshakes").split()[1])


def _handshake_after(gw, peer_address, since: float, within: float = 10) -> bool:
    """Send a datagram into the tunnel (which starts a handshake if none is fresh) and wait."""
    nudge = f"import socket; socket.socket(2, 2).sendto(b'x', ('{peer_address}', 9))"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        gw.run("python3 -c %s", nudge)
        if _latest_handshake(gw) >= int(since):
            return True
        time.sleep(0.5)
    return False


def test_gateways_complete_a_handshake(lab_host):
    for site in TOPOLOGY.sites:
        gateway = TOPOLOGY.gateway(site.name)
        peer = TOPOLOGY.gateway(TOPOLOGY.peer_sites(site.name)[0].name)
        gw = lab_host(gateway.name)
        since = time.time() - 180  # WireGuard re-handshakes every 2 minutes under traffic
        assert _handshake_after(gw, peer.lan_address, since), f"{gateway.name}: no handshake"


def test_gateways_run_wireguard_go_where_the_kernel_has_no_module(lab_host):
    for gateway in TOPOLOGY.hosts_with_role("gateway"):
        gw = lab_host(gateway.name)
        kernel = gw.file("/sys/module/wireguard").is_directory
        running = gw.run("cat /proc/[0-9]*/comm").stdout.split()
        assert kernel or "wireguard-go" in running
        assert gw.package("wireguard-go").is_installed != kernel


def test_other_hosts_route_the_other_site_through_their_gateway(lab_host):
    for host in TOPOLOGY.hosts:
        if host.has_role("gateway"):
            continue
        peer_site = TOPOLOGY.peer_sites(host.site)[0]
        target = next(iter(TOPOLOGY.hosts_with_role("mailstore", peer_site.name))).lan_address
        route = lab_host(host.name).check_output(f"ip route get {target}")
        assert f"via {TOPOLOGY.gateway(host.site).lan_address}" in route


class _WanCapture:
    """tcpdump on the lab's WAN switch: what crosses between the sites' public addresses."""

    def __init__(self, pcap: Path):
        self.pcap = pcap
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                WAN_NETNS,
                "tcpdump",
                "-i",
                SWITCH_BRIDGE,
                "-n",
                "-U",
                "-w",
                str(pcap),
                "not arp",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)  # tcpdump attaches before the traffic starts

    def packets(self) -> list[str]:
        time.sleep(1)  # the last packets reach the file before tcpdump stops
        self.process.terminate()
        self.process.wait(timeout=10)
        return subprocess.run(
            ["tcpdump", "-n", "-r", str(self.pcap)], capture_output=True, text=True, check=True
        ).stdout.splitlines()


def _mail_pair():
    nj = TOPOLOGY.hosts_with_role("mailstore", "nj")[0]
    sea = TOPOLOGY.hosts_with_role("mailstore", "sea")[0]
    return nj, sea


def _ensure_listener(host, address) -> None:
    """Something on `address`:SITE_PORT: the mail store if deployed, else a short-lived probe."""
    if host.socket(f"tcp://{address}:{SITE_PORT}").is_listening:
        return
    script = (
        f"import socket; s=socket.create_server(('{address}', {SITE_PORT})); s.settimeout(60)\n"
        "while True:\n c, _ = s.accept(); c.recv(65536); c.close()"
    )
    host.run("systemd-run --unit bulwark-test-listener -p RuntimeMaxSec=90 python3 -c %s", script)
    for _ in range(20):
        if host.socket(f"tcp://{address}:{SITE_PORT}").is_listening:
            return
        time.sleep(0.25)
    raise AssertionError(f"no listener on {address}:{SITE_PORT}")


def _lan_connect(source_host, source, target) -> bool:
    probe = (
        f"import socket; s=socket.create_connection(('{target}', {SITE_PORT}), timeout=5, "
        f"source_address=('{source}', 0)); s.sendall(b'bulwark' * 300); s.close()"
    )
    return source_host.run("python3 -c %s", probe).rc == 0


def test_lan_to_lan_crosses_the_wan_only_inside_the_tunnel(lab_host, tmp_path):
    nj, sea = _mail_pair()
    _ensure_listener(lab_host(sea.name), sea.lan_address)
    capture = _WanCapture(tmp_path / "wan.pcap")
    connected = _lan_connect(lab_host(nj.name), nj.lan_address, sea.lan_address)
    packets = capture.packets()
    assert connected, f"{nj.name} could not reach {sea.name}'s LAN address through the VPN"
    gateways = {str(gw.public_address) for gw in TOPOLOGY.hosts_with_role("gateway")}
    between_sites = [line for line in packets if _endpoints(line) <= _SITE_PUBLIC_ADDRESSES]
    tunnel = [
        line
        for line in between_sites
        if " UDP" in line and _endpoints(line) == gateways and f".{WIREGUARD_PORT} " in line
    ]
    assert tunnel, "no WireGuard packets on the WAN during the connection"
    assert between_sites == tunnel, "traffic between the sites outside the tunnel:\n" + "\n".join(
        line for line in between_sites if line not in tunnel
    )
    assert not [line for line in packets if str(sea.lan_address) in line]


# Everything else on the WAN is the internet's clients talking to public services.
_SITE_PUBLIC_ADDRESSES = {str(host.public_address) for host in TOPOLOGY.hosts}


def _endpoints(line: str) -> set[str]:
    """Source and destination addresses of a `tcpdump -n` line (ports stripped)."""
    return {part.rstrip(":").rsplit(".", 1)[0] for part in line.split()[2:5:2]}


def test_with_the_tunnel_down_lan_to_lan_fails_instead_of_going_clear(lab_host, tmp_path):
    nj, sea = _mail_pair()
    _ensure_listener(lab_host(sea.name), sea.lan_address)
    sea_gw = lab_host(TOPOLOGY.gateway("sea").name)
    sea_gw.run(f"systemctl stop wg-quick@{vpn.VPN_INTERFACE}")
    try:
        capture = _WanCapture(tmp_path / "wan-down.pcap")
        connected = _lan_connect(lab_host(nj.name), nj.lan_address, sea.lan_address)
        packets = capture.packets()
    finally:
        restarted = time.time()
        sea_gw.run(f"systemctl start wg-quick@{vpn.VPN_INTERFACE}")
    assert not connected
    assert not [line for line in packets if str(sea.lan_address) in line]
    nj_gw = TOPOLOGY.gateway("nj")
    assert _handshake_after(sea_gw, nj_gw.lan_address, restarted, within=30), "no tunnel again"
    assert _lan_connect(lab_host(nj.name), nj.lan_address, sea.lan_address)


_DEPLOY_ONLY_THE_RULESET = """\
from roles.firewall import safe_ruleset

safe_ruleset(candidate={candidate!r})
"""


def _push_through_the_role(lab_pyinfra, tmp_path: Path, host_name: str, candidate: str):
    deploy = tmp_path / "push_ruleset.py"
    deploy.write_text(_DEPLOY_ONLY_THE_RULESET.format(candidate=candidate))
    return lab_pyinfra(deploy, host_name, timeout=firewall.ROLLBACK_AFTER_SECONDS * 4)


def _live_ruleset(host) -> str:
    """The live rules (stateless: no counters, and not the SSH meter's changing elements)."""
    return host.check_output(
        "for chain in input forward output; do nft -s list chain inet bulwark $chain; done"
    )


@pytest.fixture
def web_host(lab_host, lab_plan):
    """nj-web, its live ruleset checked unchanged and fresh SSH working after the test."""
    name = TOPOLOGY.hosts_with_role("dav", "nj")[0].name
    host = lab_host(name)
    before = _live_ruleset(host)
    installed = host.file(firewall.RULESET).sha256sum
    yield name, host
    assert _fresh_ssh_works(lab_plan, name), f"{name} is unreachable after the test"
    assert _live_ruleset(host) == before
    assert host.file(firewall.RULESET).sha256sum == installed
    host.run("rm -f /etc/bulwark/nftables.test-candidate")


def test_a_ruleset_that_cuts_ssh_is_rolled_back_at_once(web_host, lab_pyinfra, tmp_path):
    name, host = web_host
    candidate = "/etc/bulwark/nftables.test-candidate"
    host.run(f"grep -v 'comment \"ssh\"' {firewall.RULESET} > {candidate}")
    result = _push_through_the_role(lab_pyinfra, tmp_path, name, candidate)
    assert result.returncode != 0
    assert "blocked a fresh SSH connection" in result.stdout + result.stderr
    assert "restored at once" in result.stdout + result.stderr


def test_a_ruleset_that_cuts_everything_is_rolled_back_by_the_timer(
    web_host, lab_pyinfra, tmp_path
):
    """Even the deploy's own connection is cut: only the armed timer can restore access."""
    name, host = web_host
    candidate = "/etc/bulwark/nftables.test-candidate"
    host.run(
        "printf '%s\\n' 'flush ruleset' 'table inet bulwark {' "
        "'chain input { type filter hook input priority filter; policy drop; }' '}' > " + candidate
    )
    started = time.monotonic()
    result = _push_through_the_role(lab_pyinfra, tmp_path, name, candidate)
    assert result.returncode != 0
    assert "the armed rollback restored the previous ruleset" in result.stdout + result.stderr
    assert time.monotonic() - started >= firewall.ROLLBACK_AFTER_SECONDS
