"""The service catalogue: every port the platform listens on, and nothing else lists ports.

Facts come from the seeds (`shared/seeds/`): client-facing endpoints, their TLS modes and host
names. The firewall rules, daemon listeners, testinfra expectations, TLS scan targets and the
audit report's port matrix are all generated from `SERVICES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Tls(StrEnum):
    """How a service protects its traffic."""

    IMPLICIT = "implicit"  # TLS from the first byte (993, 995, 465, 443, 636)
    STARTTLS = "starttls"  # plaintext greeting, TLS required before authentication (587, 21)
    OPPORTUNISTIC = "opportunistic"  # STARTTLS offered, not required (MX on 25, RFC 3207)
    REDIRECT = "redirect"  # plain HTTP that only answers with a redirect to HTTPS
    NATIVE = "native"  # the protocol's own encryption (SSH, WireGuard)
    LOOPBACK = "loopback"  # none: a local service, never reachable from the network


class Exposure(StrEnum):
    """Who may connect: the firewall's source filter for the service."""

    PUBLIC = "public"  # anyone
    ROLE = "role"  # only the hosts of the roles in `Service.clients` (their LAN addresses)
    PEER_GATEWAY = "peer-gateway"  # the other sites' gateways' public addresses only
    MANAGEMENT = "management"  # the management networks and the inventory's admin networks
    LOCAL = "local"  # loopback only, never in the firewall


class Scope(StrEnum):
    """Where a client role's hosts are, seen from the host running the service."""

    SAME_SITE = "same site"  # on the site LAN
    PEER_SITE = "peer site"  # in the other sites, through the VPN


@dataclass(frozen=True, order=True)
class Clients:
    """The hosts of one role allowed to reach a service of Exposure.ROLE (bulwark.exposure
    resolves them to addresses from the topology). `role` is a name in bulwark.registry."""

    role: str
    scope: Scope

    def __str__(self) -> str:
        return f"{self.role} ({self.scope})"


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"


# SSH's port: the operator's way in on every host, never given to anything else.
SSH_PORT = 22
# The firewall-friendly proxies (seed: "any port; commonly open ports include 80, 21, 25 and
# 443") each have an address of their own, and every TCP port of it reaches the proxied
# protocol, except the proxy host's own TCP services: SSH from the management networks.
# (WireGuard, the gateway's other service, is UDP; the proxies translate TCP only.)
PROXY_EXCLUDED_PORTS: tuple[int, ...] = (SSH_PORT,)
PROXY_PORTS: tuple[int, ...] = tuple(
    port for port in range(1, 65536) if port not in PROXY_EXCLUDED_PORTS
)

# pure-ftpd's passive data ports. The nftables FTP helper cannot read an encrypted control
# channel, so the range is opened explicitly.
FTP_PASSIVE_PORTS: tuple[int, int] = (50000, 50100)
# Where an FTP server's active-mode data connections come from (RFC 959: the control port's
# neighbour): the firewall refuses to start them, so only passive mode works.
FTP_ACTIVE_DATA_PORT = 20


@dataclass(frozen=True, order=True)
class Service:
    """One listening service of one role (a name in bulwark.registry).

    `names` are the client host-name labels, qualified with the platform domain by `fqdns`.
    `ports` is a tuple because FTP's passive range and the proxies listen on several.
    `clients`: who may connect to a service of Exposure.ROLE (and only to those).
    `logins`: the service checks passwords from the internet, so its failures are counted and
    an address that keeps failing is banned (bulwark.bruteforce).
    `on_demand`: a port listens only while a client's session asked for it (FTP's passive
    data ports): open in the firewall, but silent to a scan.
    `listen`: a proxy's one socket. It is served on an address of its own (the host's
    `proxy_addresses[names[0]]`), where the firewall translates every port of `ports` to
    `listen`. `forwards_to`: the service the proxy passes each connection to, untouched.
    """

    name: str
    role: str
    ports: tuple[int, ...]
    transport: Transport
    tls: Tls
    exposure: Exposure
    names: tuple[str, ...] = ()
    description: str = ""
    clients: tuple[Clients, ...] = ()
    logins: bool = False
    on_demand: bool = False
    listen: int | None = None
    forwards_to: str = ""

    @property
    def port(self) -> int:
        """The service's main port (the first of `ports`)."""
        return self.ports[0]

    @property
    def bound_ports(self) -> tuple[int, ...]:
        """The ports its daemon binds: a proxy's one listener (its ports are all on an address
        of its own, translated to it), any other service's ports."""
        return self.ports if self.listen is None else (self.listen,)

    def fqdns(self, domain: str) -> tuple[str, ...]:
        return tuple(qualified_name(label, domain) for label in self.names)


