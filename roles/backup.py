"""backup: every data host's hourly borg archive to the other site, kept there append-only.

Two sides, one module (bulwark.backup says who sends what where):

- a data host (the every-host `backup-client` role, on hosts keeping mail, dav or files data)
  runs `bulwark-backup create` hourly: its volumes' directories, encrypted on the host
  (repokey-blake2, the passphrase from the vault), over SSH through the VPN to its repository
  on the other site's backup host, with a key that can do nothing else;
- a backup host (the `backup` role) runs a sshd of its own on its LAN address, which lets in
  only the other site's data hosts, each from its own address and with its own key, into
  `borg serve --append-only --restrict-to-repository` on its own repository. It alone prunes
  (every archive older than 7 days but the newest) and compacts, hourly, stopping if an archive
  vanished that it did not remove; and it drills daily: checks, extracts the newest archive of
  each repository into a scratch directory and counts every account's items.

The scripts' work is bulwark/backup_agent.py, installed as /usr/local/sbin/bulwark-backup.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyinfra.api import deploy

from bulwark import account_data, backup, backup_agent, catalogue
from bulwark.backup import REPOSITORY_DIR, USER, Repository
from bulwark.deploying import (
    directory,
    install,
    keep_running,
    packages,
    render_for_deploy,
    restarted,
    system_user,
)
from bulwark.livecheck import LiveCheck
from bulwark.operations import STAGED, Activation, Check
from bulwark.plan import ManagedFile
from bulwark.platform_secrets import ssh_public_key
from bulwark.probes import Directories, Directory, Refresh, Unit, Units
from bulwark.secret import SecretStore
from bulwark.secret_names import backup_host_key_name, backup_passphrase_name, backup_ssh_key_name
from bulwark.ssh import SSH_CIPHERS, SSH_HOST_KEY_ALGORITHMS, SSH_KEX, SSH_MACS
from bulwark.templating import derived_or_sealed, shipped_text
from bulwark.topology import Account, Host, Topology

ROLE = "backup"

PACKAGES: tuple[str, ...] = ("borgbackup",)
SCRIPT = "/usr/local/sbin/bulwark-backup"
AGENT_SOURCE = Path(backup_agent.__file__)
CONFIG_DIR = "/etc/bulwark/backup"
# The backup user's shell: sshd runs the forced `borg serve` through it; nothing else runs.
SHELL = "/bin/sh"

# A data host: its key, the backup sshd's pinned host key, its passphrase, its configuration,
# and borg's cache and security records (keyed hashes and chunk ids, no file names).
CLIENT_CONFIG = f"{CONFIG_DIR}/client.json"
CLIENT_KEY = f"{CONFIG_DIR}/id_ed25519"
CLIENT_KNOWN_HOSTS = f"{CONFIG_DIR}/known_hosts"
CLIENT_PASSPHRASE = f"{CONFIG_DIR}/passphrase"
CLIENT_STATE_DIR = "/var/lib/bulwark-backup"
CLIENT_UNIT = "bulwark-backup.service"
CLIENT_TIMER = "bulwark-backup.timer"

# A backup host: the sshd and the repositories' passphrases in CONFIG_DIR; on the `backups`
# volume, beside the repositories, the prune's ledger, the drill's scratch space and borg's
# own state.
SERVER_CONFIG = f"{CONFIG_DIR}/server.json"
SSHD_CONFIG = f"{CONFIG_DIR}/sshd_config"
SSHD_HOST_KEY = f"{CONFIG_DIR}/ssh_host_ed25519_key"
AUTHORIZED_KEYS = f"{CONFIG_DIR}/authorized_keys"
PASSPHRASE_DIR = f"{CONFIG_DIR}/passphrases"
SERVER_STATE_DIR = f"{REPOSITORY_DIR}/.state"
SERVER_BORG_DIR = f"{REPOSITORY_DIR}/.borg"
DRILL_DIR = f"{REPOSITORY_DIR}/.drill"
SSHD_UNIT = "bulwark-backup-sshd.service"
PRUNE_UNIT = "bulwark-backup-prune.service"
PRUNE_TIMER = "bulwark-backup-prune.timer"
DRILL_UNIT = "bulwark-backup-drill.service"
DRILL_TIMER = "bulwark-backup-drill.timer"
SSHD_CHECK = Check(SSHD_CONFIG, ("/usr/sbin/sshd", "-t", "-f", STAGED))
# A change (the first deploy above all) runs a backup, or a prune and a drill, at once in the
# background rather than at the timer's next hour; what they find shows in `bulwark status`.
# Their timers start first: a finished oneshot nothing refers to is unloaded by systemd, and
# its result with it, which status reads.
FIRST_BACKUP = Activation(
    "bulwark-backup-now",
    (
        ("systemctl", "daemon-reload"),
        ("systemctl", "start", CLIENT_TIMER),
        ("systemctl", "start", "--no-block", CLIENT_UNIT),
    ),
)
FIRST_PRUNE_AND_DRILL = Activation(
    "bulwark-backup-prune-and-drill-now",
    (
        ("systemctl", "daemon-reload"),
        ("systemctl", "start", PRUNE_TIMER, DRILL_TIMER),
        ("systemctl", "start", "--no-block", PRUNE_UNIT, DRILL_UNIT),
    ),
)

# What a restore runs after copying mail back: Dovecot rereads the maildir.
AFTER_RESTORE: dict[str, list[list[str]]] = {
    "mail": [["doveadm", "force-resync", "-u", "{address}", "*"]]
}


def run_finished(unit: str) -> str:
    """Shell waiting for a run of `unit` (a oneshot) under way, if any, to end."""
    state = shlex.join(["systemctl", "show", "--property", "ActiveState", "--value", unit])
    return 'while [ "$(' + state + ')" = activating ]; do sleep 1; done'


def fresh_run(unit: str) -> list[str]:
    """The command running `unit` once more from its start, to its end: a run already under
    way (the timer's, a deploy's) is waited for first, since `systemctl start` would only
    join it, and it began before whatever the caller wants it to see."""
    return ["sh", "-c", run_finished(unit) + "; " + shlex.join(["systemctl", "start", unit])]


def _unit(name: str) -> str:
    return f"/etc/systemd/system/{name}"


def client_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    """What a data host sending backups gets."""
    if not backup.repository_of(topology, host):
        return ()
    return (
        ManagedFile(CLIENT_CONFIG, "client.json.j2", mode="0600"),
        ManagedFile(CLIENT_KEY, "secret.j2", mode="0600", item="client-key"),
        ManagedFile(CLIENT_PASSPHRASE, "secret.j2", mode="0600", item="client-passphrase"),
        ManagedFile(CLIENT_KNOWN_HOSTS, "known_hosts.j2"),
        ManagedFile(_unit(CLIENT_UNIT), "bulwark-backup.service.j2"),
        ManagedFile(_unit(CLIENT_TIMER), "timer.j2", item="create"),
    )


def sshd_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    """A backup host's sshd: checked together, restarted on a change."""
    if not backup.repositories_on(topology, host):
        return ()
    return (
        ManagedFile(SSHD_HOST_KEY, "secret.j2", mode="0600", item="host-key"),
        ManagedFile(SSHD_CONFIG, "sshd_config.j2", checker="sshd"),
        ManagedFile(_unit(SSHD_UNIT), "bulwark-backup-sshd.service.j2"),
    )


