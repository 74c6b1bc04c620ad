"""What the web roles (mailconfig, dav, files) share: nginx in front of them, and the app-password
check behind nginx's `auth_request`.

One nginx per web host serves every web role's names on 443 (port 80 only redirects), with the
platform's TLS policy and the same headers on every response, errors and redirects included:
HSTS, a CSP that allows nothing, nosniff, no referrer, no version. It also carries the
replication listeners (bulwark.replication) in its stream block. Its one configuration file is
written by the last web role of the host (`writes_front`): it includes every web role's write
switch, which each role installs in its own converge (bulwark.replication's order), so by then
all of them exist.

Backends never see a password and are reachable by nginx alone: each request's Basic
credentials go to `bulwark-webauth` (bulwark/webauth.py) over a Unix socket; it checks them
against the accounts' app-password Argon2id hashes (the main password's is never given to it)
and names the principal, which nginx passes on in X-Remote-User, always overwriting what a
client sent. Successful checks are cached for CREDENTIAL_CACHE_SECONDS; the service restarts,
forgetting them, whenever the accounts file changes, so a revoked app password stops working
as soon as the deploy that removes it has run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bulwark import catalogue, mailconfig, registry, replication, tlsconfig, webauth
from bulwark.deploying import install, keep_running, reloaded, restarted
from bulwark.exposure import exempt_networks
from bulwark.mail import USERNAME_SEPARATORS
from bulwark.operations import STAGED, Activation, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Unit
from bulwark.render import RenderedFile
from bulwark.secret import SecretStore
from bulwark.secret_names import CONTENT_LINK_KEY, app_password_name
from bulwark.templating import shipped_text
from bulwark.topology import Host, Topology
from bulwark.volumes import volume

# The roles nginx fronts, in the order their servers appear in its configuration. The last
# one a host deploys writes the front (`writes_front`): mailconfig, static files, never does
# (it is deployed beside dav, bulwark.registry).
WEB_ROLES: tuple[str, ...] = ("mailconfig", "dav", "files")
# The ports nginx listens on for them: HTTPS, and HTTP that only redirects.
WEB_PORTS: tuple[int, ...] = (443, 80)
PACKAGES: tuple[str, ...] = ("nginx-core", "libnginx-mod-stream", "python3-argon2", "rsync")
NGINX_CONFIG = "/etc/nginx/nginx.conf"
NGINX_UNIT = "nginx.service"
NGINX_CHECK = Check(NGINX_CONFIG, ("nginx", "-t", "-q", "-c", STAGED))
# Reload nginx with its new files. Debian starts nginx on its own configuration when the package
# is installed, listening on every address; ours binds the public address alone, which a
# reload cannot bind beside that wildcard socket (nginx would keep running the old files): a
# nginx still listening on the wildcard is stopped first, and the reload then starts it.
NGINX_RELOAD = Activation(
    f"{NGINX_UNIT}-reload",
    (
        (
            "sh",
            "-c",
            r"! ss -Hltn 'sport = :80' | grep -qE '(0\.0\.0\.0|\[::\]|\*):80\s' "
            f"|| systemctl stop {NGINX_UNIT}",
        ),
        *reloaded(NGINX_UNIT).commands,
    ),
)
# Whether this site's DAV takes writes (written by the dav role, in the order
# bulwark.replication describes; included by nginx.conf). The files role has its own.
DAV_WRITES_CONFIG = "/etc/nginx/bulwark-dav-writes.conf"
# What each replicated web role holds, in the read-only replica's refusal.
REPLICATED_CONTENT: dict[str, str] = {"dav": "calendars and contacts", "files": "files"}
# HSTS for two years, subdomains included (Mozilla's value; hardening.md §1).
HSTS_MAX_AGE = 63072000
# Nothing the DAV and WebDAV origins serve is meant to run or be framed in a browser.
CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
# Per client address: a calendar or address-book sync stays far below, a flood does not. The
# management networks, admin networks and site LANs are not limited (nor banned).
REQUEST_RATE = "100r/s"
REQUEST_BURST = 400
# Largest request body nginx accepts on DAV (a vCard with a photo, an event with attachments).
DAV_BODY_LIMIT = "20m"
# What a browser may do with a user's file, wherever it is served: nothing active, ever (no
# script, no plugin, no form, no framing, no same-origin access: the sandbox without any
# allow- token).
FILES_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"

# The DAV host-name labels (catalogue) -> the Radicale instance serving them (roles/dav.py) and
# the URL prefix it answers under (Fastmail's layout, which is Cyrus's).
DAV_BACKENDS: dict[str, tuple[str, str]] = {
    "caldav": ("calendars", "/dav/calendars/user"),
    "carddav": ("addressbooks", "/dav/addressbooks/user"),
}

# The credential checker: socket-activated, its own dynamic user, the accounts file handed in
# as a systemd credential (root-only on disk).
WEBAUTH_SCRIPT = "/usr/local/sbin/bulwark-webauth"
WEBAUTH_SOURCE = Path(webauth.__file__)
WEBAUTH_UNIT = "bulwark-webauth.service"
WEBAUTH_SOCKET_UNIT = "bulwark-webauth.socket"
WEBAUTH_SOCKET = f"{replication.SOCKET_DIR}/webauth.sock"
WEBAUTH_ACCOUNTS = "/etc/bulwark/webauth/accounts.json"
# Seconds a successful check is reused for the same credentials before Argon2 runs again.
CREDENTIAL_CACHE_SECONDS = 60
# The files role's checker: the same program, running as the files' owner (it measures the
# trees for quotas and writes pure-ftpd's usage file), for nginx's files and content realms on
# one socket and pure-ftpd's extauth on another.
FILESAUTH_UNIT = "bulwark-filesauth.service"
FILESAUTH_SOCKET_UNIT = "bulwark-filesauth.socket"
FILESAUTH_FTP_SOCKET_UNIT = "bulwark-filesauth-ftp.socket"
FILESAUTH_SOCKET = f"{replication.SOCKET_DIR}/filesauth.sock"
FILESAUTH_FTP_SOCKET = f"{replication.SOCKET_DIR}/filesauth-ftp.sock"
FILESAUTH_UNIT_FILES: tuple[str, ...] = tuple(
    f"/etc/systemd/system/{unit}"
    for unit in (FILESAUTH_UNIT, FILESAUTH_SOCKET_UNIT, FILESAUTH_FTP_SOCKET_UNIT)
)
# try-restart with this pattern restarts the files checker where it exists and runs, and does
# nothing (and fails nothing) where it does not exist yet: `systemctl try-restart NAME` fails
# on a unit never installed.
FILESAUTH_UNIT_PATTERN = FILESAUTH_UNIT.replace(".service", "*.service")
# The key signing links to the content origin (a credential of the checker, root-only on disk).
CONTENT_KEY_FILE = "/etc/bulwark/webauth/content-link-key"
# Seconds a link to a file on the content origin works.
CONTENT_LINK_SECONDS = 3600
# A new accounts file or checker reaches the files role's checker too: it restarts if it runs
# (socket-activated, it reads the new file when it next starts), on hosts that have it.
CHECKERS_RESTART = Activation(
    f"{WEBAUTH_UNIT}-restart",
    (
        ("systemctl", "daemon-reload"),
        ("systemctl", "restart", WEBAUTH_UNIT),
        ("systemctl", "try-restart", FILESAUTH_UNIT_PATTERN),
    ),
)
# `user+Book@domain` logins see one address book (seed: +Default, +Shared), on CardDAV only.
BOOK_LOGINS: tuple[str, ...] = ("Default", "Shared")
BOOK_REALMS: tuple[str, ...] = ("carddav",)


def backend_socket(instance: str) -> str:
    """The Unix socket a backend (a Radicale instance) is served on; only nginx may connect."""
    return f"{replication.SOCKET_DIR}/{instance}.sock"


def web_roles(host: Host) -> tuple[str, ...]:
    """The deployed web roles of `host`, in WEB_ROLES order."""
    deployed = {role.name for role in registry.deployed_roles(host)}
    return tuple(role for role in WEB_ROLES if role in deployed)


def replicated_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    """The web roles among `roles` whose data is replicated (each with its write switch and
    replication listener)."""
    return tuple(role for role in roles if role in REPLICATED_CONTENT)


def writes_front(role: str, host: Host) -> bool:
    """Whether `role` writes nginx's configuration and the credential checker on `host`: the
    last web role deployed there."""
    roles = web_roles(host)
    return bool(roles) and roles[-1] == role


# The front's files: whichever web role `writes_front` on a host writes them there.
FRONT_PATHS: tuple[str, ...] = (
    WEBAUTH_SCRIPT,
    f"/etc/systemd/system/{WEBAUTH_SOCKET_UNIT}",
    f"/etc/systemd/system/{WEBAUTH_UNIT}",
    WEBAUTH_ACCOUNTS,
    NGINX_CONFIG,
)


def front_files(role: str, host: Host) -> tuple[ManagedFile, ...]:
    """nginx's configuration and the credential checker (FRONT_PATHS), when `role` writes
    them."""
    if not writes_front(role, host):
        return ()
    return (
        ManagedFile(FRONT_PATHS[0], "bulwark-webauth.j2", mode="0755"),
        ManagedFile(FRONT_PATHS[1], "bulwark-webauth.socket.j2"),
        ManagedFile(FRONT_PATHS[2], "bulwark-webauth.service.j2"),
        ManagedFile(FRONT_PATHS[3], "webauth-accounts.json.j2", mode="0600"),
        ManagedFile(FRONT_PATHS[4], "nginx.conf.j2", checker="nginx"),
    )


def front_units(role: str, host: Host) -> tuple[Unit, ...]:
    """The credential checker's socket and nginx running, where `role` keeps them
    (`converge_front`)."""
    if not writes_front(role, host):
        return ()
    return (Unit(WEBAUTH_SOCKET_UNIT), Unit(NGINX_UNIT))


def front_context(topology: Topology, host: Host, secrets: SecretStore) -> dict[str, Any]:
    """What nginx's and the checker's templates need; empty where `host` has no web role."""
    roles = web_roles(host)
    if not roles:
        return {}
    public = str(host.public_address)
    return {
        **tlsconfig.tls_context(secrets, host),
        "web": {
            "roles": roles,
            "domain": topology.domain,
            "public_address": public,
            "names": {role: role_names(topology, host, role) for role in roles},
            "dav_backends": {
                label: {"socket": backend_socket(instance), "prefix": prefix}
                for label, (instance, prefix) in DAV_BACKENDS.items()
            },
            "hsts_max_age": HSTS_MAX_AGE,
            "csp": CONTENT_SECURITY_POLICY,
            "request_rate": REQUEST_RATE,
            "request_burst": REQUEST_BURST,
            "dav_body_limit": DAV_BODY_LIMIT,
            "unlimited": exempt_networks(topology),
            "webauth_socket": WEBAUTH_SOCKET,
            "replication": [
                replication.listener(topology, host, role) for role in replicated_roles(roles)
            ],
            "refused_socket": f"{replication.SOCKET_DIR}/refused.sock",
            "writes": {role: writes_config(role) for role in replicated_roles(roles)},
            "mailconfig": mailconfig.nginx_context(topology) if "mailconfig" in roles else {},
            "files_backend": backend_socket("files"),
            "filesauth_socket": FILESAUTH_SOCKET,
            "files_csp": FILES_CSP,
            "content_origin": topology.content_origin,
        },
        "webauth": {
            "script": WEBAUTH_SCRIPT,
            "source": shipped_text(WEBAUTH_SOURCE),
            "socket": WEBAUTH_SOCKET,
            "socket_unit": WEBAUTH_SOCKET_UNIT,
            "accounts_file": WEBAUTH_ACCOUNTS,
            "cache_seconds": CREDENTIAL_CACHE_SECONDS,
            "socket_group": replication.NGINX_GROUP,
            "domain": topology.domain,
            "separators": USERNAME_SEPARATORS,
            "book_logins": BOOK_LOGINS,
            "book_realms": BOOK_REALMS,
            "accounts": [
                {
                    "user": account.user,
                    "hashes": [
                        secrets.get(app_password_name(account.user, label))
                        for label in account.app_passwords
                    ],
                    "files_root": topology.files_root(account),
                    "files_quota": topology.account_quota(account),
                }
                for account in topology.open_accounts
            ],
            "files": "files" in roles,
            "files_dir": volume("files").path,
            "content_origin": topology.content_origin,
            "content_link_seconds": CONTENT_LINK_SECONDS,
        },
    }


def writes_config(role: str) -> str:
    """nginx's write switch of a replicated web role: whether this site takes its writes."""
    return DAV_WRITES_CONFIG if role == "dav" else f"/etc/nginx/bulwark-{role}-writes.conf"


