"""What the firewall and vpn roles cost, and how fast the tunnel recovers after a gateway restart.

Run as root from the repository root; it rebuilds the lab (fresh hosts) and leaves it deployed:

    .venv/bin/python benchmarks/network.py

Prints: the first and the no-op run of base+pki (their prerequisites), of vpn+firewall alone, of
the remaining roles, and of the full deploy; then the time from restarting a gateway's WireGuard
until traffic from the other site's LAN flows again.
"""

from __future__ import annotations

from lab import BIN, DEPLOY_ENV, INVENTORY, changed_operations, timed

from bulwark import catalogue, registry
from bulwark.inventory import load_topology
from bulwark.lab import lifecycle
from bulwark.lab.containers import init_pid

NETWORK_ROLES = ("vpn", "gateway", "firewall")
# A port the mail stores open to the site LANs: the recovery probe's target.
SITE_PORT = catalogue.service("mail-replication").port


def deploy(label: str, roles: tuple[str, ...] | None = None) -> None:
    argv = [str(BIN / "pyinfra"), "-y", "--json", INVENTORY, "deploy.py"]
    if roles is not None:
        argv += ["--data", f"only_roles={','.join(roles)}"]
    output = timed(label, argv, DEPLOY_ENV)
    print(f"{'':<42} {changed_operations(output):>5} operations changed", flush=True)


def in_container(host: str, *command: str) -> list[str]:
    """A command inside a lab host, without SSH (as `bulwark lab exec` does)."""
    lab = lifecycle.require_up(INVENTORY)
    pid = init_pid(lab.plan.host(host))
    return ["nsenter", "-t", str(pid), "-a", "systemd-run", "-q", "--wait", "--pipe", *command]


def recovery_after_gateway_restart() -> None:
    """Restart sea's WireGuard, then time until nj-mail reaches sea-mail's LAN address."""
    topology = load_topology(INVENTORY)
    nj = topology.hosts_with_role("mailstore", "nj")[0]
    sea = topology.hosts_with_role("mailstore", "sea")[0]
    gateway = topology.gateway("sea").name
    probe = (
        "import socket,time\n"
        "deadline = time.monotonic() + 60\n"
        "while time.monotonic() < deadline:\n"
        "    try:\n"
        f"        socket.create_connection(('{sea.lan_address}', {SITE_PORT}), timeout=0.5,"
        f" source_address=('{nj.lan_address}', 0)).close(); break\n"
        "    except OSError: time.sleep(0.1)\n"
    )
    timed("restart sea's WireGuard", in_container(gateway, "systemctl", "restart", "wg-quick@wg0"))
    timed("until nj's LAN reaches sea's again", in_container(nj.name, "python3", "-c", probe))


def main() -> None:
    others = tuple(
        role.name for role in registry.ROLES if role.name not in (*NETWORK_ROLES, "base", "pki")
    )
    timed("lab down", [str(BIN / "bulwark"), "lab", "down"])
    timed("lab up (fresh hosts)", [str(BIN / "bulwark"), "lab", "up", "-i", INVENTORY])
    timed("lab apt-update", [str(BIN / "bulwark"), "lab", "apt-update", "-i", INVENTORY])
    deploy("base + pki, first run", ("base", "pki"))
    deploy("vpn + firewall, first run", NETWORK_ROLES)
    deploy("vpn + firewall, no-op", NETWORK_ROLES)
    deploy("other roles, first run", others)
    deploy("full deploy, no-op", None)
    deploy("full deploy without vpn + firewall, no-op", ("base", "pki", *others))
    recovery_after_gateway_restart()


if __name__ == "__main__":
    main()
