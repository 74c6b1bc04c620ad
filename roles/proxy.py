"""proxy: IMAP, POP and SMTP over TLS on every port of an address of their own.

The seed's firewall-friendly proxies (`imaps-proxy`, `pops-proxy`, `smtps-proxy`): a client
behind a firewall that only lets 80, 443, 21 or 25 out — or any other port — reaches its mail
over TLS. Each proxy name has its own public address on the proxy host (the inventory's
`proxy_addresses`); the firewall (roles/firewall.py) translates every TCP port of it but SSH's
to one listener, this role's nginx, which passes each connection through untouched — the TLS is
the client's with the mail host, end to end: the proxy never holds a mail key nor sees a
password — to the site's mail hosts' proxied listeners on the LAN, each connection opened by a
PROXY protocol header naming the client, so Dovecot and Postfix log, penalise and ban the real
address. Those listeners accept connections from this site's proxy hosts alone.

nginx runs as its own unit (`bulwark-proxy.service`), never Debian's: Debian's unit is masked
before the package is installed, so no default site ever listens on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import catalogue
from bulwark.deploying import install, keep_running, masked, packages, render_for_deploy
from bulwark.livecheck import LiveCheck
from bulwark.operations import STAGED, Activation, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Unit, Units
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "proxy"

PACKAGES: tuple[str, ...] = ("nginx-core", "libnginx-mod-stream")
# Debian's nginx would start on its default site, listening on every address.
DEBIAN_UNITS: tuple[str, ...] = ("nginx.service",)
UNIT = "bulwark-proxy.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
CONFIG = "/etc/bulwark/proxy/nginx.conf"
# In /run itself: `nginx -t` opens the pid file's directory before the unit has made any.
PID_FILE = "/run/bulwark-proxy.pid"
# Each proxied connection takes two of a worker's connections (client and mail host): with two
# workers, about 8,000 clients at once (benchmarks/proxy.py), within the descriptor limit.
WORKER_CONNECTIONS = 8192
OPEN_FILES = 3 * WORKER_CONNECTIONS
# Longer than IMAP IDLE's 29 minutes (RFC 2177), so an idle client is never cut by the proxy.
IDLE_TIMEOUT = "31m"
# A mail host that does not answer within this is given up (the next one of the site is tried).
CONNECT_TIMEOUT = "5s"
CONFIG_CHECK = Check(CONFIG, ("nginx", "-t", "-q", "-c", STAGED))
# Any change restarts nginx on the new unit and configuration (open sessions reconnect).
RESTART = Activation(
    f"{UNIT}-restart", (("systemctl", "daemon-reload"), ("systemctl", "restart", UNIT))
)


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(CONFIG, "nginx.conf.j2", checker="nginx"),
        ManagedFile(UNIT_FILE, "bulwark-proxy.service.j2"),
    )


def upstream_servers(topology: Topology, host: Host, proxy: catalogue.Service) -> list[str]:
    """Where `proxy` passes connections: its backend's listener on each host of `host`'s site
    that runs it (LAN addresses: nothing leaves the site)."""
    backend = catalogue.service(proxy.forwards_to)
    return [
        f"{server.lan_address}:{backend.port}"
        for server in topology.hosts_with_role(backend.role, host.site)
    ]


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        "proxy": {
            "config": CONFIG,
            "pid_file": PID_FILE,
            "worker_connections": WORKER_CONNECTIONS,
            "open_files": OPEN_FILES,
            "idle_timeout": IDLE_TIMEOUT,
            "connect_timeout": CONNECT_TIMEOUT,
            "servers": [
                {
                    "name": proxy.name,
                    "upstream": proxy.name.replace("-", "_"),
                    "address": str(host.proxy_address(proxy.name)),
                    "listen": proxy.listen,
                    "backend": proxy.forwards_to,
                    "upstream_servers": upstream_servers(topology, host, proxy),
                }
                for proxy in catalogue.proxies()
            ],
        },
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """nginx running (its sockets on the proxy addresses are the catalogue's, checked for
    every host)."""
    return (Units((Unit(UNIT),)),)


@deploy("proxy")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """Debian's nginx masked before it is installed, then the proxy's configuration and unit:
    any change restarts it."""
    masked(ROLE, DEBIAN_UNITS)
    packages(ROLE, PACKAGES)
    rendered = render_for_deploy(ROLE, topology, host, secrets)
    install(
        ROLE,
        [rendered[managed.path] for managed in managed_files(topology, host)],
        check=CONFIG_CHECK,
        then=RESTART,
    )
    keep_running(ROLE, UNIT)