def refused_variable(role: str) -> str:
    """The nginx variable that is 1 for a request the site's write switch refuses."""
    return f"$bulwark_{role}_refused"


def writes_context(topology: Topology, host: Host, role: str) -> dict[str, Any]:
    """What the write switch's template (web-shared/nginx-writes.conf.j2) needs."""
    return {
        "writes": {
            "role": role,
            "content": REPLICATED_CONTENT[role],
            "read_only": not replication.is_primary(topology, host),
            "site": host.site,
            "primary_site": topology.primary_site.name,
        }
    }


def files_auth_files() -> tuple[ManagedFile, ...]:
    """The files role's checker: its units and the content-link key."""
    return (
        ManagedFile(FILESAUTH_UNIT_FILES[0], "bulwark-filesauth.service.j2"),
        ManagedFile(FILESAUTH_UNIT_FILES[1], "bulwark-filesauth.socket.j2"),
        ManagedFile(FILESAUTH_UNIT_FILES[2], "bulwark-filesauth-ftp.socket.j2"),
        ManagedFile(CONTENT_KEY_FILE, "content-link-key.j2", mode="0600"),
    )


def files_auth_units() -> tuple[Unit, ...]:
    """The files role's checker's sockets, kept running (`converge_files_auth`)."""
    return (Unit(FILESAUTH_SOCKET_UNIT), Unit(FILESAUTH_FTP_SOCKET_UNIT))


