"""Where each account's data is, by kind (each kind named after the volume holding it): one
answer for Dovecot's `mail_home`, the purge of closed accounts (bulwark/closure.py) and the
backups' restore and drill (roles/backup.py)."""

from __future__ import annotations

from bulwark import davstore
from bulwark.topology import Account, Topology
from bulwark.volumes import volume

KINDS: tuple[str, ...] = ("mail", "dav", "files")


def account_paths(topology: Topology, account: Account, kind: str) -> tuple[str, ...]:
    """Every path of `account`'s data of `kind` (KINDS) on the hosts keeping that kind."""
    if kind == "mail":  # everything Dovecot keeps of it: Maildir, indexes, Sieve, sync state
        return (f"{volume('mail').path}/{topology.domain}/{account.user}",)
    if kind == "dav":
        return davstore.account_paths(topology, account)
    if kind == "files":
        return (f"{volume('files').path}/{topology.files_root(account)}",)
    raise ValueError(f"no kind of account data {kind!r}; kinds are {', '.join(KINDS)}")
