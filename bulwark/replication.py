"""One-way replication of a role's data from the primary site to the others (dav; files next).

The primary site (`site_primary`) takes writes; every other site holds a read-only replica
that follows it. Each host of a replicated role serves its own tree read-only: an rsync daemon
per connection, on a Unix socket only nginx can reach, behind nginx's stream TLS listener on the
LAN address (catalogue `<role>-replication`), which wants a client certificate from the internal
CA and passes only the other sites' hosts of the role (by certificate name); the firewall lets
only those hosts reach the port, through the VPN. A replica host runs `bulwark-replica follow`,
which pulls from the primary's host every FOLLOW_INTERVAL seconds over `rsync-ssl` (the server's
certificate and name verified against the internal CA, its own certificate presented), and
deletes what the primary deleted.

Making another site primary is an inventory change plus a deploy, in this order (`converge`
functions call the steps in this order; pyinfra runs each operation on every host before the
next, so the order holds across hosts):

1. a host that is no longer primary stops taking writes (`demote`, the role's own files);
2. a host that became primary stops following (`stop_following`) and pulls once more from the
   host it followed (`promote`), so no write made there before step 1 is lost; the state file
   naming that host is removed in the same command, so a run cut short repeats the pull and
   a completed one never pulls again (it would delete the new primary's writes);
3. the new primary takes writes (the role's files again);
4. the replicas follow the new primary (`follow`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta

from bulwark import catalogue, pki
from bulwark.deploying import (
    install,
    keep_running,
    pinned_address,
    restarted,
    service,
    units_reread,
)
from bulwark.hoststate import expect, host_state
from bulwark.livecheck import LiveCheck
from bulwark.plan import ManagedFile
from bulwark.probes import Replica, Unit, Units
from bulwark.render import RenderedFile
from bulwark.topology import Host, Topology

# Seconds between two pulls of a replica: the replica is at most this plus one pull behind.
FOLLOW_INTERVAL = 5
# Seconds an rsync transfer may sit without I/O before it gives up (the next pull retries).
IO_TIMEOUT = 30
SCRIPT = "/usr/local/sbin/bulwark-replica"
CONFIG_DIR = "/etc/bulwark/replication"
STATE_DIR = "/var/lib/bulwark/replication"
SOCKET_DIR = "/run/bulwark"
# The group of nginx's workers: the only non-root processes that may reach the rsync sockets.
NGINX_GROUP = "www-data"


@dataclass(frozen=True)
class Tree:
    """A role's replicated data: the directory, the system user owning it, and the names
    (rsync patterns) that are the host's own and never copied: caches, locks, temporaries."""

    role: str
    path: str
    owner: str
    excludes: tuple[str, ...] = ()

    @property
    def service(self) -> catalogue.Service:
        """The catalogue's replication listener of the role."""
        return catalogue.service(f"{self.role}-replication")

    @property
    def socket(self) -> str:
        return source_socket(self.role)

    @property
    def rsyncd_config(self) -> str:
        return f"{CONFIG_DIR}/{self.role}-rsyncd.conf"

    @property
    def follow_config(self) -> str:
        return f"{CONFIG_DIR}/{self.role}.conf"

    @property
    def state_file(self) -> str:
        """Names the host this replica last pulled from; absent on a primary that no longer
        owes a final pull."""
        return f"{STATE_DIR}/{self.role}.source"

    @property
    def synced_file(self) -> str:
        """Touched by the follower after each successful pull (its age is the replica's lag)."""
        return f"{STATE_DIR}/{self.role}.synced"

    @property
    def source_unit(self) -> str:
        return f"bulwark-replica-source-{self.role}.socket"

    @property
    def follow_unit(self) -> str:
        return f"bulwark-replica-{self.role}.service"


def source_socket(role: str) -> str:
    """The rsync daemon's socket of `role`, behind nginx's TLS listener."""
    return f"{SOCKET_DIR}/replica-{role}.sock"


def listener(topology: Topology, host: Host, role: str) -> dict[str, Any]:
    """nginx's stream server for `role` on `host` (templates/web-shared/nginx.conf.j2): where
    it listens, the certificate names it lets through, and the socket it forwards them to."""
    return {
        "role": role,
        "listen": f"{host.lan_address}:{catalogue.service(f'{role}-replication').port}",
        "clients": replica_clients(topology, host, role),
        "socket": source_socket(role),
    }


def is_primary(topology: Topology, host: Host) -> bool:
    return host.site == topology.primary_site.name


def primary_host(topology: Topology, role: str) -> Host:
    """The primary site's host of `role` (validation: a replicated role is in every site)."""
    return topology.hosts_with_role(role, topology.primary_site.name)[0]


def replica_clients(topology: Topology, host: Host, role: str) -> tuple[str, ...]:
    """Certificate names allowed to pull from `host`: the role's hosts in the other sites."""
    return tuple(
        sorted(
            topology.fqdn(other)
            for other in topology.hosts_with_role(role)
            if other.site != host.site
        )
    )


