"""The internet namespace's /etc/hosts: every catalogue host name at the public address serving
it, and the content origin.

The end-to-end clients connect by name, as real clients do: `imap.DOMAIN` reaches the primary
site's mail store, `imap.SITE.DOMAIN` the given site's.
"""

from __future__ import annotations

from bulwark import catalogue
from bulwark.topology import Topology

_LOCALHOST = ("127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback")


def host_names(topology: Topology) -> dict[str, str]:
    """Client host name -> public address of the host that serves it."""
    names: dict[str, str] = {}
    primary = topology.primary_site.name
    for service in catalogue.SERVICES:
        if not service.names:
            continue
        for site in topology.sites:
            serving = [
                host
                for host in topology.hosts_with_role(service.role, site.name)
                if host.public_address is not None
            ]
            if not serving:
                continue
            # A proxy answers on an address of its own, the host's for anything else.
            address = str(serving[0].own_address(service) or serving[0].public_address)
            for label in service.names:
                names.setdefault(f"{label}.{site.name}.{topology.domain}", address)
                if site.name == primary:
                    names.setdefault(f"{label}.{topology.domain}", address)
    files = [host for host in topology.hosts_with_role("files", primary) if host.public_address]
    if files:  # users' files open from the isolated origin the primary's files hosts serve
        names.setdefault(topology.content_origin, str(files[0].public_address))
    return names


def render_hosts_file(topology: Topology) -> str:
    """The hosts file: localhost, then every client host name, sorted by name."""
    lines = [*_LOCALHOST]
    lines += [f"{address} {name}" for name, address in sorted(host_names(topology).items())]
    return "\n".join(lines) + "\n"
