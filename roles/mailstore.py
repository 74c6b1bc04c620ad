"""mailstore: Dovecot, the accounts' mailboxes, replicated to the other site.

IMAP (993) and POP3 (995) over implicit TLS only, the plaintext listeners off; app passwords
only, through the Lua passdb shared with the mx role; LMTP from the site's MX hosts on the LAN
address, TLS only; dsync replication with the other site's mail store over the VPN, doveadm over TLS
checked against the internal CA, so mail delivered in one site is readable in the other. Mail
the MX's spam filter marked is filed into the account's Junk folder at delivery (a global Sieve
script run before any of the account's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import FactBase, QuoteString, StringCommand, deploy, operation

from bulwark import bruteforce, catalogue, closure, mail, mailtrust, tlsconfig
from bulwark.deploying import (
    directory,
    install,
    install_sysctl,
    keep_running,
    packages,
    pinned_address,
    render_for_deploy,
    restarted,
    system_user,
    units_reread,
)
from bulwark.errors import BulwarkError
from bulwark.hoststate import expect, host_state
from bulwark.livecheck import LiveCheck
from bulwark.operations import Activation
from bulwark.plan import ManagedFile
from bulwark.probes import (
    Directories,
    Directory,
    Disk,
    MailReplication,
    Sysctl,
    Unit,
    Units,
    parse_replicator,
)
from bulwark.secret import SecretStore
from bulwark.secret_names import DOVEADM_PASSWORD
from bulwark.topology import Account, Host, Topology

ROLE = "mailstore"

PACKAGES: tuple[str, ...] = (
    *mail.AUTH_PACKAGES,
    "dovecot-imapd",
    "dovecot-pop3d",
    "dovecot-lmtpd",
    "dovecot-sieve",
)
# Created for every account, subscribed, with their RFC 6154 special-use flag.
JUNK = "Junk"
MAILBOXES: tuple[str, ...] = ("Drafts", "Sent", JUNK, "Trash", "Archive")
# The Sieve script filing spam, and its compiled form beside it (made at deploy: Dovecot's
# delivery, running as the vmail user, could not write it there).
SIEVE_DIR = "/etc/dovecot/sieve"
SIEVE_SCRIPT = f"{SIEVE_DIR}/spam.sieve"
SIEVE_COMPILE = Activation("sievec-spam", (("sievec", SIEVE_SCRIPT),))
SERVICES: tuple[str, ...] = ("imaps", "pop3s", "lmtp", "mail-replication")
# Its listeners for the site's proxies (roles/proxy.py), when the site has one.
PROXIED_SERVICES: tuple[str, ...] = ("imaps-proxied", "pop3s-proxied")
# The vmail user's login shell: nobody logs in as it.
NO_LOGIN = "/usr/sbin/nologin"

# Replication is bounded wherever it could wait on a peer that went away: a session started
# while the other store restarted used to hang for Dovecot's default 10 minutes, holding that
# user's replication and then Dovecot's own stop.
# dsync's I/O timeout in seconds on the replicating side (its -T; Dovecot's default is 600).
REPLICATION_IO_TIMEOUT = 30
# Seconds between two retries of the users whose last sync failed (Dovecot 2.3 itself waits a
# fixed 5 minutes, so replication caught up minutes after the tunnel returned).
REPLICATION_RETRY_INTERVAL = 10
# Seconds systemd waits for Dovecot to stop before it kills what is left.
DOVECOT_STOP_TIMEOUT = 20
# SYNs a new connection sends before it fails (Linux's default 6 fails after 127 s): a sync
# started while the tunnel was cut fails after 15 s, and the retry timer starts one that gets
# through soon after the tunnel returns, instead of a SYN backed off by up to a minute.
TCP_SYN_RETRIES = 3
SYSCTL_FILE = "/etc/sysctl.d/62-bulwark-mailstore.conf"
RETRY_SCRIPT = "/usr/local/sbin/bulwark-replication-retry"
RETRY_TIMER = "bulwark-replication-retry.timer"
RETRY_SERVICE_FILE = "/etc/systemd/system/bulwark-replication-retry.service"
RETRY_TIMER_FILE = f"/etc/systemd/system/{RETRY_TIMER}"
DOVECOT_DROPIN = f"/etc/systemd/system/{mail.DOVECOT_UNIT}.d/bulwark.conf"


@operation()
def mailboxes_created(wanted: Mapping[str, tuple[str, str]]):
    """Create, for each account, the mailboxes of `wanted` that are not on disk yet.

    + wanted: what is on disk once a mailbox exists (`mailbox_paths`) -> (address, mailbox)

    **Example:**

    .. code:: python

        mailboxes_created(
            name="mailstore: mailboxes",
            wanted={"/var/vmail/example.net/alice/Maildir/.Sent": ("alice@example.net", "Sent")},
        )
    """
    found = host_state(paths=tuple(wanted)).files
    missing: dict[str, list[str]] = {}
    for path, (address, mailbox) in wanted.items():
        if found[path] is None:
            missing.setdefault(address, []).append(mailbox)
    if not missing:
        current_host.noop("every mailbox exists")
    for address, mailboxes in missing.items():
        if "INBOX" in mailboxes:
            yield StringCommand(
                "doveadm", "mailbox", "status", "-u", QuoteString(address), "guid", "INBOX"
            )
        if others := [mailbox for mailbox in mailboxes if mailbox != "INBOX"]:
            yield StringCommand(
                "doveadm", "mailbox", "create", "-s", "-u", QuoteString(address),
                *map(QuoteString, others),
            )  # fmt: skip


class ReplicatedUsers(FactBase):
    """The users Dovecot's replicator keeps syncing (none while Dovecot is not running)."""

    def command(self) -> StringCommand:
        return StringCommand(
            "doveadm", "-f", "tab", "replicator", "status", QuoteString("*"), "2>/dev/null",
            "||", "true",
        )  # fmt: skip

    @staticmethod
    def default() -> frozenset[str]:
        return frozenset()

    def process(self, output: list[str]) -> frozenset[str]:
        return frozenset(user.user for user in parse_replicator(output))


