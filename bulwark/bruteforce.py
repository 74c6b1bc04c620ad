"""Brute force: an address that keeps failing to log in is dropped on the host's public ports.

The values live here and only here: MAX_FAILURES failed logins within WINDOW_MINUTES ban the
address for BAN_MINUTES. Dovecot already slows a failing address down (up to 15 s an attempt);
the ban then stops it. A phone with a stale password, retrying every minute, is banned only
after ten failures in ten minutes, and for half an hour: long enough to make guessing useless
(at most ten guesses per forty minutes per address), short enough that a user who fixed the
password gets back in the same afternoon. The management networks, the inventory's admin
networks and the site LANs are never banned.

Every host running a catalogue service with `logins` runs the watcher (bulwark/banwatch.py,
installed by the first of its roles owning such a service: `watcher_role`), which follows the
journal of the daemons checking those passwords (WATCHED_UNITS) and adds a failing address to
BAN_SET with a timeout. The firewall role declares BAN_SET in our own table and drops its
members on the host's public ports, exempt networks excepted, before anything else is accepted
(a banned address's open connections stop too).

Why not fail2ban: it keeps its bans in a table or chain of its own, outside the ruleset the
firewall role renders. Every firewall apply begins with `flush ruleset` (one atomic
transaction), which would delete that table and every ban in it; and the firewall's live-ruleset
check (roles/firewall.py, LiveRuleset) would find the foreign table, declare the ruleset
changed by hand and apply it again at every deploy. BAN_SET instead is part of the rendered
ruleset, declared `flags dynamic,timeout`, whose elements the live-ruleset digest leaves out:
a ban never makes the firewall re-apply, and a re-apply recreates the set (empty).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bulwark import banwatch, catalogue, mail, registry, web
from bulwark.deploying import install, keep_running, restarted
from bulwark.exposure import exempt_networks
from bulwark.plan import ManagedFile
from bulwark.probes import Unit
from bulwark.render import RenderedFile
from bulwark.templating import shipped_text
from bulwark.topology import Host, Topology

# Failed logins from one address, counted over WINDOW_MINUTES, that ban it for BAN_MINUTES.
MAX_FAILURES = 10
WINDOW_MINUTES = 10
BAN_MINUTES = 30
# Our nftables table (templates/firewall/nftables.conf.j2) and the set of banned addresses.
TABLE = "bulwark"
BAN_SET = "banned_v4"
# The bans again, each with its end, for Dovecot's passdb (templates/mail-shared/auth.lua.j2):
# a client through a proxy comes from the proxy's address, which the ruleset cannot drop. In
# the watcher's runtime directory, kept across its restarts as the nftables set is.
RUNTIME_DIR_NAME = "bulwark-banwatch"
BAN_FILE = f"/run/{RUNTIME_DIR_NAME}/banned"
# Roles owning services with `logins` -> the units whose journal reports their failed logins:
# Dovecot's login processes (IMAP, POP3), Postfix's smtpd (SMTP AUTH, through Dovecot's auth,
# which logs nothing itself), the web roles' credential checker, and slapd (its failed binds).
# A new role with logins adds its row (tests/unit check it).
WATCHED_UNITS: Mapping[str, tuple[str, ...]] = {
    "mx": (mail.POSTFIX_INSTANCE,),
    "mailstore": (mail.DOVECOT_UNIT,),
    "dav": (web.WEBAUTH_UNIT,),
    "files": (web.FILESAUTH_UNIT,),
    "directory": ("bulwark-slapd.service",),
}
UNIT = "bulwark-banwatch.service"
SCRIPT = "/usr/local/sbin/bulwark-banwatch"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
# The watcher's source, installed as SCRIPT (it imports nothing but the standard library).
SOURCE = Path(banwatch.__file__)


def login_roles(host: Host) -> tuple[str, ...]:
    """The deployed roles of `host` that own a service with logins, in deploy order."""
    return tuple(
        role.name
        for role in registry.deployed_roles(host)
        if any(service.logins for service in role.services)
    )


def protects(host: Host) -> bool:
    """Whether `host` runs the watcher, and its ruleset the ban."""
    return bool(login_roles(host))


def watcher_role(host: Host) -> str | None:
    """The one role installing the watcher on `host`: the first with logins (render refuses
    two writers of one file)."""
    roles = login_roles(host)
    return roles[0] if roles else None


def watcher_files(role: str, host: Host) -> tuple[ManagedFile, ...]:
    """The watcher's script and unit, when `role` is the one installing them on `host`."""
    if role != watcher_role(host):
        return ()
    return (
        ManagedFile(SCRIPT, "bulwark-banwatch.j2", mode="0755"),
        ManagedFile(UNIT_FILE, "bulwark-banwatch.service.j2"),
    )


def watcher_units(role: str, host: Host) -> tuple[Unit, ...]:
    """The watcher running, where `role` installs it (`converge_watcher`)."""
    return (Unit(UNIT),) if role == watcher_role(host) else ()


def watcher_context(topology: Topology, host: Host) -> dict[str, Any]:
    """What the watcher's templates need; empty on a host without logins."""
    if not protects(host):
        return {}
    return {
        "banwatch": {
            "script": SCRIPT,
            "source": shipped_text(SOURCE),
            "failures": MAX_FAILURES,
            "window_seconds": WINDOW_MINUTES * 60,
            "ban_minutes": BAN_MINUTES,
            "table": TABLE,
            "set": BAN_SET,
            "runtime_dir_name": RUNTIME_DIR_NAME,
            "ban_file": BAN_FILE,
            "units": [unit for role in login_roles(host) for unit in WATCHED_UNITS[role]],
            "exempt": exempt_networks(topology),
            "services": [
                service.name
                for service in catalogue.services_for_roles(login_roles(host))
                if service.logins
            ],
        }
    }


def converge_watcher(role: str, files: Mapping[str, RenderedFile]) -> None:
    """Install the watcher where `role` owns it (restarted when it changed), keep it running."""
    if SCRIPT not in files:
        return
    install(
        role,
        [files[SCRIPT], files[UNIT_FILE]],
        then=restarted(UNIT, unit_files_changed=True),
    )
    keep_running(role, UNIT)
