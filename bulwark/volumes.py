"""The LUKS volumes each host gets, by role.

Every volume is encrypted with its own key file from the vault (`luks/<host>/<volume>`), so one
leaked key opens one volume on one host. The storage role opens and mounts them; this module only
says which exist, so that the vault, the storage role and the audit agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from bulwark.topology import Host


@dataclass(frozen=True)
class Volume:
    """One encrypted volume: its name, the role that needs it (None: every host), what it holds."""

    name: str
    role: str | None
    description: str


VOLUMES: tuple[Volume, ...] = (
    # Logs hold addresses, user names and message ids: encrypted on every host, kept 180 days.
    Volume("logs", None, "journald and /var/log"),
    Volume("mail", "mailstore", "Dovecot maildirs and indexes"),
    Volume("dav", "dav", "Radicale calendars and address books"),
    Volume("files", "files", "users' files served over WebDAV and FTPS"),
    Volume("directory", "directory", "the slapd address-book database"),
    Volume("backups", "backup", "the other site's encrypted backups"),
)


def volumes_for(host: Host) -> tuple[str, ...]:
    """Names of the volumes `host` gets, sorted so that every caller sees the same order."""
    return tuple(
        sorted(
            volume.name for volume in VOLUMES if volume.role is None or host.has_role(volume.role)
        )
    )
