"""The roles: which exist, in which order, where they run, what they own. One table, `ROLES`.

deploy.py, the renderer, the firewall (bulwark.exposure), the audit report, `secrets generate`
(bulwark.secret), validation (bulwark.topology) and the tests all read this table; nothing else
lists roles. A role whose `module` is None is known (an inventory may give it to a host, and
validation checks its placement) but not deployed yet: it opens no port, gets no secret and no
volume, and the audit reports it as not deployed instead of promising its services.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from bulwark import catalogue
from bulwark.errors import BulwarkError

if TYPE_CHECKING:
    from bulwark.topology import Host, Topology


@dataclass(frozen=True)
class Role:
    """One role. Its catalogue services are those whose `Service.role` is its name."""

    name: str
    summary: str  # what it converges, one line (the README's and the audit's words)
    every_host: bool = False  # runs on every host; an inventory never lists it
    module: str | None = None  # roles/<module>.py deploys it; None while not implemented
    volumes: tuple[str, ...] = ()  # LUKS volumes (bulwark.volumes) holding its data
    secrets: tuple[str, ...] = ()  # kinds of vault entries it needs (bulwark.secret)
    peered: bool = False  # must be in every site: each site's copy is the other's peer
    beside: tuple[tuple[str, str], ...] = ()  # (role, why) it needs on the same host
    apart: tuple[tuple[str, str], ...] = ()  # (role, why) it cannot share a host with

    @property
    def implemented(self) -> bool:
        return self.module is not None

    @property
    def services(self) -> tuple[catalogue.Service, ...]:
        return tuple(service for service in catalogue.SERVICES if service.role == self.name)


# Deploy order (DESIGN.md): each step relies on the ones before it: packages and sshd,
# certificates, volumes, the tunnel, the ruleset, then the services.
ROLES: tuple[Role, ...] = (
    Role(
        "base",
        "apt, security-only upgrades, sshd, sysctl, journald and logrotate (180 days), time",
        every_host=True,
        module="base",
    ),
    Role(
        "pki",
        "each host's certificate and key, the internal CA as trust anchor",
        every_host=True,
        module="pki",
    ),
    Role(
        "storage",
        "LUKS2 volumes for every role's data, formatted only when blank, opened from the vault",
        every_host=True,
        module="storage",
    ),
    # roles/storage.py mounts this volume too: it moves the live /var/log onto it, keeps
    # journald volatile until it is mounted and nothing writing beneath it (issue 14).
    Role(
        "logs",
        "journald and /var/log on the encrypted logs volume",
        every_host=True,
        module="storage",
        volumes=("logs",),
    ),
    Role(
        "vpn",
        "the tunnel on gateways, a route through the site's gateway on every other host",
        every_host=True,
        module="vpn",
        secrets=("wireguard-psk",),
    ),
    # The inventory names each site's gateway; roles/vpn.py (every host) builds its tunnel.
    Role(
        "gateway",
        "the site's WireGuard endpoint to the other sites' gateways",
        module="vpn",
        secrets=("wireguard-key",),
        peered=True,
    ),
    Role(
        "firewall",
        "one nftables ruleset from the catalogue, applied with an armed rollback",
        every_host=True,
        module="firewall",
    ),
    # After the tunnel and the ruleset, so that a run deploying both sites has each Tang
    # answering the other site before the clevis role binds to it (pyinfra runs each
    # operation on every host before the next).
    Role(
        "tang",
        "Tang: the server the other site's volumes are bound to, its keys from the vault",
        module="tang",
        secrets=("tang-keys",),
        peered=True,
    ),
    Role(
        "clevis",
        "every volume bound to the other site's Tang (Clevis), opened by itself at boot",
        every_host=True,
        module="clevis",
    ),
    Role(
        "proxy",
        "IMAP, POP and SMTP over TLS on every port of their own addresses",
        module="proxy",
        apart=tuple(
            (web, "a proxy host masks Debian's nginx unit, which the web roles run")
            for web in ("mailconfig", "dav", "files")
        ),
    ),
    Role(
        "mx",
        "Postfix and rspamd: inbound MX, spam and DMARC checks, authenticated submission, "
        "DKIM signing",
        module="mx",
        secrets=("account-passwords", "dkim-keys"),
    ),
    Role(
        "mailstore",
        "Dovecot: IMAP, POP, LMTP, replication to the other site",
        module="mailstore",
        volumes=("mail",),
        secrets=("account-passwords", "doveadm-password"),
        peered=True,
    ),
    Role(
        "mailconfig",
        "nginx: mail client autoconfiguration and the MTA-STS policy, from the catalogue",
        module="mailconfig",
        beside=(("dav", "its files are served by the nginx that dav configures"),),
    ),
    Role(
        "dav",
        "Radicale behind nginx: CalDAV and CardDAV, replicated read-only to the secondary site",
        module="dav",
        volumes=("dav",),
        secrets=("account-passwords",),
        peered=True,
    ),
    Role(
        "files",
        "Apache mod_dav behind nginx and pure-ftpd: WebDAV and FTPS, replicated read-only to "
        "the secondary site",
        module="files",
        volumes=("files",),
        secrets=("account-passwords", "content-link-key"),
        peered=True,
    ),
    Role(
        "directory",
        "slapd: the read-only LDAPS address book, rebuilt from the host's CardDAV books",
        module="directory",
        volumes=("directory",),
        secrets=("account-passwords",),
        # Each site serves its local replica of the CardDAV books.
        beside=(("dav", "it serves the CardDAV books that dav keeps there"),),
    ),
    # roles/backup.py serves both: the repositories on the backup hosts, and every data host's
    # hourly archive to the other site's (bulwark.backup says who sends what where).
    Role(
        "backup",
        "the other site's encrypted, append-only borg repositories: pruned to 7 days, "
        "compacted, drilled",
        module="backup",
        volumes=("backups",),
        secrets=("backup-keys",),
        peered=True,
    ),
    Role(
        "backup-client",
        "each data host's hourly encrypted borg archive to the other site's backup host",
        every_host=True,
        module="backup",
        secrets=("backup-keys",),
    ),
)

# Roles every host gets, and roles an inventory gives to hosts: both in deploy order.
EVERY_HOST_ROLES: tuple[str, ...] = tuple(role.name for role in ROLES if role.every_host)
INVENTORY_ROLES: tuple[str, ...] = tuple(role.name for role in ROLES if not role.every_host)


def role(name: str) -> Role:
    """The registry entry of `name`; a typo is a programming error and says so."""
    for candidate in ROLES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no role {name!r} in the registry")


def host_roles(host: Host) -> tuple[Role, ...]:
    """Every role that applies to `host`, deployed or not, in deploy order."""
    return tuple(role for role in ROLES if role.every_host or host.has_role(role.name))


def deployed_roles(host: Host) -> tuple[Role, ...]:
    """The roles of `host` that have a module: only these open ports and get secrets."""
    return tuple(role for role in host_roles(host) if role.implemented)


def deployed_role_names(topology: Topology) -> frozenset[str]:
    """Names of the roles deployed on at least one host of `topology`."""
    return frozenset(role.name for host in topology.hosts for role in deployed_roles(host))


def served_services(topology: Topology) -> dict[str, catalogue.Service]:
    """The catalogue services of the roles some host of `topology` deploys, by name, in
    catalogue order: what the platform answers (DNS records, client configuration)."""
    deployed = deployed_role_names(topology)
    return {service.name: service for service in catalogue.SERVICES if service.role in deployed}


def not_deployed(topology: Topology) -> dict[str, tuple[str, ...]]:
    """Role -> the hosts that would get it, for every role the topology asks for that has no
    module yet, in deploy order: what render and deploy name as "not deployed yet"."""
    waiting: dict[str, tuple[str, ...]] = {}
    for candidate in ROLES:
        hosts = tuple(
            host.name
            for host in topology.hosts
            if not candidate.implemented and candidate in host_roles(host)
        )
        if hosts:
            waiting[candidate.name] = hosts
    return waiting


def describe_not_deployed(topology: Topology) -> str | None:
    """One line naming every role not deployed yet and its hosts, or None if there is none."""
    waiting = not_deployed(topology)
    if not waiting:
        return None
    every = len(topology.hosts)
    parts = [
        f"{name} ({'every host' if len(hosts) == every else ', '.join(hosts)})"
        for name, hosts in waiting.items()
    ]
    return "not deployed yet (no module; no port, secret or promise): " + "; ".join(parts)


def host_modules(host: Host, only: Iterable[str] | None = None) -> tuple[ModuleType, ...]:
    """The role modules that converge `host`, in deploy order, each once (the vpn module
    serves both the vpn and the gateway role). `only` narrows to some roles."""
    names: list[str] = []
    for candidate in deployed_roles(host):
        if only is not None and candidate.name not in only:
            continue
        if candidate.module not in names:
            names.append(candidate.module)
    return tuple(role_module(name) for name in names)


def role_module(name: str) -> ModuleType:
    """roles/<name>.py."""
    return importlib.import_module(f"roles.{name}")


def parse_only_roles(value: str | None) -> frozenset[str] | None:
    """`--data only_roles=a,b`: the roles a run is narrowed to (None: all of them)."""
    if value is None:
        return None
    names = frozenset(name.strip() for name in str(value).split(",") if name.strip())
    unknown = sorted(names - {role.name for role in ROLES})
    if unknown or not names:
        raise BulwarkError(
            f"only_roles: unknown role(s) {', '.join(unknown) or '(none given)'}; "
            f"roles are {', '.join(role.name for role in ROLES)}"
        )
    return names
