"""What mail clients and other mail servers fetch over HTTPS before they reach our mail: the
client settings (Thunderbird's autoconfig, Outlook's autodiscover, an Apple configuration
profile) and the MTA-STS policy (RFC 8461). All of it is static, derived from the catalogue and
the topology (pure functions: rendering needs no connection); roles/mailconfig.py writes the
files, and the web hosts' nginx (bulwark.web) serves them on the catalogue's names.

Clients are pointed at the implicit-TLS ports alone (the seeds' IMAP 993, POP 995, SMTP 465)
with the full address as user name; nothing on these names asks for a password.
"""

from __future__ import annotations

import uuid
from typing import Any

from bulwark import catalogue, dns, registry
from bulwark.topology import Topology

# Where the files live on a web host; nginx reads them from here.
CONFIG_DIR = "/etc/bulwark/mailconfig"
THUNDERBIRD_FILE = f"{CONFIG_DIR}/config-v1.1.xml"
AUTODISCOVER_FILE = f"{CONFIG_DIR}/autodiscover.xml"
APPLE_PROFILE_FILE = f"{CONFIG_DIR}/apple.mobileconfig"
MTA_STS_FILE = f"{CONFIG_DIR}/mta-sts.txt"
# The URL paths they are served at (Thunderbird asks both of its autoconfig paths; Outlook's
# path is matched without regard to case, as Exchange does).
THUNDERBIRD_PATHS: tuple[str, ...] = (
    "/mail/config-v1.1.xml",
    "/.well-known/autoconfig/mail/config-v1.1.xml",
)
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
APPLE_PROFILE_PATH = "/apple.mobileconfig"
MTA_STS_PATH = "/.well-known/mta-sts.txt"
# What each client is told, by catalogue service: incoming (Thunderbird's server type) first.
INCOMING: dict[str, str] = {"imaps": "imap", "pop3s": "pop3"}
OUTGOING = "submissions"


def client_settings(topology: Topology) -> dict[str, Any]:
    """Host, port and kind of every client endpoint the platform serves, for the templates:
    the mail services of INCOMING and OUTGOING, and the CalDAV/CardDAV base URLs."""
    served = registry.served_services(topology)
    domain = topology.domain

    def endpoint(service: catalogue.Service, label: str | None = None) -> dict[str, Any]:
        name = catalogue.qualified_name(label or service.names[0], domain)
        return {"host": name, "port": service.port}

    dav = served.get("https-dav")
    return {
        "domain": domain,
        "incoming": [
            {"type": kind, **endpoint(served[name])}
            for name, kind in INCOMING.items()
            if name in served
        ],
        "outgoing": endpoint(served[OUTGOING]) if OUTGOING in served else None,
        "dav": {label: endpoint(dav, label) for label in dav.names} if dav else {},
        # Stable identifiers for the Apple profile: the same domain gives the same profile.
        "uuids": {
            payload: str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{payload}.{domain}"))
            for payload in ("profile", "mail", "caldav", "carddav")
        },
    }


def template_context(topology: Topology) -> dict[str, Any]:
    """What the role's templates need."""
    return {"mailconfig": {**client_settings(topology), "mta_sts": dns.mta_sts_policy(topology)}}


def nginx_context(topology: Topology) -> dict[str, Any]:
    """What nginx's mailconfig servers need (bulwark.web.front_context)."""
    return {
        "thunderbird": {"file": THUNDERBIRD_FILE, "paths": THUNDERBIRD_PATHS},
        "autodiscover": {"file": AUTODISCOVER_FILE, "path": AUTODISCOVER_PATH},
        "apple": {"file": APPLE_PROFILE_FILE, "path": APPLE_PROFILE_PATH},
        "mta_sts": {"file": MTA_STS_FILE, "path": MTA_STS_PATH},
    }