def server_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    """The rest of a backup host's: who may send, the passphrases, the prune and the drill."""
    repositories = backup.repositories_on(topology, host)
    if not repositories:
        return ()
    return (
        ManagedFile(SERVER_CONFIG, "server.json.j2", group=USER, mode="0640"),
        ManagedFile(AUTHORIZED_KEYS, "authorized_keys.j2"),
        *(
            ManagedFile(
                f"{PASSPHRASE_DIR}/{repository.source.name}",
                "secret.j2",
                group=USER,
                mode="0640",
                item=f"passphrase/{repository.source.name}",
            )
            for repository in repositories
        ),
        ManagedFile(_unit(PRUNE_UNIT), "server-job.service.j2", item="prune"),
        ManagedFile(_unit(PRUNE_TIMER), "timer.j2", item="prune"),
        ManagedFile(_unit(DRILL_UNIT), "server-job.service.j2", item="drill"),
        ManagedFile(_unit(DRILL_TIMER), "timer.j2", item="drill"),
    )


def script_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    """The agent, on both sides."""
    if not client_files(topology, host) and not server_files(topology, host):
        return ()
    return (ManagedFile(SCRIPT, "bulwark-backup.j2", mode="0755"),)


def managed_files(topology: Topology, host: Host) -> tuple[ManagedFile, ...]:
    return (
        *script_files(topology, host),
        *sshd_files(topology, host),
        *server_files(topology, host),
        *client_files(topology, host),
    )


