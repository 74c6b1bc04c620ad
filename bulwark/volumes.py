"""The LUKS volumes each host gets, by role (bulwark.registry says which role owns which).

Every volume is encrypted with its own key file from the vault (`luks/<host>/<volume>`), so one
leaked key opens one volume on one host. The storage role (roles/storage.py) opens and mounts
them on the device the inventory names (`volume_devices`); this module only says which exist,
so that the vault, the storage role and the audit agree. A host whose inventory says
`volumes_encrypted: false` (the container lab: no device-mapper) gets none.

The logs volume (the logs role, which the storage module deploys) is the one mounted over a
directory that already holds live data: the host's /var/log moves onto it, and the directory
beneath on the root filesystem is left empty and immutable (bulwark.luks).
"""

from __future__ import annotations

from collections.abc import Iterable
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
    # The units that read or write `path`: each gets `RequiresMountsFor=path`, so it never
    # starts on the bare mount point of a volume that is not open.
    units: tuple[str, ...] = ()
    # `path` holds the host's live data before the volume exists (/var/log): the first mount
    # moves it onto the volume, and the directory beneath is emptied and made immutable.
    moved_in: bool = False
    # Of `units`, the daemons keeping files open under `path`: restarted after a move, when
    # running, so they write on the volume rather than into their deleted files beneath.
    reopened: tuple[str, ...] = ()

    @property
    def mapper(self) -> str:
        """The device-mapper name the volume is opened as (/dev/mapper/<mapper>)."""
        return f"bulwark-{self.name}"

    @property
    def mount_unit(self) -> str:
        """The systemd mount unit of `path` (`systemd-escape --path --suffix=mount`)."""
        return unit_path_name(self.path) + ".mount"


# The unit that puts the journal on the logs volume once it is mounted, and takes it off before
# it is unmounted (templates/storage/logs.service.j2).
LOGS_UNIT = "bulwark-logs.service"
# The daemons writing log files of their own in /var/log (the others log to the journal).
LOG_FILE_WRITERS: tuple[str, ...] = ("nginx.service", "rspamd.service")

VOLUMES: tuple[Volume, ...] = (
    # Logs hold addresses, user names and message ids: encrypted on every host, kept 180 days.
    # LOGS_UNIT flushes the journal onto the volume once it is mounted (roles/storage.py); the
    # web roles' nginx and rspamd write log files of their own there (the other daemons log to
    # the journal) and would fail to start on the empty, immutable directory beneath.
    Volume(
        "logs",
        "journald and /var/log",
        "/var/log",
        (LOGS_UNIT, *LOG_FILE_WRITERS),
        moved_in=True,
        reopened=LOG_FILE_WRITERS,
    ),
    Volume("mail", "Dovecot maildirs and indexes", "/var/vmail", ("dovecot.service",)),
    Volume(
        "dav",
        "Radicale calendars and address books",
        "/var/lib/bulwark/dav",
        ("bulwark-radicale@.service",),
    ),
    Volume(
        "files",
        "users' files served over WebDAV and FTPS",
        "/var/lib/bulwark/files",
        ("bulwark-apache.service", "bulwark-files-backend.service", "bulwark-ftpd.service"),
    ),
    Volume(
        "directory",
        "the slapd address-book database",
        "/var/lib/bulwark/directory",
        ("bulwark-slapd.service", "bulwark-directory-refresh.service"),
    ),
    Volume("backups", "the other site's encrypted backups", "/var/lib/bulwark/backups"),
)


def unit_path_name(path: str) -> str:
    """A path as systemd names its units: slashes become dashes, anything else not a letter,
    digit, ':' , '_' or inner '.' becomes \\xNN (systemd.unit(5), "String Escaping")."""
    escaped = []
    for index, char in enumerate(path.strip("/")):
        if char == "/":
            escaped.append("-")
        elif char.isascii() and (char.isalnum() or char in ":_" or (char == "." and index)):
            escaped.append(char)
        else:
            escaped.append(f"\\x{ord(char):02x}")
    return "".join(escaped) or "-"


def volume(name: str) -> Volume:
    """The volume called `name`; a typo is a programming error and says so."""
    for candidate in VOLUMES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no volume {name!r}")


def volumes_for(host: Host) -> tuple[str, ...]:
    """Names of the volumes `host` gets, sorted so that every caller sees the same order: those
    of its deployed roles, once the storage role that mounts them is deployed, unless the
    host's volumes are not encrypted at all."""
    if not host.volumes_encrypted:
        return ()
    return volumes_of_roles(registry.deployed_roles(host))


def volumes_of_roles(roles: Iterable[registry.Role]) -> tuple[str, ...]:
    """Names of the volumes holding these roles' data, sorted; none until the storage role that
    mounts them is deployed."""
    if not registry.role("storage").implemented:
        return ()
    return tuple(sorted({name for role in roles if role.implemented for name in role.volumes}))