@operation()
def replication_forgets(addresses: tuple[str, ...]):
    """Take `addresses` (closed accounts) out of Dovecot's replicator, where it still has them.

    The replicator keeps every user it ever synced: a closed account, unknown to the userdb,
    would fail its sync at every retry (bulwark-replication-retry, every few seconds) and
    mark replication failed. Reopened, the account is taken in again at its first change.

    + addresses: the closed accounts' addresses

    **Example:**

    .. code:: python

        replication_forgets(name="mailstore: closed accounts", addresses=("bob@example.net",))
    """
    kept = current_host.get_fact(ReplicatedUsers) if addresses else frozenset()
    forget = [address for address in addresses if address in kept]
    if not forget:
        current_host.noop("the replicator has no closed account")
    for address in forget:
        yield StringCommand("doveadm", "replicator", "remove", QuoteString(address))


class SessionUsers(FactBase):
    """The users with an IMAP or POP3 session open (none while Dovecot is not running)."""

    def command(self) -> StringCommand:
        return StringCommand("doveadm", "-f", "tab", "who", "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> frozenset[str]:
        return frozenset()

    def process(self, output: list[str]) -> frozenset[str]:
        rows = [line.split("\t") for line in output if "\t" in line]
        if not rows or rows[0][0].strip() != "username":
            return frozenset()
        return frozenset(row[0] for row in rows[1:])


@operation()
def sessions_ended(addresses: tuple[str, ...]):
    """End the IMAP and POP3 sessions of `addresses` (closed accounts) still open: a closed
    account is refused at its next login, and a session opened before the deploy (an IDLE
    held for days) must not outlive the closure.

    + addresses: the closed accounts' addresses

    **Example:**

    .. code:: python

        sessions_ended(name="mailstore: closed accounts' sessions", addresses=("bob@example.net",))
    """
    open_now = current_host.get_fact(SessionUsers) if addresses else frozenset()
    kick = [address for address in addresses if address in open_now]
    if not kick:
        current_host.noop("no closed account has a session")
    for address in kick:
        yield StringCommand("doveadm", "kick", QuoteString(address))


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        *mail.dovecot_files(ROLE, host),
        ManagedFile(SYSCTL_FILE, "sysctl.conf.j2"),
        ManagedFile(DOVECOT_DROPIN, "dovecot-service.conf.j2"),
        ManagedFile(SIEVE_SCRIPT, "spam.sieve.j2", checker="sieve"),
        ManagedFile(RETRY_SCRIPT, "replication-retry.sh.j2", mode="0755"),
        ManagedFile(RETRY_SERVICE_FILE, "replication-retry.service.j2"),
        ManagedFile(RETRY_TIMER_FILE, "replication-retry.timer.j2"),
        *bruteforce.watcher_files(ROLE, host),
        *closure.purge_files(ROLE, host),
    )


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    peer = replica(topology, host)
    proxied = {name: mail.proxied_context(topology, host, name) for name in PROXIED_SERVICES}
    return {
        **mail.auth_context(topology, host, secrets),
        **tlsconfig.tls_context(secrets, host),
        **bruteforce.watcher_context(topology, host),
        **closure.purge_context(topology, host),
        "host": host.name,
        "lan_address": str(host.lan_address),
        "ports": {name: catalogue.service(name).port for name in SERVICES},
        "proxied": proxied,
        "proxy_networks": sorted(
            {network for each in proxied.values() if each for network in each["proxies"]}
        ),
        "vmail_user": mail.VMAIL_USER,
        "vmail_home": mail.VMAIL_HOME,
        "mailboxes": MAILBOXES,
        "sieve_script": SIEVE_SCRIPT,
        "spam_header": mailtrust.SPAM_HEADER,
        "junk": JUNK,
        "peer": {
            "host": peer.name,
            "site": peer.site,
            "name": topology.fqdn(peer),
            "address": str(peer.lan_address),
        },
        "doveadm_password": secrets.get(DOVEADM_PASSWORD),
        "replication_io_timeout": REPLICATION_IO_TIMEOUT,
        "retry_interval": REPLICATION_RETRY_INTERVAL,
        "retry_script": RETRY_SCRIPT,
        "retry_timer": RETRY_TIMER,
        "stop_timeout": DOVECOT_STOP_TIMEOUT,
        "tcp_syn_retries": TCP_SYN_RETRIES,
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """Dovecot, the retry timer and the ban watcher running, the sysctl live, the mail home,
    its disk, and replication with the other site's store as the replicator sees it."""
    return (
        Units(
            (
                *mail.dovecot_units(ROLE, host),
                Unit(RETRY_TIMER),
                *bruteforce.watcher_units(ROLE, host),
                *closure.purge_units(ROLE, host),
            )
        ),
        Sysctl(SYSCTL_FILE),
        Directories((Directory(mail.VMAIL_HOME, mail.VMAIL_USER, mail.VMAIL_USER, "0700"),)),
        Disk((mail.VMAIL_HOME,)),
        MailReplication(replica(topology, host).name),
    )


@deploy("mailstore")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """The vmail user and its home, the replica's name, the spam filing script (compiled),
    Dovecot's files (reloaded once they changed) and bounded stop, the retry of failed
    replication, and on the primary site the accounts' mailboxes."""
    packages(ROLE, PACKAGES)
    system_user(ROLE, mail.VMAIL_USER, mail.VMAIL_HOME, NO_LOGIN)
    directory("mailstore: mail home", mail.VMAIL_HOME, mail.VMAIL_USER, mail.VMAIL_USER, "0700")
    _pin_replica_address(topology, host)
    rendered = render_for_deploy(ROLE, topology, host, secrets)
    install_sysctl(ROLE, rendered[SYSCTL_FILE])
    install(ROLE, [rendered[DOVECOT_DROPIN]], then=units_reread())
    directory(f"{ROLE}: {SIEVE_DIR}", SIEVE_DIR, "root", "root", "0755")
    install(ROLE, [rendered[SIEVE_SCRIPT]], then=SIEVE_COMPILE)
    mail.converge_dovecot(ROLE, rendered)
    closed = tuple(account.address(topology.domain) for account in topology.closed_accounts)
    sessions_ended(name="mailstore: closed accounts' sessions ended", addresses=closed)
    replication_forgets(name="mailstore: closed accounts out of the replicator", addresses=closed)
    retry = (rendered[RETRY_SCRIPT], rendered[RETRY_SERVICE_FILE], rendered[RETRY_TIMER_FILE])
    install(ROLE, retry, then=restarted(RETRY_TIMER, unit_files_changed=True))
    keep_running(ROLE, RETRY_TIMER)
    bruteforce.converge_watcher(ROLE, rendered)
    closure.converge_purge(ROLE, rendered)
    _create_mailboxes_on_the_primary(topology, host)


def _pin_replica_address(topology: Topology, host: Host) -> None:
    """The replica's name (its certificate's) resolves to its LAN address: replication goes
    through the VPN whatever public DNS says, and doveadm can verify the name."""
    peer = replica(topology, host)
    pinned_address(ROLE, topology.fqdn(peer), str(peer.lan_address))


def _create_mailboxes_on_the_primary(topology: Topology, host: Host) -> None:
    """Every account's mailboxes are created once, in the primary site, and reach the other
    store by replication. Created in both stores, a mailbox gets two GUIDs, and dsync 2.3 then
    swaps them at every sync (each side adopts the other's): replication never settles.
    """
    if host.site != topology.primary_site.name:
        return
    wanted = {
        path: (account.address(topology.domain), mailbox)
        for account in topology.open_accounts
        for mailbox, path in mailbox_paths(topology, account).items()
    }
    expect(paths=wanted)
    mailboxes_created(
        name="mailstore: the accounts' mailboxes, replicated from here", wanted=wanted
    )


def mailbox_paths(topology: Topology, account: Account) -> dict[str, str]:
    """Mailbox name -> what exists on disk once Dovecot has created it (Maildir++ layout)."""
    maildir = f"{mail.account_home(topology, account)}/{mail.MAILDIR}"
    return {
        "INBOX": f"{maildir}/dovecot-uidlist",
        **{mailbox: f"{maildir}/.{mailbox}" for mailbox in MAILBOXES},
    }


def replica(topology: Topology, host: Host) -> Host:
    """The mail store `host` replicates with: the other site's (Dovecot 2.3 keeps one replica)."""
    peers = [mail.site_mailstore(topology, site.name) for site in topology.peer_sites(host.site)]
    if len(peers) != 1:
        raise BulwarkError(f"{host.name}: Dovecot 2.3 replicates with one peer, not {len(peers)}")
    return peers[0]