def _accounts(
    topology: Topology, host: Host, accounts: tuple[Account, ...]
) -> dict[str, dict[str, list[str]]]:
    """Account -> kind -> its directories, for the kinds `host` keeps."""
    kinds = backup.backed_up_volumes(host)
    return {
        account.user: {
            kind: list(account_data.account_paths(topology, account, kind)) for kind in kinds
        }
        for account in sorted(accounts, key=lambda account: account.user)
    }


def _public_key(secrets: SecretStore, name: str) -> str:
    """An SSH public key from the vault's private one; a sealed audit cannot derive it."""
    private = secrets.get(name)
    return derived_or_sealed(
        lambda: ssh_public_key(private.reveal()), f"<public key of {private.name}: sealed>"
    )


def _client_config(topology: Topology, repository: Repository) -> dict[str, Any]:
    source = repository.source
    rsh = [
        "ssh", "-F", "/dev/null", "-i", CLIENT_KEY, "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={CLIENT_KNOWN_HOSTS}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "-o", "ServerAliveInterval=30",
    ]  # fmt: skip
    return {
        "name": source.name,
        "repository": repository.url(),
        "paths": list(backup.backed_up_paths(source)),
        "passphrase_file": CLIENT_PASSPHRASE,
        "rsh": shlex.join(rsh),
        "base_dir": CLIENT_STATE_DIR,
        # Open accounts only: a closed one is restored after it is reopened.
        "accounts": _accounts(topology, source, topology.open_accounts),
        "addresses": {
            account.user: account.address(topology.domain) for account in topology.open_accounts
        },
        "after_restore": {
            kind: argv
            for kind, argv in AFTER_RESTORE.items()
            if kind in backup.backed_up_volumes(source)
        },
    }


def _server_config(topology: Topology, host: Host) -> dict[str, Any]:
    return {
        "repositories": {
            repository.source.name: {
                "path": repository.path,
                "passphrase_file": f"{PASSPHRASE_DIR}/{repository.source.name}",
                # Closed accounts too: the prune takes them out of the archives.
                "accounts": _accounts(topology, repository.source, topology.accounts),
            }
            for repository in backup.repositories_on(topology, host)
        },
        # Closed accounts and their purge days: the prune takes them out of every archive.
        "closed": {
            account.user: topology.purge_date(account).isoformat()
            for account in topology.closed_accounts
        },
        "retention_days": backup.RETENTION_DAYS,
        "stale_hours": backup.STALE_HOURS,
        "state_dir": SERVER_STATE_DIR,
        "scratch_dir": DRILL_DIR,
        "base_dir": SERVER_BORG_DIR,
    }


