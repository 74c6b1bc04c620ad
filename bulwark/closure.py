"""Account closure: a closed account is refused at once, and its data purged after the retention.

The promise (seed: "Destruction of data after account closure"): an account the inventory marks
`closed: "YYYY-MM-DD"` logs in nowhere from the next deploy on, at both sites (IMAP, POP, SMTP,
DAV, files over WebDAV and FTPS, LDAP), and mail to its address is refused at RCPT as an unknown
user: every credential list, recipient table and directory entry is built from
`Topology.open_accounts`. Its data stays on disk untouched, and its secrets in the vault, until
`closed + closed_account_retention_days` (37 days to a year; bulwark.topology); reopening
before then (removing `closed`) renders it back in with everything as it was.

The purge is the hosts' own, never a deploy's: every host keeping accounts' data (the roles of
ACCOUNT_DATA) runs `bulwark-purge-closed` (bulwark/purge.py) daily from a persistent systemd
timer, reading a rendered list of the closed accounts, their purge days and their paths on that
host (and the open accounts' paths, which it refuses to touch). Both sites purge on their own.
Mail is no longer replicated once the account is closed: Dovecot's userdb no longer knows it,
and the deploy takes it out of each store's replicator (roles/mailstore.py).
The secondary's copy of calendars, contacts and files follows the primary: should the
secondary purge first, its next pull copies them back until the primary's own run that day,
and the pull after that deletes them (the follower copies deletions).

Refused at once means every new login, and the IMAP and POP3 sessions still open (the deploy
ends them: roles/mailstore.py). An FTPS session opened before the deploy is not cut: it lasts
until the client ends it or pure-ftpd's idle timeout; each WebDAV, DAV and LDAP request is
checked on its own (slapd restarts on the new users file, dropping its connections).

Not on disk, so not in the list: the LDAP entries (slapd's databases are rebuilt, at the
deploy that closes the account, from the users file and the books of open accounts only) and
the app-password hashes on the hosts (rendered for open accounts only). Journald keeps the
account's log lines for the logs' own 180 days.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bulwark import account_data, purge, registry
from bulwark.deploying import install, keep_running, restarted
from bulwark.plan import ManagedFile
from bulwark.probes import Unit
from bulwark.render import RenderedFile
from bulwark.templating import shipped_text
from bulwark.topology import Account, Host, Topology
from bulwark.volumes import volume

# Role -> the kind of account data its hosts keep (bulwark.account_data), inside one of the role's
# volumes (registry.Role.volumes: the purge's roots). A role keeping per-account data adds its
# entry here (and, as dav, files and mailstore have, the one-line includes of closure-shared/
# in its templates folder, for a host where it is the first such role): the purge then covers
# it on every host of the role. Backups are not files of an account: the backup hosts' prune
# takes a closed account out of their archives (bulwark/backup_agent.py).
ACCOUNT_DATA: Mapping[str, str] = {"mailstore": "mail", "dav": "dav", "files": "files"}

SCRIPT = "/usr/local/sbin/bulwark-purge-closed"
LIST = "/etc/bulwark/closed-accounts.json"
UNIT = "bulwark-purge-closed.service"
TIMER = "bulwark-purge-closed.timer"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
TIMER_FILE = f"/etc/systemd/system/{TIMER}"
# The purge's source, installed as SCRIPT (it imports nothing but the standard library).
SOURCE = Path(purge.__file__)


def data_roles(host: Host) -> tuple[str, ...]:
    """The deployed roles of `host` keeping accounts' data, in deploy order."""
    return tuple(role.name for role in registry.deployed_roles(host) if role.name in ACCOUNT_DATA)


def purge_role(host: Host) -> str | None:
    """The one role installing the purge on `host`: the first keeping accounts' data (render
    refuses two writers of one file)."""
    roles = data_roles(host)
    return roles[0] if roles else None


def account_paths(topology: Topology, host: Host, account: Account) -> list[str]:
    """Every path of `account`'s data on `host`, sorted."""
    return sorted(
        path
        for role in data_roles(host)
        for path in account_data.account_paths(topology, account, ACCOUNT_DATA[role])
    )


def purge_list(topology: Topology, host: Host) -> dict[str, Any]:
    """What bulwark-purge-closed reads on `host` (bulwark.purge.parse_list): the data roots,
    each open account's paths (never to be touched) and each closed account's closure day,
    purge day and paths."""
    return {
        "roots": sorted(
            volume(name).path for role in data_roles(host) for name in registry.role(role).volumes
        ),
        "open": {
            account.address(topology.domain): account_paths(topology, host, account)
            for account in topology.open_accounts
        },
        "closed": [
            {
                "account": account.address(topology.domain),
                "closed": account.closed.isoformat(),
                "purge_on": topology.purge_date(account).isoformat(),
                "paths": account_paths(topology, host, account),
            }
            for account in topology.closed_accounts
        ],
    }


def purge_files(role: str, host: Host) -> tuple[ManagedFile, ...]:
    """The purge's script, list and units, when `role` is the one installing them on `host`."""
    if role != purge_role(host):
        return ()
    return (
        ManagedFile(SCRIPT, "bulwark-purge-closed.j2", mode="0755"),
        ManagedFile(LIST, "closed-accounts.json.j2", mode="0600"),
        ManagedFile(UNIT_FILE, "bulwark-purge-closed.service.j2"),
        ManagedFile(TIMER_FILE, "bulwark-purge-closed.timer.j2"),
    )


def purge_units(role: str, host: Host) -> tuple[Unit, ...]:
    """The purge's timer active, where `role` installs it (`converge_purge`)."""
    return (Unit(TIMER),) if role == purge_role(host) else ()


def purge_context(topology: Topology, host: Host) -> dict[str, Any]:
    """What the purge's templates need; empty on a host keeping no accounts' data."""
    if purge_role(host) is None:
        return {}
    listed = purge_list(topology, host)
    return {
        "purge": {
            "script": SCRIPT,
            "source": shipped_text(SOURCE),
            "list": LIST,
            "list_json": json.dumps(listed, indent=1, sort_keys=True),
            "roots": listed["roots"],
            "retention_days": topology.closed_account_retention_days,
        }
    }


def converge_purge(role: str, files: Mapping[str, RenderedFile]) -> None:
    """Install the purge where `role` owns it (the timer restarted when anything changed),
    keep its timer active. Never runs the purge itself: only the timer does."""
    if SCRIPT not in files:
        return
    install(
        role,
        [files[path] for path in (SCRIPT, LIST, UNIT_FILE, TIMER_FILE)],
        then=restarted(TIMER, unit_files_changed=True),
    )
    keep_running(role, TIMER)
