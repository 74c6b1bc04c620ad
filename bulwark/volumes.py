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
    """One encrypted volume: its name and what it holds."""

    name: str
    description: str


VOLUMES: tuple[Volume, ...] = (
    # Logs hold addresses, user names and message ids: encrypted on every host, kept 180 days.
    Volume("logs", "journald and /var/log"),
    Volume("mail", "Dovecot maildirs and indexes"),
    Volume("dav", "Radicale calendars and address books"),
    Volume("files", "users' files served over WebDAV and FTPS"),
    Volume("directory", "the slapd address-book database"),
    Volume("backups", "the other site's encrypted backups"),
)


def volumes_for(host: Host) -> tuple[str, ...]:
    """Names of the volumes `host` gets, sorted so that every caller sees the same order: those
    of its deployed roles, once the storage role that mounts them is deployed."""
    if not registry.role("storage").implemented:
        return ()
    return tuple(sorted({name for role in registry.deployed_roles(host) for name in role.volumes}))
