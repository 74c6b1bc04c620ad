"""The internet namespace's /etc/hosts: localhost, and until the lab's DNS server serves the
zone (bulwark.lab.dns), every client host name at the public address serving it.

The end-to-end clients connect by name, as real clients do: `imap.DOMAIN` reaches the primary
site's mail store, `imap.SITE.DOMAIN` the given site's (bulwark.dns.client_addresses).
"""

from __future__ import annotations

from bulwark.dns import client_addresses
from bulwark.topology import Topology

_LOCALHOST = ("127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback")


def host_names(topology: Topology) -> dict[str, str]:
    """Client host name -> the public address of the (first) host that serves it."""
    return {name: addresses[0] for name, addresses in client_addresses(topology).items()}


def render_hosts_file(topology: Topology, names: bool = True) -> str:
    """The hosts file: localhost, then (`names`) every client host name, sorted by name."""
    lines = [*_LOCALHOST]
    if names:
        lines += [f"{address} {name}" for name, address in sorted(host_names(topology).items())]
    return "\n".join(lines) + "\n"
