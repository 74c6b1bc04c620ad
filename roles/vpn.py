"""vpn: WireGuard between the sites' gateways, and every other host's route through its gateway.

Runs on every host. The inventory names one gateway per site (role `gateway`): it peers with
every other site's gateway, AllowedIPs = that site's LAN, so a third site is a data change, and
forwards between its LAN and the tunnel. The kernel module is used where present, wireguard-go
otherwise, decided by a fact about the host. Every other host gets a route to the other sites'
LANs via its site's gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import deploy
from pyinfra.api.facts import FactBase

from bulwark import catalogue
from bulwark.deploying import (
    install,
    install_sysctl,
    keep_running,
    packages,
    render_for_deploy,
    restarted,
)
from bulwark.exposure import SITE_ROUTES_UNIT, VPN_INTERFACE, VPN_UNIT
from bulwark.livecheck import LiveCheck
from bulwark.plan import ManagedFile
from bulwark.platform_secrets import wireguard_public_key
from bulwark.probes import Handshakes, Sysctl, Unit, Units
from bulwark.secret import SecretStore
from bulwark.secret_names import psk_name, wireguard_key_name
from bulwark.templating import derived_or_sealed
from bulwark.topology import Host, Topology

ROLE = "vpn"

# The inventory role that makes a host its site's end of the tunnel.
GATEWAY = "gateway"
WG_CONFIG = f"/etc/wireguard/{VPN_INTERFACE}.conf"
USERSPACE_DROPIN = "/etc/systemd/system/wg-quick@.service.d/userspace.conf"
FORWARDING_SYSCTL = "/etc/sysctl.d/61-bulwark-forwarding.conf"
# Seconds between keepalives to each peer gateway. Besides keeping state in any middlebox, it
# makes a gateway whose WireGuard restarted send its handshake at once: the peer otherwise
# kept its stale session and traffic resumed only ~15 s later.
KEEPALIVE_SECONDS = 25
ROUTES_UNIT = f"/etc/systemd/system/{SITE_ROUTES_UNIT}"
# Gateways: the tools always, wireguard-go where the kernel has no WireGuard module.
PACKAGES: tuple[str, ...] = ("wireguard-tools",)
USERSPACE_PACKAGES: tuple[str, ...] = ("wireguard-go",)


class WireGuardImplementation(FactBase):
    """`kernel` if the host can load the WireGuard module, else `userspace` (wireguard-go)."""

    def command(self) -> str:
        return (
            "if [ -d /sys/module/wireguard ] || modprobe -q wireguard 2>/dev/null; "
            "then echo kernel; else echo userspace; fi"
        )

    def process(self, output) -> str:
        return "".join(output).strip()


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    if not host.has_role(GATEWAY):
        return (ManagedFile(ROUTES_UNIT, "site-routes.service.j2"),)
    return (
        ManagedFile(WG_CONFIG, "wg0.conf.j2", mode="0600"),
        ManagedFile(USERSPACE_DROPIN, "wg-quick-userspace.conf.j2"),
        ManagedFile(FORWARDING_SYSCTL, "forwarding.conf.j2"),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    if not host.has_role(GATEWAY):
        site_gateway = topology.gateway(host.site)
        return {
            "gateway": site_gateway.name,
            "gateway_address": str(site_gateway.lan_address),
            "peer_lans": [str(site.lan) for site in topology.peer_sites(host.site)],
        }
    port = catalogue.service("wireguard").port
    peers = [
        {
            "site": site.name,
            "host": peer.name,
            "public_key": _public_key(secrets, peer),
            "preshared_key": secrets.get(psk_name(host.site, site.name)),
            "endpoint": f"{peer.public_address}:{port}",
            "allowed_ips": [str(site.lan)],
            "keepalive": KEEPALIVE_SECONDS,
        }
        for site in topology.peer_sites(host.site)
        for peer in (topology.gateway(site.name),)
    ]
    return {
        "site": host.site,
        "address": str(host.lan_address),
        "listen_port": port,
        "private_key": secrets.get(wireguard_key_name(host)),
        "peers": peers,
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """Gateways: the tunnel up, forwarding on, a recent handshake with each other site's
    gateway. Other hosts: the routes' unit."""
    if not host.has_role(GATEWAY):
        return (Units((Unit(SITE_ROUTES_UNIT),)),)
    peers = tuple((site.name, str(site.lan)) for site in topology.peer_sites(host.site))
    return (
        Units((Unit(VPN_UNIT),)),
        Sysctl(FORWARDING_SYSCTL),
        Handshakes(VPN_INTERFACE, peers),
    )


@deploy("vpn")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """Gateways: tunnel up, forwarding on. Other hosts: the route to the other sites' LANs."""
    files = render_for_deploy(ROLE, topology, host, secrets)
    if not host.has_role(GATEWAY):
        install(ROLE, [files[ROUTES_UNIT]], then=restarted(SITE_ROUTES_UNIT, True))
        keep_running(ROLE, SITE_ROUTES_UNIT)
        return
    userspace = current_host.get_fact(WireGuardImplementation) == "userspace"
    packages(ROLE, (*PACKAGES, *(USERSPACE_PACKAGES if userspace else ())))
    install_sysctl(ROLE, files[FORWARDING_SYSCTL])
    install(ROLE, [files[USERSPACE_DROPIN], files[WG_CONFIG]], then=restarted(VPN_UNIT, True))
    keep_running(ROLE, VPN_UNIT)


def _public_key(secrets: SecretStore, gateway: Host) -> str:
    """A gateway's public key: not secret, but a sealed audit cannot derive it."""
    private = secrets.get(wireguard_key_name(gateway))
    return derived_or_sealed(
        lambda: wireguard_public_key(private.reveal()), f"<public key of {private.name}: sealed>"
    )
