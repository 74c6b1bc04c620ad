"""What the mx and mailstore roles share: Dovecot's Lua auth and Dovecot's deploy.

Postfix authenticates submission through Dovecot's auth service, so every mail host runs Dovecot
with the same Lua passdb: the mail store a full Dovecot, a separate MX host an auth-only one
(SASL never crosses the network). Where both roles share a host only the mailstore role writes
Dovecot's files (`writes_dovecot`): `render_host_configs` refuses two writers of one file.

Accounts log in with app passwords only (their Argon2id hashes from the vault); the main
password's hash is never rendered, so no mail protocol can accept it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bulwark import catalogue
from bulwark.account_data import account_paths
from bulwark.deploying import install, keep_running, reloaded
from bulwark.exposure import role_sources
from bulwark.operations import STAGED, Check
from bulwark.plan import ManagedFile
from bulwark.probes import Unit
from bulwark.render import RenderedFile
from bulwark.secret import SecretStore
from bulwark.secret_names import app_password_name
from bulwark.topology import Account, Host, Topology
from bulwark.volumes import volume

DOVECOT_CONFIG = "/etc/dovecot/dovecot.conf"
AUTH_SCRIPT = "/etc/dovecot/bulwark-auth.lua"
DOVECOT_GROUP = "dovecot"
DOVECOT_UNIT = "dovecot.service"
# Debian's postfix.service only starts, restarts and reloads the instance unit, which runs the
# master daemon (and whose journal holds smtpd's lines): whether Postfix runs is its state.
POSTFIX_INSTANCE = "postfix@-.service"
# Dovecot's own parser over the staged configuration, before it is live.
DOVECOT_CHECK = Check(DOVECOT_CONFIG, ("doveconf", "-n", "-c", STAGED, ">/dev/null"))
DOVECOT_RELOAD = reloaded(DOVECOT_UNIT)
# Every Dovecot needs these; the mailstore adds the protocols.
AUTH_PACKAGES: tuple[str, ...] = ("dovecot-core", "dovecot-auth-lua")
# Postfix's smtpd runs chrooted in its queue directory and finds Dovecot's auth socket here.
POSTFIX_QUEUE = "/var/spool/postfix"
SASL_SOCKET = "private/auth"
# Alternative login separators (seed: user#domain, user/domain, user=domain), each mapped to @.
USERNAME_SEPARATORS: tuple[str, ...] = ("#", "/", "=")
# `user+Folder@domain` over POP3 reads Folder instead of INBOX.
FOLDER_SEPARATOR = "+"
# Virtual users' mail lives under this system user's home: /var/vmail/DOMAIN/USER/Maildir.
VMAIL_USER = "vmail"
VMAIL_HOME = volume("mail").path
MAILDIR = "Maildir"


def writes_dovecot(role: str, host: Host) -> bool:
    """Whether `role` writes Dovecot's files on `host`: the mailstore if there, else the MX."""
    return role == ("mailstore" if host.has_role("mailstore") else "mx")


def dovecot_files(role: str, host: Host) -> tuple[ManagedFile, ...]:
    """Dovecot's configuration and Lua auth script, when `role` is the one writing them.

    Both hold secrets. Only root reads the configuration (the doveadm password); Dovecot's
    auth process, running as `dovecot`, loads the script (the password hashes).
    """
    if not writes_dovecot(role, host):
        return ()
    return (
        ManagedFile(DOVECOT_CONFIG, "dovecot.conf.j2", mode="0600", checker="dovecot"),
        ManagedFile(AUTH_SCRIPT, "auth.lua.j2", mode="0640", group=DOVECOT_GROUP),
    )


def dovecot_units(role: str, host: Host) -> tuple[Unit, ...]:
    """Dovecot running, where `role` is the one keeping it (`converge_dovecot`)."""
    return (Unit(DOVECOT_UNIT),) if writes_dovecot(role, host) else ()


def site_mailstore(topology: Topology, site: str) -> Host:
    """The mail store of `site` (topology validation guarantees every site has one)."""
    return topology.hosts_with_role("mailstore", site)[0]


def proxied_context(topology: Topology, host: Host, service: str) -> Mapping[str, Any] | None:
    """The listener for a proxied service (bulwark.catalogue: a PROXY protocol header first,
    then the client's own TLS), on the LAN address: its port and the proxies (LAN addresses)
    that may send one. None when the site has no proxy: no listener then."""
    proxied = catalogue.service(service)
    proxies = role_sources(topology, host, proxied)
    if not proxies:
        return None
    return {
        "name": proxied.name,
        "address": str(host.lan_address),
        "port": proxied.port,
        "proxies": [str(network) for network in proxies],
    }


def account_home(topology: Topology, account: Account) -> str:
    """Everything Dovecot keeps of `account` (Dovecot's `mail_home`): its Maildir, indexes,
    Sieve scripts and replication state."""
    (home,) = account_paths(topology, account, "mail")
    return home


def auth_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    """What Dovecot's auth needs: accounts and their app-password hashes, separators, paths."""
    accounts = [
        {
            "user": account.user,
            "app_passwords": [
                {"label": label, "hash": secrets.get(app_password_name(account.user, label))}
                for label in account.app_passwords
            ],
        }
        for account in topology.open_accounts
    ]
    return {
        "domain": topology.domain,
        "accounts": accounts,
        "auth_script": AUTH_SCRIPT,
        "username_translation": "".join(f"{separator}@" for separator in USERNAME_SEPARATORS),
        "folder_separator": FOLDER_SEPARATOR,
        "sasl_listener": f"{POSTFIX_QUEUE}/{SASL_SOCKET}" if host.has_role("mx") else None,
        "maildir": MAILDIR,
    }


def converge_dovecot(role: str, files: dict[str, RenderedFile]) -> None:
    """Dovecot's configuration and Lua script, checked by doveconf before they are live;
    reload once they changed; keep Dovecot running."""
    install(
        role, [files[DOVECOT_CONFIG], files[AUTH_SCRIPT]], check=DOVECOT_CHECK, then=DOVECOT_RELOAD
    )
    keep_running(role, DOVECOT_UNIT)
