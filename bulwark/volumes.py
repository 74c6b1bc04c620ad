"""The LUKS volumes each host gets, by role (bulwark.registry says which role owns which).

Every volume is encrypted with its own key file from the vault (`luks/<host>/<volume>`), so one
leaked key opens one volume on one host. The storage role opens and mounts them; this module only
says which exist, so that the vault, the storage role and the audit agree. Until the storage
role is deployed nothing mounts a volume, so no host gets one (and the vault no key for one).
"""

from __future__ import annotations

from dataclasses import dataclass

from bulwark import registry
from bulwark.topology import Host


@dataclass(frozen=True)
class Volume:
    """One encrypted volume: its name, what it holds, and where: the one directory its role
    keeps that data under (the storage role mounts the volume there)."""

    name: str
    description: str
    path: str


VOLUMES: tuple[Volume, ...] = (
    # Logs hold addresses, user names and message ids: encrypted on every host, kept 180 days.
    Volume("logs", "journald and /var/log", "/var/log"),
    Volume("mail", "Dovecot maildirs and indexes", "/var/vmail"),
    Volume("dav", "Radicale calendars and address books", "/var/lib/bulwark/dav"),
    Volume("files", "users' files served over WebDAV and FTPS", "/var/lib/bulwark/files"),
    Volume("directory", "the slapd address-book database", "/var/lib/bulwark/directory"),
    Volume("backups", "the other site's encrypted backups", "/var/lib/bulwark/backups"),
)


def volume(name: str) -> Volume:
    """The volume called `name`; a typo is a programming error and says so."""
    for candidate in VOLUMES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no volume {name!r}")


def volumes_for(host: Host) -> tuple[str, ...]:
    """Names of the volumes `host` gets, sorted so that every caller sees the same order: those
    of its deployed roles, once the storage role that mounts them is deployed."""
    if not registry.role("storage").implemented:
        return ()
    return tuple(sorted({name for role in registry.deployed_roles(host) for name in role.volumes}))
