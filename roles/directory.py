"""directory: the read-only LDAPS address book (slapd), rebuilt from the CardDAV books beside it.

Clients bind as `cn=<user>@<domain>,dc=User` with an app password (slapd's `{ARGON2}` module
checks the same Argon2id hashes as the mail and web roles) and search `dc=AddressBook`: the
platform's accounts (ou=Accounts) and the shared book (ou=Shared) for everyone, each account's
own Default book (ou=Personal) for that account alone. Nothing is ever written over LDAP: both
databases are read-only and rebuilt offline by `bulwark-directory-refresh` (bulwark/
directory_refresh.py), from the deploy's users file and, every REFRESH_SECONDS, from the host's
CardDAV store, and slapd restarted on the new build. Each site serves its own local copy of the
books (its dav replica at the secondary): nothing LDAP crosses the WAN.

slapd listens on the host's public address, port 636 (implicit TLS) alone, and on a Unix
socket (ldapi) in a directory only its own user and root may enter: root administers the
configuration (cn=config) there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pyinfra.api import deploy

from bulwark import bruteforce, catalogue, davstore, directory_refresh, pki, tlsconfig
from bulwark.deploying import directory, install, keep_running, masked, packages, render_for_deploy
from bulwark.livecheck import LiveCheck
from bulwark.operations import STAGED, Activation, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Directories, Directory, Disk, Refresh, Unit, Units
from bulwark.secret import SecretStore
from bulwark.secret_names import app_password_name
from bulwark.templating import shipped_text
from bulwark.topology import Host, Topology
from bulwark.volumes import volume

ROLE = "directory"

PACKAGES: tuple[str, ...] = ("slapd", "ldap-utils")
# Debian's slapd would build a database of its own (dc=nodomain) and start on ldap:///; it is
# told to configure nothing, and its unit is masked before the package is installed.
PRESEED: tuple[str, ...] = ("slapd slapd/no_configuration boolean true",)
DEBIAN_UNITS: tuple[str, ...] = ("slapd.service",)
# slapd's own user (the package's); it runs as this from the start, never as root.
USER = "openldap"
CONFIG_DIR = "/etc/bulwark/directory"
CONFIG = f"{CONFIG_DIR}/slapd.conf"
USERS_LDIF = f"{CONFIG_DIR}/users.ldif"
REFRESH_CONFIG = f"{CONFIG_DIR}/refresh.json"
SCHEMA_DIR = "/etc/ldap/schema"
# Both databases (the storage role's `directory` volume), each in a directory of its own whose
# data file the refresh replaces with a new build.
DATA_DIR = volume("directory").path
USERS_SUFFIX = "dc=User"
BOOK_SUFFIX = "dc=AddressBook"
# Suffix -> the database's directory under DATA_DIR, and its key in the refresh's configuration.
DATABASES: dict[str, tuple[str, str]] = {
    USERS_SUFFIX: ("users", "users"),
    BOOK_SUFFIX: ("addressbook", "address_book"),
}
# Largest database files slapd maps (back-mdb's maxsize): far above 100,000 contacts.
USERS_MAX_BYTES = 64 * 1024**2
BOOK_MAX_BYTES = 1024**3
RUNTIME_DIR_NAME = "bulwark-slapd"
LDAPI_SOCKET = f"/run/{RUNTIME_DIR_NAME}/ldapi"
LDAPI_URL = f"ldapi://{quote(LDAPI_SOCKET, safe='')}"
UNIT = bruteforce.WATCHED_UNITS[ROLE][0]  # bulwark-slapd.service
REFRESH_UNIT = "bulwark-directory-refresh.service"
REFRESH_TIMER = "bulwark-directory-refresh.timer"
# Left by the refresh when slapd must restart to read a new build; the refresh unit's privileged
# last step restarts slapd and removes it (a run cut short leaves it for the next one).
RESTART_MARKER = f"{DATA_DIR}/restart-slapd"
SCRIPT = "/usr/local/sbin/bulwark-directory-refresh"
REFRESH_SOURCE = Path(directory_refresh.__file__)
# How often the CardDAV books are read again (the issue allows five minutes).
REFRESH_SECONDS = 60
# Entries a search returns (soft: what a client gets unless it asks for fewer; hard: the most
# it may ask for), and seconds a search may take, likewise: an address book lookup needs a
# handful, a client dumping everything gets a page and a "size limit exceeded".
SIZE_LIMIT = (200, 500)
TIME_LIMIT = (5, 10)
# Seconds an idle connection is kept; connections waiting for their first operation.
IDLE_SECONDS = 300
MAX_PENDING = 100
# Attributes the clients' filters name (Thunderbird: cn, mail, sn substrings; Apple: givenName
# too), indexed for equality and substrings.
INDEXES: tuple[tuple[str, str], ...] = (
    ("objectClass", "eq"),
    ("cn,sn,givenName,mail", "eq,sub"),
)
UNIT_FILES: tuple[str, ...] = (
    f"/etc/systemd/system/{UNIT}",
    f"/etc/systemd/system/{REFRESH_UNIT}",
    f"/etc/systemd/system/{REFRESH_TIMER}",
)
CONFIG_CHECK = Check(CONFIG, ("slaptest", "-Q", "-u", "-f", STAGED))
# Any change: rebuild what changed (systemctl waits for the refresh), then restart slapd on the
# result. slapd also starts without a build (empty databases: every bind fails). A restart, not
# a start: a start would merge with a run the timer began before the new files were written, and
# that run's build (an app password just revoked still in it) would stand until the next tick.
# Stopping a run midway is safe: its build is renamed into place whole or not at all.
REBUILD_AND_RESTART = Activation(
    f"{UNIT}-rebuild",
    (
        ("systemctl", "daemon-reload"),
        ("systemctl", "restart", REFRESH_UNIT),
        ("systemctl", "restart", UNIT),
    ),
)


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        ManagedFile(CONFIG, "slapd.conf.j2", group=USER, mode="0640", checker="slapd"),
        ManagedFile(USERS_LDIF, "users.ldif.j2", group=USER, mode="0640"),
        ManagedFile(REFRESH_CONFIG, "refresh.json.j2"),
        ManagedFile(SCRIPT, "bulwark-directory-refresh.j2", mode="0755"),
        ManagedFile(UNIT_FILES[0], "bulwark-slapd.service.j2"),
        ManagedFile(UNIT_FILES[1], "bulwark-directory-refresh.service.j2"),
        ManagedFile(UNIT_FILES[2], "bulwark-directory-refresh.timer.j2"),
    )


def bind_dn(address: str) -> str:
    """The DN an account binds as: its address escaped as one RDN value (RFC 4514)."""
    return f"cn={directory_refresh.escape_dn_value(address)},{USERS_SUFFIX}"


def refresh_config(topology: Topology) -> dict[str, Any]:
    """What the refresh reads (bulwark/directory_refresh.py's configuration): where each
    database lives, the accounts and their own books, the shared book."""
    book = topology.shared_addressbook
    databases = {
        key: {"suffix": suffix, "directory": f"{DATA_DIR}/{name}", "build_config": CONFIG}
        | ({"ldif": USERS_LDIF} if suffix == USERS_SUFFIX else {})
        for suffix, (name, key) in DATABASES.items()
    }
    return {
        **databases,
        "restart_marker": RESTART_MARKER,
        "accounts": [
            {
                "address": account.address(topology.domain),
                "name": account.name,
                "book": davstore.default_book(topology, account),
            }
            for account in topology.open_accounts
        ],
        "shared": (
            {
                "owner": f"{book.owner}@{topology.domain}",
                "book": f"{davstore.SHARED_DIR}/{davstore.shared_book_name(topology)}",
            }
            if book
            else None
        ),
    }


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    return {
        **tlsconfig.tls_context(secrets, host),
        "directory": {
            "address": str(host.public_address),
            "port": catalogue.service("ldaps").port,
            "user": USER,
            "key_group": pki.KEY_GROUP,
            "dav_group": davstore.USER,
            "config": CONFIG,
            "schema_dir": SCHEMA_DIR,
            "data_dir": DATA_DIR,
            "users_suffix": USERS_SUFFIX,
            "book_suffix": BOOK_SUFFIX,
            "users_db": f"{DATA_DIR}/{DATABASES[USERS_SUFFIX][0]}",
            "book_db": f"{DATA_DIR}/{DATABASES[BOOK_SUFFIX][0]}",
            "users_max_bytes": USERS_MAX_BYTES,
            "book_max_bytes": BOOK_MAX_BYTES,
            "indexes": INDEXES,
            "size_limit": SIZE_LIMIT,
            "time_limit": TIME_LIMIT,
            "idle_seconds": IDLE_SECONDS,
            "max_pending": MAX_PENDING,
            "ldapi_url": LDAPI_URL,
            "runtime_dir_name": RUNTIME_DIR_NAME,
            "unit": UNIT,
            "script": SCRIPT,
            "refresh_source": shipped_text(REFRESH_SOURCE),
            "refresh_config": REFRESH_CONFIG,
            "refresh_seconds": REFRESH_SECONDS,
            "restart_marker": RESTART_MARKER,
            "refresh_json": json.dumps(refresh_config(topology), indent=1, sort_keys=True),
            "accounts": [
                {
                    "address": account.address(topology.domain),
                    "bind_dn": bind_dn(account.address(topology.domain)),
                    "hashes": [
                        secrets.get(app_password_name(account.user, label))
                        for label in account.app_passwords
                    ],
                }
                for account in topology.open_accounts
            ],
        },
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """slapd and the refresh's timer, the last refresh's result and age; the databases'
    directory and its disk."""
    return (
        Units((Unit(UNIT), Unit(REFRESH_TIMER))),
        Refresh("LDAP address book", REFRESH_UNIT),
        Directories((Directory(DATA_DIR, USER, USER, "0700"),)),
        Disk((DATA_DIR,)),
    )


@deploy("directory")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """slapd installed without a configuration of Debian's, the databases' directory, then
    every file at once: a change rebuilds what it touches and restarts slapd on the result."""
    masked(ROLE, DEBIAN_UNITS)
    packages(ROLE, PACKAGES, preseed=PRESEED)
    directory("directory: databases", DATA_DIR, USER, USER, "0700")
    for name, _ in DATABASES.values():
        directory(f"directory: database {name}", f"{DATA_DIR}/{name}", USER, USER, "0700")
    rendered = render_for_deploy(ROLE, topology, host, secrets)
    install(
        ROLE,
        [rendered[managed.path] for managed in managed_files(topology, host)],
        check=CONFIG_CHECK,
        then=REBUILD_AND_RESTART,
    )
    keep_running(ROLE, UNIT)
    keep_running(ROLE, REFRESH_TIMER)