def managed_files(tree: Tree, host: Host, script_owner: bool) -> tuple[ManagedFile, ...]:
    """The source side (rsync daemon and its socket) and the follower of `tree`; the shared
    script when `script_owner` (the first replicated role of the host writes it)."""
    role = tree.role
    return (
        *((ManagedFile(SCRIPT, "bulwark-replica.sh.j2", mode="0755"),) if script_owner else ()),
        ManagedFile(tree.rsyncd_config, "replica-rsyncd.conf.j2"),
        ManagedFile(f"/etc/systemd/system/{tree.source_unit}", "replica-source.socket.j2"),
        ManagedFile(
            f"/etc/systemd/system/bulwark-replica-source-{role}@.service",
            "replica-source@.service.j2",
        ),
        ManagedFile(f"/etc/systemd/system/{tree.follow_unit}", "replica-follow.service.j2"),
        ManagedFile(tree.follow_config, "replica-follow.conf.j2"),
    )


def template_context(topology: Topology, host: Host, tree: Tree) -> dict[str, Any]:
    """What the replication templates (templates/replication-shared) need."""
    primary = primary_host(topology, tree.role)
    return {
        "replication": {
            "role": tree.role,
            "path": tree.path,
            "owner": tree.owner,
            "excludes": tree.excludes,
            "socket": tree.socket,
            "socket_group": NGINX_GROUP,
            "rsyncd_config": tree.rsyncd_config,
            "follow_config": tree.follow_config,
            "follow_unit": tree.follow_unit,
            "state_dir": STATE_DIR,
            "config_dir": CONFIG_DIR,
            "script": SCRIPT,
            "interval": FOLLOW_INTERVAL,
            "io_timeout": IO_TIMEOUT,
            "port": tree.service.port,
            "primary": primary.site,
            # Empty on the primary: it follows nobody.
            "source": "" if is_primary(topology, host) else topology.fqdn(primary),
            "certificate": pki.HOST_CERT_PATH,
            "private_key": pki.HOST_KEY_PATH,
            "ca_certificate": pki.CA_CERT_PATH,
        }
    }


def live_checks(topology: Topology, host: Host, tree: Tree) -> tuple[LiveCheck, ...]:
    """What `status` and `drift` check of `tree` on `host`: the source serving, the follower
    running on a replica and stopped on the primary (as `serve`, `stop_following` and `follow`
    keep them), the replica's lag or the primary's owed final pull."""
    primary = is_primary(topology, host)
    follower = Unit(tree.follow_unit, False, False) if primary else Unit(tree.follow_unit)
    return (
        Units((Unit(tree.source_unit), follower)),
        Replica(tree.role, primary, tree.synced_file, tree.state_file),
    )


def serve(tree: Tree, files: dict[str, RenderedFile]) -> None:
    """Every host serves its tree read-only to the other sites' replicas (the primary to
    its followers, a replica to the primary that may one day need its final pull)."""
    role = tree.role
    install(
        role,
        [
            files[tree.rsyncd_config],
            files[f"/etc/systemd/system/{tree.source_unit}"],
            files[f"/etc/systemd/system/bulwark-replica-source-{role}@.service"],
        ],
        then=restarted(tree.source_unit, unit_files_changed=True),
    )
    keep_running(role, tree.source_unit)


def stop_following(topology: Topology, host: Host, tree: Tree) -> None:
    """Step 2 on the primary: its follower stops and stays off."""
    if is_primary(topology, host):
        service(f"{tree.role}: not following (primary site)", tree.follow_unit, False, False)


def promote(topology: Topology, host: Host, tree: Tree) -> OperationMeta | None:
    """Step 2 on the primary: the final pull from the host it followed, if it still owes one."""
    if not is_primary(topology, host):
        return None
    expect(paths=(tree.state_file,))
    return final_pull(
        name=f"{tree.role}: final pull from the former primary",
        role=tree.role,
        state_file=tree.state_file,
    )


def follow(topology: Topology, host: Host, tree: Tree, files: dict[str, RenderedFile]) -> None:
    """Step 4: on a replica, the primary's name at its LAN address, the follower's script and
    configuration (restarted when they changed) and the follower running; on the primary the
    files only (its configuration names no source)."""
    role = tree.role
    # The script too: a running shell keeps reading the file it started from, so a new
    # script reaches the follower only through its restart.
    follower = [
        *((files[SCRIPT],) if SCRIPT in files else ()),
        files[tree.follow_config],
        files[f"/etc/systemd/system/{tree.follow_unit}"],
    ]
    if is_primary(topology, host):
        install(role, follower, then=units_reread())
        return
    primary = primary_host(topology, role)
    pinned_address(role, topology.fqdn(primary), str(primary.lan_address))
    install(role, follower, then=restarted(tree.follow_unit, unit_files_changed=True))
    keep_running(role, tree.follow_unit)


@operation()
def final_pull(role: str, state_file: str):
    """Pull once from the host named in `state_file`, then remove it (one command: a pull cut
    short is repeated by the next run, a completed one never).

    + role: the replicated role (bulwark-replica's argument)
    + state_file: where the follower recorded its source

    **Example:**

    .. code:: python

        final_pull(
            name="dav: final pull from the former primary",
            role="dav",
            state_file="/var/lib/bulwark/replication/dav.source",
        )
    """
    if host_state(paths=(state_file,)).files[state_file] is None:
        current_host.noop("no final pull owed")
        return
    yield StringCommand(SCRIPT, "promote", QuoteString(role))