def qualified_name(label: str, domain: str, site: str | None = None) -> str:
    """A client host name: `imap.DOMAIN` (the primary site's) or, for one site,
    `imap.SITE.DOMAIN`."""
    return f"{label}.{site}.{domain}" if site else f"{label}.{domain}"


def _proxied(name: str, role: str, port: int, protocol: str) -> Service:
    """A mail role's listener for the site's proxies (roles/proxy.py): the client's own TLS,
    after a PROXY protocol header naming it, which only the proxies may send."""
    return Service(
        name,
        role,
        (port,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.ROLE,
        description=f"{protocol} over TLS from the site's proxies, a PROXY protocol header "
        "naming the client first; on the LAN address only",
        clients=(Clients("proxy", Scope.SAME_SITE),),
    )


def _range(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


SERVICES: tuple[Service, ...] = (
    Service(
        "ssh",
        "base",
        (SSH_PORT,),
        Transport.TCP,
        Tls.NATIVE,
        Exposure.MANAGEMENT,
        description="operator access, key-only, from management and admin networks",
    ),
    Service(
        "wireguard",
        "gateway",
        (51820,),
        Transport.UDP,
        Tls.NATIVE,
        Exposure.PEER_GATEWAY,
        description="site-to-site tunnel; all traffic between the data centers",
    ),
    *(
        Service(
            name,
            "proxy",
            PROXY_PORTS,
            Transport.TCP,
            Tls.IMPLICIT,
            Exposure.PUBLIC,
            names=(name,),
            description=f"{protocol} over TLS on every port of its own address, passed through "
            "untouched to the site's mail hosts with the client's address (PROXY protocol)",
            listen=listen,
            forwards_to=backend,
        )
        for name, protocol, listen, backend in (
            ("imaps-proxy", "IMAP", 993, "imaps-proxied"),
            ("pops-proxy", "POP", 995, "pop3s-proxied"),
            ("smtps-proxy", "SMTP submission", 465, "submissions-proxied"),
        )
    ),
    Service(
        "smtp",
        "mx",
        (25,),
        Transport.TCP,
        Tls.OPPORTUNISTIC,
        Exposure.PUBLIC,
        names=("mx",),
        description="inbound mail from other servers; STARTTLS offered, never required",
    ),
    Service(
        "submissions",
        "mx",
        (465,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.PUBLIC,
        names=("smtp",),
        description="authenticated submission, implicit TLS",
        logins=True,
    ),
    _proxied("submissions-proxied", "mx", 10465, "authenticated submission"),
    Service(
        "submission",
        "mx",
        (587,),
        Transport.TCP,
        Tls.STARTTLS,
        Exposure.PUBLIC,
        names=("smtp",),
        description="authenticated submission, STARTTLS before AUTH",
        logins=True,
    ),
    Service(
        "spam-filter",
        "mx",
        (11332,),
        Transport.TCP,
        Tls.LOOPBACK,
        Exposure.LOCAL,
        description="rspamd, Postfix's milter: DKIM signing, SPF/DKIM/DMARC checks, spam "
        "filtering; loopback only",
    ),
    Service(
        "imaps",
        "mailstore",
        (993,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.PUBLIC,
        names=("imap",),
        description="IMAP, implicit TLS only; 143 never listens",
        logins=True,
    ),
    Service(
        "pop3s",
        "mailstore",
        (995,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.PUBLIC,
        names=("pop",),
        description="POP3, implicit TLS only; 110 never listens",
        logins=True,
    ),
    _proxied("imaps-proxied", "mailstore", 10993, "IMAP"),
    _proxied("pop3s-proxied", "mailstore", 10995, "POP3"),
    Service(
        "lmtp",
        "mailstore",
        (24,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.ROLE,
        description="delivery from the site's MX hosts to its mail store; TLS from the first byte",
        clients=(Clients("mx", Scope.SAME_SITE),),
    ),
    Service(
        "mail-replication",
        "mailstore",
        (12345,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.ROLE,
        description="dsync replication between the sites' mail stores, over the VPN",
        clients=(Clients("mailstore", Scope.PEER_SITE),),
    ),
    Service(
        "https-mailconfig",
        "mailconfig",
        (443,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.PUBLIC,
        names=("autoconfig", "autodiscover", "mta-sts"),
        description="mail client autoconfiguration (Thunderbird, Outlook, Apple profile) and "
        "the MTA-STS policy; static, no login; HSTS and CSP",
    ),
    Service(
        "http-mailconfig",
        "mailconfig",
        (80,),
        Transport.TCP,
        Tls.REDIRECT,
        Exposure.PUBLIC,
        names=("autoconfig", "autodiscover", "mta-sts"),
        description="redirects to HTTPS and nothing else",
    ),
    Service(
        "https-dav",
        "dav",
        (443,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.PUBLIC,
        names=("caldav", "carddav"),
        description="CalDAV and CardDAV with .well-known discovery; HSTS and CSP",
        logins=True,
    ),
    Service(
        "http-dav",
        "dav",
        (80,),
        Transport.TCP,
        Tls.REDIRECT,
        Exposure.PUBLIC,
        names=("caldav", "carddav"),
        description="redirects to HTTPS and nothing else",
    ),
    Service(
        "dav-replication",
        "dav",
        (8730,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.ROLE,
        description="the secondary site pulls calendars and contacts (rsync over TLS, client "
        "certificates from the internal CA) through the VPN",
        clients=(Clients("dav", Scope.PEER_SITE),),
    ),
    Service(
        "https-files",
        "files",
        (443,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.PUBLIC,
        names=("webdav", "myfiles"),
        description="WebDAV files; myfiles is rooted in the user's files; HSTS and CSP",
        logins=True,
    ),
    Service(
        "http-files",
        "files",
        (80,),
        Transport.TCP,
        Tls.REDIRECT,
        Exposure.PUBLIC,
        names=("webdav", "myfiles"),
        description="redirects to HTTPS and nothing else",
    ),
    Service(
        "ftp",
        "files",
        (21,),
        Transport.TCP,
        Tls.STARTTLS,
        Exposure.PUBLIC,
        names=("ftp",),
        description="FTP with explicit TLS required for login and data",
        logins=True,
    ),
    Service(
        "ftp-passive",
        "files",
        _range(*FTP_PASSIVE_PORTS),
        Transport.TCP,
        Tls.STARTTLS,
        Exposure.PUBLIC,
        names=("ftp",),
        description="FTP passive data connections, TLS like the control channel (PROT P)",
        on_demand=True,
    ),
    Service(
        "files-replication",
        "files",
        (8731,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.ROLE,
        description="the secondary site pulls the accounts' files (rsync over TLS, client "
        "certificates from the internal CA) through the VPN",
        clients=(Clients("files", Scope.PEER_SITE),),
    ),
    Service(
        "ldaps",
        "directory",
        (636,),
        Transport.TCP,
        Tls.IMPLICIT,
        Exposure.PUBLIC,
        names=("ldap",),
        description="read-only address book; 389 never listens",
        logins=True,
    ),
    Service(
        "backup",
        "backup",
        (2222,),
        Transport.TCP,
        Tls.NATIVE,
        Exposure.ROLE,
        description="the other site's data hosts send their borg backups over the VPN, by SSH "
        "to a sshd of its own that runs nothing but `borg serve --append-only`",
        # The hosts keeping customer data (bulwark.backup.BACKED_UP_VOLUMES' roles).
        clients=tuple(Clients(role, Scope.PEER_SITE) for role in ("mailstore", "dav", "files")),
    ),
    Service(
        "tang",
        "tang",
        (7500,),
        Transport.TCP,
        # Tang's McCallum-Relyea exchange: what crosses the wire never opens a volume, and
        # clients pin the server's signing key (bulwark.tang), so no TLS is needed.
        Tls.NATIVE,
        Exposure.ROLE,
        description="Tang: the other site's hosts open their volumes at boot (Clevis), "
        "over the VPN",
        clients=(Clients("clevis", Scope.PEER_SITE),),
    ),
)


# Ports that must never listen anywhere: the plaintext twins of the services above.
FORBIDDEN_PORTS: tuple[int, ...] = (110, 143, 389)


def services_for_roles(roles: Iterable[str]) -> tuple[Service, ...]:
    """The services a host with these roles runs (SSH always), in catalogue order."""
    wanted = {"base", *roles}
    return tuple(service for service in SERVICES if service.role in wanted)


def proxies() -> tuple[Service, ...]:
    """The firewall-friendly proxies, in catalogue order."""
    return tuple(service for service in SERVICES if service.listen is not None)


def service(name: str) -> Service:
    """Look a service up by name; a typo is a programming error and says so."""
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no service {name!r} in the catalogue")


def host_names(roles: Iterable[str], domain: str) -> tuple[str, ...]:
    """Client host names served by a host with these roles, sorted and unique."""
    return tuple(sorted({fqdn for svc in services_for_roles(roles) for fqdn in svc.fqdns(domain)}))
