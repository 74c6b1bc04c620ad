"""files: the accounts' files over WebDAV (Apache mod_dav behind nginx) and FTPS (pure-ftpd),
one tree per account, replicated read-only to the secondary site.

Each account's files are `<DATA_DIR>/<root>/<root>/files/` on disk, `<root>` being
`<user>.<domain>` (Topology.files_root): WebDAV serves them at
`https://webdav.DOMAIN/<root>/files/` and, rooted, at `https://myfiles.DOMAIN/`; an FTP session
is chrooted to `<DATA_DIR>/<root>/`, so it sees `/<root>/files/` as the seed says.

nginx authenticates every request with an app password and asks `bulwark-filesauth` (the
credential checker of bulwark/webauth.py, running as the files' owner so it can measure them)
whether the path is the principal's own, whether the upload fits its quota, and whether a
browser should be sent to the isolated content origin instead; Apache, reachable only through
a Unix socket that nginx's group may open (systemd-socket-proxyd into Apache's private network
namespace), confines each request to the tree nginx names again. PROPFIND goes to Apache
through the checker, which joins Apache's namespace too and adds the quota properties (RFC 4331)
mod_dav_fs lacks. pure-ftpd asks the same checker (its extauth protocol) and is told the chroot
and the quota.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy

from bulwark import bruteforce, catalogue, closure, replication, web, webauth
from bulwark.deploying import (
    directory,
    file_present,
    install,
    keep_running,
    masked,
    packages,
    render_for_deploy,
    restarted,
    system_user,
)
from bulwark.livecheck import LiveCheck
from bulwark.operations import STAGED, Activation, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Directories, Directory, Disk, Unit, Units, WriteSwitch
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology
from bulwark.volumes import volume

ROLE = "files"

PACKAGES: tuple[str, ...] = (*web.PACKAGES, "apache2", "pure-ftpd")
# Debian's own units for the two daemons: masked before the packages are installed, so neither
# ever starts on Debian's configuration (Apache on every address's port 80, pure-ftpd on 21).
DEBIAN_UNITS: tuple[str, ...] = (
    "apache2.service",
    "apache-htcacheclean.service",
    "pure-ftpd.service",
)
USER = "bulwark-files"
NO_LOGIN = "/usr/sbin/nologin"
# Every account's files, one directory (the storage role's `files` volume).
DATA_DIR = volume("files").path
CONFIG_DIR = "/etc/bulwark/files"
# mod_dav's lock database: the host's own, never replicated.
LOCK_DIR = "/var/lib/bulwark/files-locks"
# Apache's runtime files (pid, mutexes): a lasting directory, so that its configuration check
# before a deploy finds it too.
APACHE_RUN_DIR = "/var/lib/bulwark/files-apache"
# pure-ftpd's usage file in each chroot (bulwark-filesauth rewrites it at each login): the
# host's own figure, never replicated.
FTP_QUOTA_FILE = ".ftpquota"
TREE = replication.Tree(ROLE, DATA_DIR, USER, (f"/*/{FTP_QUOTA_FILE}",))

APACHE_CONFIG = f"{CONFIG_DIR}/apache2.conf"
APACHE_UNIT = "bulwark-apache.service"
# Apache listens here inside its own network namespace: nothing else on the host can reach it
# but the two units joining it (the backend's socket for nginx, the checker for PROPFIND).
APACHE_LISTEN = "127.0.0.1:8080"
# nginx reaches Apache through this socket (systemd-socket-proxyd, joined to Apache's namespace).
BACKEND_SOCKET = web.backend_socket("files")
BACKEND_UNIT = "bulwark-files-backend.service"
BACKEND_SOCKET_UNIT = "bulwark-files-backend.socket"
FTP_UNIT = "bulwark-ftpd.service"
# Simultaneous FTP sessions: in all, and from one address (an office behind one NAT address).
FTP_MAX_CLIENTS = 100
FTP_MAX_PER_ADDRESS = 16
# Minutes an idle FTP session is kept.
FTP_IDLE_MINUTES = 15
# umask of files and directories created over FTP and WebDAV: the owner alone.
UMASK = "0077"
UNIT_FILES: tuple[str, ...] = (
    f"/etc/systemd/system/{APACHE_UNIT}",
    f"/etc/systemd/system/{BACKEND_UNIT}",
    f"/etc/systemd/system/{BACKEND_SOCKET_UNIT}",
)
APACHE_CHECK = Check(APACHE_CONFIG, ("apache2", "-t", "-f", STAGED))
# The units joining Apache's namespace restart after it, so they are in the one it runs in.
APACHE_RESTART = Activation(
    f"{APACHE_UNIT}-restart",
    (
        ("systemctl", "daemon-reload"),
        ("systemctl", "restart", APACHE_UNIT),
        ("systemctl", "try-restart", BACKEND_UNIT, web.FILESAUTH_UNIT_PATTERN),
    ),
)


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(APACHE_CONFIG, "apache2.conf.j2"),
        ManagedFile(UNIT_FILES[0], "bulwark-apache.service.j2"),
        ManagedFile(UNIT_FILES[1], "bulwark-files-backend.service.j2"),
        ManagedFile(UNIT_FILES[2], "bulwark-files-backend.socket.j2"),
        ManagedFile(f"/etc/systemd/system/{FTP_UNIT}", "bulwark-ftpd.service.j2"),
        *web.files_auth_files(),
        ManagedFile(web.writes_config(ROLE), "nginx-writes.conf.j2"),
        *replication.managed_files(TREE, host, script_owner=not host.has_role("dav")),
        *web.front_files(ROLE, host),
        *bruteforce.watcher_files(ROLE, host),
        *closure.purge_files(ROLE, host),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    primary = replication.is_primary(topology, host)
    names = web.role_names(topology, host, ROLE)
    return {
        **web.front_context(topology, host, secrets),
        **web.files_auth_context(topology, host, secrets, USER, DATA_DIR),
        **web.writes_context(topology, host, ROLE),
        **replication.template_context(topology, host, TREE),
        **bruteforce.watcher_context(topology, host),
        **closure.purge_context(topology, host),
        "files": {
            "user": USER,
            "config": APACHE_CONFIG,
            "data_dir": DATA_DIR,
            "lock_dir": LOCK_DIR,
            "run_dir": APACHE_RUN_DIR,
            "apache_listen": APACHE_LISTEN,
            "xml_body_limit": webauth.MAX_PROPFIND_BODY,
            "apache_unit": APACHE_UNIT,
            "backend_socket": BACKEND_SOCKET,
            "backend_socket_unit": BACKEND_SOCKET_UNIT,
            "socket_group": replication.NGINX_GROUP,
            "webdav": names["webdav"],
            "myfiles": names["myfiles"],
            "read_only": not primary,
            "umask": UMASK,
            "ftp": {
                "address": str(host.public_address),
                "port": catalogue.service("ftp").port,
                "passive": catalogue.FTP_PASSIVE_PORTS,
                "max_clients": FTP_MAX_CLIENTS,
                "max_per_address": FTP_MAX_PER_ADDRESS,
                "idle_minutes": FTP_IDLE_MINUTES,
                "extauth_socket": web.FILESAUTH_FTP_SOCKET,
            },
        },
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """Apache, its socket, pure-ftpd, the checker; the data and its disk; replication and the
    write switch agreeing with `site_primary`."""
    return (
        Units(
            (
                Unit(APACHE_UNIT),
                Unit(BACKEND_SOCKET_UNIT),
                Unit(FTP_UNIT),
                *web.files_auth_units(),
                *web.front_units(ROLE, host),
                *bruteforce.watcher_units(ROLE, host),
                *closure.purge_units(ROLE, host),
            )
        ),
        Directories((Directory(DATA_DIR, USER, USER, "0750"),)),
        Disk((DATA_DIR,)),
        *replication.live_checks(topology, host, TREE),
        WriteSwitch(
            ROLE,
            web.writes_config(ROLE),
            web.refused_variable(ROLE),
            replication.is_primary(topology, host),
        ),
    )


@deploy("files")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """The files' owner and directories, the write switch in bulwark.replication's order, the
    accounts' trees at the primary, Apache and its socket, nginx in front with the credential
    checkers' program and accounts, the files checker, pure-ftpd, the replication source and
    follower."""
    masked(ROLE, DEBIAN_UNITS)
    packages(ROLE, PACKAGES)
    system_user(ROLE, USER, DATA_DIR, NO_LOGIN)
    directory("files: data", DATA_DIR, USER, USER, "0750")
    directory("files: locks", LOCK_DIR, USER, USER, "0700")
    directory("files: Apache's runtime files", APACHE_RUN_DIR, "root", "root", "0755")
    rendered = render_for_deploy(ROLE, topology, host, secrets)
    switch = [rendered[web.writes_config(ROLE)]]
    primary = replication.is_primary(topology, host)
    replication.stop_following(topology, host, TREE)
    if not primary:
        install(ROLE, switch, then=web.NGINX_RELOAD)
    replication.promote(topology, host, TREE)
    if primary:
        install(ROLE, switch, then=web.NGINX_RELOAD)
    if primary:
        _create_trees(topology)
    install(
        ROLE,
        [rendered[APACHE_CONFIG], *(rendered[path] for path in UNIT_FILES)],
        check=APACHE_CHECK,
        then=APACHE_RESTART,
    )
    keep_running(ROLE, APACHE_UNIT)
    keep_running(ROLE, BACKEND_SOCKET_UNIT)
    # The checker's program and accounts file come with the front: before the checker starts.
    web.converge_front(ROLE, rendered)
    web.converge_files_auth(ROLE, rendered)
    install(
        ROLE,
        [rendered[f"/etc/systemd/system/{FTP_UNIT}"]],
        then=restarted(FTP_UNIT, unit_files_changed=True),
    )
    keep_running(ROLE, FTP_UNIT)
    replication.serve(TREE, rendered)
    replication.follow(topology, host, TREE, rendered)
    bruteforce.converge_watcher(ROLE, rendered)
    closure.converge_purge(ROLE, rendered)


def _create_trees(topology: Topology) -> None:
    """Each account's tree at the primary (the replicas get them by replication): the chroot
    and the folder named after the account are root's, readable by the files' owner, so an FTP
    session writes in its `files` folder alone; pure-ftpd's usage file at the chroot's top is
    the owner's (bulwark-filesauth and pure-ftpd rewrite it in place, never replace it)."""
    for account in topology.open_accounts:
        chroot = f"{DATA_DIR}/{topology.files_root(account)}"
        tree = f"{chroot}/{topology.files_root(account)}"
        directory(f"files: {chroot}", chroot, "root", USER, "0750")
        directory(f"files: {tree}", tree, "root", USER, "0750")
        directory(f"files: {tree}/files", f"{tree}/files", USER, USER, "0700")
        file_present(
            f"files: {chroot}/{FTP_QUOTA_FILE}", f"{chroot}/{FTP_QUOTA_FILE}", USER, USER, "0600"
        )
