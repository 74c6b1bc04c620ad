"""vpn: WireGuard between the sites' gateways, and every other host's route through its gateway.

Site-to-site: each gateway peers with every other site's gateway, AllowedIPs = that site's LAN,
so a third site is a data change. The kernel module is used where present, wireguard-go
otherwise, decided by a fact about the host. Runs on every host: gateways get the tunnel,
the others a route to the other sites' LANs via their gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import deploy
from pyinfra.api.facts import FactBase
from pyinfra.operations import apt

from bulwark import catalogue
from bulwark.deploying import apply_sysctl, converge_unit, deploy_host, put_file, render_for_deploy
from bulwark.exposure import VPN_INTERFACE
from bulwark.plan import ManagedFile
from bulwark.platform_secrets import wireguard_public_key
from bulwark.secret import Secret, SecretStore
from bulwark.secret_names import psk_name, wireguard_key_name
from bulwark.topology import Host, Topology

ROLE = "vpn"

WG_CONFIG = f"/etc/wireguard/{VPN_INTERFACE}.conf"
WG_UNIT = f"wg-quick@{VPN_INTERFACE}.service"
USERSPACE_DROPIN = "/etc/systemd/system/wg-quick@.service.d/userspace.conf"
FORWARDING_SYSCTL = "/etc/sysctl.d/61-bulwark-forwarding.conf"
ROUTES_UNIT_NAME = "bulwark-site-routes.service"
ROUTES_UNIT = f"/etc/systemd/system/{ROUTES_UNIT_NAME}"


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
    if not host.has_role("vpn"):
        return (ManagedFile(ROUTES_UNIT, "site-routes.service.j2"),)
    return (
        ManagedFile(WG_CONFIG, "wg0.conf.j2", mode="0600"),
        ManagedFile(USERSPACE_DROPIN, "wg-quick-userspace.conf.j2"),
        ManagedFile(FORWARDING_SYSCTL, "forwarding.conf.j2"),
    )


def _public_key(private: Secret) -> str:
    """Public keys are not secret, but a sealed audit cannot derive them."""
    try:
        return wireguard_public_key(private.reveal())
    except PermissionError:
        return f"<public key of {private.name}: sealed>"


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    site_gateway = topology.gateway(host.site)
    peer_lans = [str(site.lan) for site in topology.peer_sites(host.site)]
    if not host.has_role("vpn"):
        return {
            "gateway": site_gateway.name,
            "gateway_address": str(site_gateway.lan_address),
            "peer_lans": peer_lans,
        }
    port = catalogue.service("wireguard").port
    peers = [
        {
            "site": site.name,
            "host": peer.name,
            "public_key": _public_key(secrets.get(wireguard_key_name(peer))),
            "preshared_key": secrets.get(psk_name(host.site, site.name)),
            "endpoint": f"{peer.public_address}:{port}",
            "allowed_ips": [str(site.lan)],
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


@deploy("vpn")
def converge(secrets: SecretStore) -> None:
    """Gateways: tunnel up, forwarding on. Other hosts: the route to the other sites' LANs."""
    uploaded = {item.path: put_file(item) for item in render_for_deploy(ROLE, secrets)}
    if not deploy_host().has_role("vpn"):
        converge_unit(ROLE, ROUTES_UNIT_NAME, uploaded[ROUTES_UNIT])
        return
    packages = ["wireguard-tools"]
    if current_host.get_fact(WireGuardImplementation) == "userspace":
        packages.append("wireguard-go")
    apt.packages(name="vpn: WireGuard", packages=packages, no_recommends=True, _retries=2)
    apply_sysctl(ROLE, FORWARDING_SYSCTL, uploaded[FORWARDING_SYSCTL])
    converge_unit(ROLE, WG_UNIT, uploaded[USERSPACE_DROPIN], uploaded[WG_CONFIG])