def template_context(topology: Topology, host: Host, secrets: SecretStore) -> Mapping[str, Any]:
    repository = backup.repository_of(topology, host)
    repositories = backup.repositories_on(topology, host)
    secret_files = {}
    if repository:
        secret_files["client-key"] = secrets.get(backup_ssh_key_name(host))
        secret_files["client-passphrase"] = secrets.get(backup_passphrase_name(host))
    if repositories:
        secret_files["host-key"] = secrets.get(backup_host_key_name(host))
        for kept in repositories:
            secret_files[f"passphrase/{kept.source.name}"] = secrets.get(
                backup_passphrase_name(kept.source)
            )
    service = catalogue.service("backup")
    return {
        "backup": {
            "script": SCRIPT,
            "agent_source": shipped_text(AGENT_SOURCE),
            "secret_files": secret_files,
            "user": USER,
            "repository_dir": REPOSITORY_DIR,
            "client_config": CLIENT_CONFIG,
            "client_state_dir": CLIENT_STATE_DIR,
            "client_json": (
                json.dumps(_client_config(topology, repository), indent=1, sort_keys=True)
                if repository
                else None
            ),
            "backed_up_paths": backup.backed_up_paths(host),
            "known_host": (
                f"[{repository.backup_host.lan_address}]:{service.port} "
                + _public_key(secrets, backup_host_key_name(repository.backup_host))
                if repository
                else None
            ),
            "server_config": SERVER_CONFIG,
            "server_json": json.dumps(_server_config(topology, host), indent=1, sort_keys=True),
            "server_state_dir": SERVER_STATE_DIR,
            "listen": f"{host.lan_address}:{service.port}",
            "sshd_config": SSHD_CONFIG,
            "host_key": SSHD_HOST_KEY,
            "authorized_keys": AUTHORIZED_KEYS,
            "authorized": [
                {
                    "source": kept.source.name,
                    "address": str(kept.source.lan_address),
                    "repository": kept.path,
                    "key": _public_key(secrets, backup_ssh_key_name(kept.source)),
                }
                for kept in repositories
            ],
            "ssh_kex": SSH_KEX,
            "ssh_ciphers": SSH_CIPHERS,
            "ssh_macs": SSH_MACS,
            "ssh_host_key_algorithms": SSH_HOST_KEY_ALGORITHMS,
            "schedules": {
                "create": backup.BACKUP_SCHEDULE,
                "prune": backup.PRUNE_SCHEDULE,
                "drill": backup.DRILL_SCHEDULE,
            },
            "units": {"create": CLIENT_UNIT, "prune": PRUNE_UNIT, "drill": DRILL_UNIT},
            "retention_days": backup.RETENTION_DAYS,
        }
    }


def live_checks(topology: Topology, host: Host) -> tuple[LiveCheck, ...]:
    """A data host: its last backup's result and age. A backup host: its sshd, timers, the
    last prune's and drill's results, and the repositories' directory."""
    checks: list[LiveCheck] = []
    if backup.repository_of(topology, host):
        checks += [
            Units((Unit(CLIENT_TIMER),)),
            Refresh("backup", CLIENT_UNIT, "backup", "last backup"),
        ]
    if backup.repositories_on(topology, host):
        checks += [
            Units((Unit(SSHD_UNIT), Unit(PRUNE_TIMER), Unit(DRILL_TIMER))),
            Refresh("backup prune", PRUNE_UNIT, "backup", "last backup prune"),
            Refresh("backup drill", DRILL_UNIT, "drill", "last backup drill"),
            Directories((Directory(REPOSITORY_DIR, USER, USER, "0700"),)),
        ]
    return tuple(checks)


@deploy("backup")
def converge(topology: Topology, host: Host, secrets: SecretStore) -> None:
    """borg; on a backup host its user and repositories' directory, the sshd and the prune and
    drill timers; on a data host its key, passphrase and hourly timer."""
    repository = backup.repository_of(topology, host)
    repositories = backup.repositories_on(topology, host)
    if not repository and not repositories:
        return
    packages(ROLE, PACKAGES)
    rendered = render_for_deploy(ROLE, topology, host, secrets)

    def files(managed: tuple[ManagedFile, ...]) -> list:
        return [rendered[item.path] for item in managed]

    directory("backup: configuration", CONFIG_DIR, "root", "root", "0755")
    install(ROLE, files(script_files(topology, host)))
    if repositories:
        system_user(ROLE, USER, REPOSITORY_DIR, SHELL)
        directory("backup: repositories", REPOSITORY_DIR, USER, USER, "0700")
        directory("backup: passphrases", PASSPHRASE_DIR, "root", USER, "0750")
        # The host key first (the configuration's check loads it); a new one leaves sshd's
        # restart pending, for this run or, if it is cut short, the next.
        host_key, *sshd = files(sshd_files(topology, host))
        restart = restarted(SSHD_UNIT, unit_files_changed=True)
        install(ROLE, [host_key], leaves_pending=restart)
        install(ROLE, sshd, check=SSHD_CHECK, then=restart)
        install(ROLE, files(server_files(topology, host)), then=FIRST_PRUNE_AND_DRILL)
        keep_running(ROLE, SSHD_UNIT)
        keep_running(ROLE, PRUNE_TIMER)
        keep_running(ROLE, DRILL_TIMER)
    if repository:
        directory("backup: borg state", CLIENT_STATE_DIR, "root", "root", "0700")
        install(ROLE, files(client_files(topology, host)), then=FIRST_BACKUP)
        keep_running(ROLE, CLIENT_TIMER)
