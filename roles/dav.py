"""dav: calendars (CalDAV) and contacts (CardDAV), Radicale behind nginx, replicated to the
secondary site.

Two Radicale instances, one per kind, each under gunicorn on a Unix socket only nginx may reach:
calendars at `https://caldav.DOMAIN/dav/calendars/user/<user@domain>/`, address books at
`https://carddav.DOMAIN/dav/addressbooks/user/<user@domain>/` (Fastmail's layout). Every account
gets a `Default` calendar and a `Default` address book, and sees the one shared address book
as `<owner@domain>.Shared` in its own collection (a link to the book; its rights file says who
may change it). nginx authenticates every request with an app password (bulwark.web) and
passes the principal on; Radicale's rights files say what each principal may touch:
`user+Default@domain` only its Default book, `user+Shared@domain` only the shared one.

The primary site takes writes; the secondary follows it (bulwark.replication) and serves a
read-only copy, refusing writes in nginx and in the rights files alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from bulwark import bruteforce, closure, replication, web
from bulwark.davstore import (
    DATA_DIR,
    DEFAULT_COLLECTION,
    INSTANCES,
    SHARED_DIR,
    SHARED_SUFFIX,
    USER,
    book_login,
    collection_root,
    shared_book_name,
)
from bulwark.deploying import (
    directory,
    install,
    keep_running,
    packages,
    render_for_deploy,
    system_user,
)
from bulwark.hoststate import expect, host_state
from bulwark.livecheck import LiveCheck
from bulwark.operations import Activation
from bulwark.plan import ManagedFile
from bulwark.probes import Directories, Directory, Disk, Unit, Units, WriteSwitch
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

ROLE = "dav"

PACKAGES: tuple[str, ...] = (*web.PACKAGES, "python3-radicale", "gunicorn")
NO_LOGIN = "/usr/sbin/nologin"
CONFIG_DIR = "/etc/bulwark/dav"
# Radicale instance -> the default collection's name.
DISPLAY_NAMES: dict[str, str] = {"calendars": "Calendar", "addressbooks": "Default"}
# Radicale's own per-host files: rebuilt by each instance, never replicated.
LOCAL_FILES: tuple[str, ...] = (".Radicale.cache", ".Radicale.lock", ".Radicale.tmp-*")
# gunicorn workers per instance, and threads per worker (Radicale serialises writes itself).
WORKERS = 2
THREADS = 8
# Largest request Radicale accepts (nginx refuses larger ones first: web.DAV_BODY_LIMIT).
MAX_CONTENT_BYTES = 20_000_000
TREE = replication.Tree(ROLE, DATA_DIR, USER, LOCAL_FILES)
# A new configuration reaches both instances at once; their sockets stay, so no request is
# refused meanwhile (an instance not started yet starts with it on its first request).
INSTANCES_RESTART = Activation(
    "bulwark-radicale-restart",
    (
        ("systemctl", "daemon-reload"),
        ("systemctl", "try-restart", *(f"bulwark-radicale@{name}.service" for name in INSTANCES)),
    ),
)
SOCKET_UNIT = "bulwark-radicale@{}.socket"
UNIT_FILES = (
    "/etc/systemd/system/bulwark-radicale@.socket",
    "/etc/systemd/system/bulwark-radicale@.service",
)


def config_path(instance: str) -> str:
    return f"{CONFIG_DIR}/{instance}.conf"


def rights_path(instance: str) -> str:
    return f"{CONFIG_DIR}/{instance}.rights"


@operation()
def collections_created(
    owner: str,
    principals: tuple[str, ...],
    collections: Mapping[str, str],
    links: Mapping[str, str],
):
    """Create what is missing of the accounts' collections, owned by `owner`; never touch one
    that exists (its users may have renamed or refilled it).

    + owner: the system user Radicale runs as
    + principals: directories holding an account's collections
    + collections: collection directory -> its `.Radicale.props` (JSON)
    + links: link path -> target (the shared address book in each account's collection)

    **Example:**

    .. code:: python

        collections_created(
            name="dav: default collections",
            owner="bulwark-dav",
            principals=("/var/lib/bulwark/dav/calendars/collection-root/alice@example.net",),
            collections={"/var/lib/…/alice@example.net/Default": '{"tag": "VCALENDAR"}'},
            links={},
        )
    """
    found = host_state(paths=(*principals, *collections, *links)).files
    missing = [path for path in (*principals, *collections, *links) if found[path] is None]
    if not missing:
        current_host.noop("every collection exists")
        return
    for path in missing:
        quoted = QuoteString(path)
        if path in links:
            # -f -n: a link left dangling (its book gone) is replaced, not refused.
            yield StringCommand("ln", "-sfn", QuoteString(links[path]), quoted)
            yield StringCommand("chown", "-h", f"{owner}:{owner}", quoted)
            continue
        yield StringCommand("install", "-d", "-o", owner, "-g", owner, "-m", "0750", quoted)
        if path in collections:
            props = QuoteString(f"{path}/.Radicale.props")
            yield StringCommand("printf", "%s", QuoteString(collections[path]), ">", props)
            yield StringCommand("chown", f"{owner}:{owner}", props)
            yield StringCommand("chmod", "0640", props)


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        *(ManagedFile(config_path(name), f"radicale-{name}.conf.j2") for name in INSTANCES),
        *(ManagedFile(rights_path(name), f"{name}.rights.j2") for name in INSTANCES),
        ManagedFile(UNIT_FILES[0], "bulwark-radicale@.socket.j2"),
        ManagedFile(UNIT_FILES[1], "bulwark-radicale@.service.j2"),
        ManagedFile(web.DAV_WRITES_CONFIG, "nginx-writes.conf.j2"),
        *replication.managed_files(TREE, host, script_owner=True),
        *web.front_files(ROLE, host),
        *bruteforce.watcher_files(ROLE, host),
        *closure.purge_files(ROLE, host),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    read_only = not replication.is_primary(topology, host)
    return {
        **web.front_context(topology, host, secrets),
        **web.writes_context(topology, host, ROLE),
        **replication.template_context(topology, host, TREE),
        **bruteforce.watcher_context(topology, host),
        **closure.purge_context(topology, host),
        "dav": {
            "user": USER,
            "data_dir": DATA_DIR,
            "instances": {
                name: {
                    "name": name,
                    "storage": f"{DATA_DIR}/{name}",
                    "rights": rights_path(name),
                    "socket": web.backend_socket(name),
                }
                for name in INSTANCES
            },
            "config_dir": CONFIG_DIR,
            # The instance's socket, `%i` standing for its name (a systemd template unit).
            "socket_pattern": web.backend_socket("%i"),
            "workers": WORKERS,
            "threads": THREADS,
            "max_content_bytes": MAX_CONTENT_BYTES,
            "read_only": read_only,
            "site": host.site,
            "primary_site": topology.primary_site.name,
            "rights": _rights_context(topology, read_only),
        },
    }


def _rights_context(topology: Topology, read_only: bool) -> dict[str, Any]:
    """The patterns Radicale's rights files match principals and collection paths with."""
    domain = re.escape(topology.domain)
    book = topology.shared_addressbook
    open_users = {account.user for account in topology.open_accounts}
    shared = None
    if book is not None:
        owner = f"{book.owner}@{topology.domain}"
        shared = {
            "owner": owner,
            "collection": re.escape(f"{owner}.{SHARED_SUFFIX}"),
            # A closed editor logs in nowhere; the rights file names it no more.
            "editors": "|".join(re.escape(e) for e in book.editors if e in open_users),
        }
    return {
        "domain": domain,
        "default": DEFAULT_COLLECTION,
        "shared_suffix": SHARED_SUFFIX,
        "shared": shared,
        # What owners may do with their own collections: everything at the primary site,
        # read at a replica.
        "principal": "R" if read_only else "RW",
        "collections": "r" if read_only else "rw",
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """The instances' sockets, nginx and the credential checker, the ban watcher; the data
    and its disk; replication (the replica's lag, or the primary's owed pull) and the write
    switch agreeing with `site_primary`."""
    return (
        Units(
            (
                *(Unit(SOCKET_UNIT.format(name)) for name in INSTANCES),
                *web.front_units(ROLE, host),
                *bruteforce.watcher_units(ROLE, host),
                *closure.purge_units(ROLE, host),
            )
        ),
        Directories(
            (
                Directory(DATA_DIR, USER, USER, "0750"),
                *(Directory(f"{DATA_DIR}/{name}", USER, USER, "0750") for name in INSTANCES),
            )
        ),
        Disk((DATA_DIR,)),
        *replication.live_checks(topology, host, TREE),
        WriteSwitch(
            ROLE,
            web.DAV_WRITES_CONFIG,
            "$bulwark_dav_refused",
            replication.is_primary(topology, host),
        ),
    )


@deploy("dav")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """Radicale's user and data, the write switch in the order bulwark.replication gives
    (demote, final pull, promote), the instances, the accounts' collections at the primary,
    the replication source and follower, nginx and the credential checker in front."""
    packages(ROLE, PACKAGES)
    system_user(ROLE, USER, DATA_DIR, NO_LOGIN)
    directory("dav: data", DATA_DIR, USER, USER, "0750")
    rendered = render_for_deploy(ROLE, topology, host, secrets)
    switch = [rendered[web.DAV_WRITES_CONFIG], *(rendered[rights_path(n)] for n in INSTANCES)]
    primary = replication.is_primary(topology, host)
    replication.stop_following(topology, host, TREE)
    if not primary:
        install(ROLE, switch, then=web.NGINX_RELOAD)
    replication.promote(topology, host, TREE)
    if primary:
        install(ROLE, switch, then=web.NGINX_RELOAD)
    for name in INSTANCES:
        directory(f"dav: {name}", f"{DATA_DIR}/{name}", USER, USER, "0750")
    install(
        ROLE,
        [*(rendered[config_path(name)] for name in INSTANCES), *(rendered[p] for p in UNIT_FILES)],
        then=INSTANCES_RESTART,
    )
    for name in INSTANCES:
        keep_running(ROLE, SOCKET_UNIT.format(name))
    if primary:
        _create_collections(topology)
    replication.serve(TREE, rendered)
    web.converge_front(ROLE, rendered)
    replication.follow(topology, host, TREE, rendered)
    bruteforce.converge_watcher(ROLE, rendered)
    closure.converge_purge(ROLE, rendered)


def _create_collections(topology: Topology) -> None:
    """Each account's principals, Default calendar and book, and link to the shared book, at
    the primary (the replicas get them by replication)."""
    principals, collections, links = collection_paths(topology)
    expect(paths=(*principals, *collections, *links))
    collections_created(
        name="dav: the accounts' collections",
        owner=USER,
        principals=principals,
        collections=collections,
        links=links,
    )


def collection_paths(
    topology: Topology,
) -> tuple[tuple[str, ...], dict[str, str], dict[str, str]]:
    """(directories: the collection roots, the shared books' and each account's principals;
    collection -> props; link -> target) of every account, parents before children."""
    principals: list[str] = [*(collection_root(name) for name in INSTANCES), SHARED_DIR]
    collections: dict[str, str] = {}
    links: dict[str, str] = {}
    shared_name = shared_book_name(topology)
    if shared_name:
        collections[f"{SHARED_DIR}/{shared_name}"] = _props("VADDRESSBOOK", SHARED_SUFFIX)
    books = collection_root("addressbooks")
    for account in topology.open_accounts:
        address = account.address(topology.domain)
        for name, tag in INSTANCES.items():
            principal = f"{collection_root(name)}/{address}"
            principals.append(principal)
            collections[f"{principal}/{DEFAULT_COLLECTION}"] = _props(tag, DISPLAY_NAMES[name])
        default_login = book_login(topology, account, DEFAULT_COLLECTION)
        principals.append(default_login)
        links[f"{default_login}/{DEFAULT_COLLECTION}"] = f"../{address}/{DEFAULT_COLLECTION}"
        if shared_name:
            links[f"{books}/{address}/{shared_name}"] = f"../../shared/{shared_name}"
            shared_login = book_login(topology, account, SHARED_SUFFIX)
            principals.append(shared_login)
            links[f"{shared_login}/{shared_name}"] = f"../../shared/{shared_name}"
    return tuple(principals), collections, links


def _props(tag: str, display_name: str) -> str:
    """A collection's `.Radicale.props`: its kind and name, as Radicale writes them."""
    return json.dumps({"D:displayname": display_name, "tag": tag}, sort_keys=True)
