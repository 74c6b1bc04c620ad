"""Who backs up to whom, what, and where each account's data is: the backup role's topology.

Every host keeping customer data (a BACKED_UP volume: mail, dav, files) sends hourly borg
archives to the backup host of the *next* site (sites sorted by name, wrapping around: with two
sites, the other one), over the VPN, to a sshd of the backup role's own that runs nothing but
`borg serve --append-only --restrict-to-repository` for that host's key. The directory's
database is not backed up: it is rebuilt from the CardDAV books. Logs are not either.

Each source host has one repository (`REPOSITORY_DIR/<source>` on the backup host's `backups`
volume), encrypted on the source (repokey-blake2, a random passphrase from the vault). The
backup host holds the passphrases of the repositories it keeps, because it alone prunes and
compacts them (borg must read an archive list to prune it): a source that is broken into can
add archives but never remove one, and the backup host notices an archive it did not remove
itself going missing (bulwark/backup_agent.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from bulwark import account_data, catalogue, registry
from bulwark.secret_names import (
    backup_host_key_name,
    backup_passphrase_name,
    backup_ssh_key_name,
)
from bulwark.topology import Host, Topology
from bulwark.volumes import volume

# Volumes whose data is backed up: every kind of account data (each named after its volume).
BACKED_UP_VOLUMES: tuple[str, ...] = account_data.KINDS
# Where the repositories are (the backup role's `backups` volume), owned by the backup user,
# as whom the backup sshd runs `borg serve`.
REPOSITORY_DIR = volume("backups").path
USER = "bulwark-backup"
# Deleted data stays restorable this long, then its archives are pruned and compacted away
# (seed 002: "kept in backups for 7 days after deletion").
RETENTION_DAYS = 7
# How often each source backs up, and how often the backup host prunes and drills. Pruning
# hourly keeps "gone after 7 days" within the hour.
BACKUP_SCHEDULE = "hourly"
PRUNE_SCHEDULE = "hourly"
DRILL_SCHEDULE = "daily"
# An archive older than this makes the drill (and `bulwark status`) fail: backups stopped.
STALE_HOURS = 3


@dataclass(frozen=True)
class Repository:
    """One source host's repository on its backup host."""

    source: Host
    backup_host: Host

    @property
    def path(self) -> str:
        return f"{REPOSITORY_DIR}/{self.source.name}"

    def url(self) -> str:
        """borg's ssh:// URL of the repository, over the VPN to the backup sshd."""
        port = catalogue.service("backup").port
        return f"ssh://{USER}@{self.backup_host.lan_address}:{port}{self.path}"


def backed_up_volumes(host: Host) -> tuple[str, ...]:
    """The BACKED_UP volumes of `host`'s deployed roles, sorted (whether or not encrypted: the
    container lab's data is backed up as well)."""
    names = {name for role in registry.deployed_roles(host) for name in role.volumes}
    return tuple(sorted(names & set(BACKED_UP_VOLUMES)))


def backed_up_paths(host: Host) -> tuple[str, ...]:
    """The directories `host` backs up: its BACKED_UP volumes' mount points."""
    return tuple(volume(name).path for name in backed_up_volumes(host))


def _deploys_backup_role(host: Host) -> bool:
    return host.has_role("backup") and registry.role("backup").implemented


def _site_backup_host(topology: Topology, site: str) -> Host | None:
    """The backup host of `site` that the other sites send to: its first by name, if any.

    Read from the topology's role index: every host's files ask, and a scan of a thousand
    hosts per question made rendering a thousand hosts take minutes."""
    if not registry.role("backup").implemented:
        return None
    return min(topology.hosts_with_role("backup", site), key=lambda host: host.name, default=None)


def _backup_host_of_site(topology: Topology, site: str) -> Host | None:
    """The backup host the data hosts of `site` send to: the next site's (sites sorted by
    name, wrapping around) that has one, else None."""
    sites = sorted(each.name for each in topology.sites)
    start = sites.index(site)
    for step in range(1, len(sites)):
        target = _site_backup_host(topology, sites[(start + step) % len(sites)])
        if target:
            return target
    return None


def backup_host_for(topology: Topology, source: Host) -> Host | None:
    """The backup host `source` sends to: the first (by name) of the next site's, or None when
    `source` keeps nothing to back up or no other site has one."""
    if not backed_up_volumes(source):
        return None
    return _backup_host_of_site(topology, source.site)


def repository_of(topology: Topology, source: Host) -> Repository | None:
    """`source`'s repository, or None when it backs up nothing."""
    target = backup_host_for(topology, source)
    return Repository(source, target) if target else None


def repositories_on(topology: Topology, backup_host: Host) -> tuple[Repository, ...]:
    """The repositories `backup_host` keeps, by source name: those of the data hosts of every
    site that sends to it (none unless it is its site's first backup host)."""
    if not _deploys_backup_role(backup_host):
        return ()
    sending = {
        site.name
        for site in topology.sites
        if _backup_host_of_site(topology, site.name) == backup_host
    }
    if not sending:
        return ()
    return tuple(
        Repository(source, backup_host)
        for source in sorted(topology.hosts, key=lambda host: host.name)
        if source.site in sending and backed_up_volumes(source)
    )


def secret_names(topology: Topology) -> dict[str, tuple[str, str]]:
    """The vault entries backups need: name -> (how it is made, what it is). None without a
    backup host: nothing would use them."""
    required: dict[str, tuple[str, str]] = {}
    for host in topology.hosts:
        if repository_of(topology, host):
            required[backup_ssh_key_name(host)] = (
                "ssh-ed25519",
                f"SSH key {host.name} sends its backups with (append-only on the backup host)",
            )
            required[backup_passphrase_name(host)] = (
                "password",
                f"passphrase of {host.name}'s borg repository key",
            )
        if repositories_on(topology, host):
            required[backup_host_key_name(host)] = (
                "ssh-ed25519",
                f"host key of {host.name}'s backup sshd (pinned by its sources)",
            )
    return required