def files_auth_context(
    topology: Topology, host: Host, secrets: SecretStore, user: str, data_dir: str
) -> dict[str, Any]:
    """What the files role's checker's units need."""
    return {
        "filesauth": {
            "unit": FILESAUTH_UNIT,
            "socket": FILESAUTH_SOCKET,
            "ftp_socket": FILESAUTH_FTP_SOCKET,
            "socket_unit": FILESAUTH_SOCKET_UNIT,
            "ftp_socket_unit": FILESAUTH_FTP_SOCKET_UNIT,
            "socket_group": replication.NGINX_GROUP,
            "user": user,
            "data_dir": data_dir,
            "key_file": CONTENT_KEY_FILE,
            "key": secrets.get(CONTENT_LINK_KEY),
            "read_only": not replication.is_primary(topology, host),
        }
    }


def converge_files_auth(role: str, files: dict[str, RenderedFile]) -> None:
    """The files role's checker: restarted when its units or key changed (the accounts file's
    own change restarts it with bulwark-webauth, `converge_front`)."""
    install(
        role,
        [*(files[path] for path in FILESAUTH_UNIT_FILES), files[CONTENT_KEY_FILE]],
        then=restarted(FILESAUTH_UNIT, unit_files_changed=True),
    )
    keep_running(role, FILESAUTH_SOCKET_UNIT)
    keep_running(role, FILESAUTH_FTP_SOCKET_UNIT)


def role_names(topology: Topology, host: Host, role: str) -> dict[str, tuple[str, ...]]:
    """Label -> the host names a server of `role` answers to: generic and of the host's site.
    Only the names of its web services (HTTPS, and HTTP that redirects): nginx neither serves
    nor redirects a name of another daemon (the files role's `ftp`)."""
    return {
        label: (
            catalogue.qualified_name(label, topology.domain),
            catalogue.qualified_name(label, topology.domain, host.site),
        )
        for service in topology.services(host)
        if service.role == role and set(service.ports) & set(WEB_PORTS)
        for label in service.names
    }


def converge_front(role: str, files: dict[str, RenderedFile]) -> None:
    """The credential checker (restarted when it or the accounts changed), then nginx's
    configuration, checked by nginx before it is live and reloaded once it changed."""
    if NGINX_CONFIG not in files:
        return
    checker = [
        files[WEBAUTH_SCRIPT],
        files[f"/etc/systemd/system/{WEBAUTH_SOCKET_UNIT}"],
        files[f"/etc/systemd/system/{WEBAUTH_UNIT}"],
        files[WEBAUTH_ACCOUNTS],
    ]
    install(role, checker, then=CHECKERS_RESTART)
    keep_running(role, WEBAUTH_SOCKET_UNIT)
    install(role, [files[NGINX_CONFIG]], check=NGINX_CHECK, then=NGINX_RELOAD)
    keep_running(role, NGINX_UNIT)
