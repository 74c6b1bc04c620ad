"""Each role's `converge`, prepared and executed offline on lab hosts: facts in, commands out.

- A converged host (every file, package, unit and ruleset as wanted) gets no command at all:
  a run reporting 0 changes is one that had nothing to do.
- A host whose files are right but whose daemon never took them (a run killed after the upload)
  gets exactly the pending action, and its marker removed.
- A no-op run of every role of a host, as `pyinfra -y` runs it, reads bulwark's state of the
  host once (bulwark.hoststate) and only the few facts listed here besides.
- A fresh host gets exactly the steps and commands in tests/unit/fixtures/converge/ (regenerate
  them with BULWARK_REGENERATE=1 after a deliberate change, and read the diff).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from pathlib import Path

import pytest
from offline import Step, run_deploy, run_deploys

from bulwark import mail, mailconfig, registry, replication
from bulwark.hoststate import Account, FileState, Found, UnitState, sysctl_settings
from bulwark.inventory import load_topology
from bulwark.render import render_host_configs
from bulwark.vault import Vault
from roles import backup, dav, directory, files, firewall, mailstore, mx, proxy
from roles.firewall import RulesetState

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "converge"
# The vmail group's id on a converged host (any: only its agreement with the user's counts).
VMAIL_GID = "999"
DAV_GID = "998"
FILES_GID = "997"
BACKUP_GID = "996"
# Every role module on every kind of lab host: gateway, shared mail host (primary and not), web.
RUNS = [
    (module.ROLE, host)
    for host in ("nj-gw", "nj-mail", "sea-mail", "nj-web", "nj-backup")
    for module in registry.host_modules(LAB.host(host))
]


def converged(
    host_name: str,
    vault: Vault,
    pending: frozenset[str] = frozenset(),
    live: dict[str, str] | None = None,
) -> dict:
    """The facts of a host where everything is as the roles want it (and `pending` left by an
    interrupted run, `live` kernel parameters changed at runtime)."""
    host = LAB.host(host_name)
    rendered = {item.path: item for item in render_host_configs(LAB, host, vault, reveal=True)}
    rendered[firewall.CANDIDATE] = rendered[firewall.RULESET]
    now = datetime.datetime.now()
    pins = []  # what /etc/hosts says of the peers
    if host.has_role("mailstore"):
        peer = mailstore.replica(LAB, host)
        pins.append(f"{peer.lan_address} {peer.name}.{LAB.domain}")
    if host.has_role("dav") and not replication.is_primary(LAB, host):
        primary = replication.primary_host(LAB, "dav")
        pins.append(f"{primary.lan_address} {LAB.fqdn(primary)}")
    mail_directory = FileState(mail.VMAIL_USER, mail.VMAIL_USER, "700", directory=True)
    dav_directory = FileState(dav.USER, dav.USER, "750", directory=True)
    files_directories = {
        files.DATA_DIR: FileState(files.USER, files.USER, "750", directory=True),
        files.LOCK_DIR: FileState(files.USER, files.USER, "700", directory=True),
        files.APACHE_RUN_DIR: FileState("root", "root", "755", directory=True),
        mailconfig.CONFIG_DIR: FileState("root", "root", "755", directory=True),
        mx.DKIM_KEY_DIR: FileState("root", mx.RSPAMD_USER, "750", directory=True),
        mailstore.SIEVE_DIR: FileState("root", "root", "755", directory=True),
        # The backup role's: repositories, configuration, passphrases, a source's borg state.
        backup.REPOSITORY_DIR: FileState(backup.USER, backup.USER, "700", directory=True),
        backup.CONFIG_DIR: FileState("root", "root", "755", directory=True),
        backup.PASSPHRASE_DIR: FileState("root", backup.USER, "750", directory=True),
        backup.CLIENT_STATE_DIR: FileState("root", "root", "700", directory=True),
    }
    # The directory's databases, slapd's own.
    for path in (
        directory.DATA_DIR,
        *(f"{directory.DATA_DIR}/{n}" for n, _ in directory.DATABASES.values()),
    ):
        files_directories[path] = FileState(directory.USER, directory.USER, "700", directory=True)
    # Debian's units of the files', directory's and proxy's daemons, masked: links to /dev/null.
    for unit in (*files.DEBIAN_UNITS, *directory.DEBIAN_UNITS, *proxy.DEBIAN_UNITS):
        files_directories[f"/etc/systemd/system/{unit}"] = FileState("root", "root", "777")
    for account in LAB.accounts:  # each account's tree, at the primary: root's top folders
        chroot = f"{files.DATA_DIR}/{LAB.files_root(account)}"
        for path in (chroot, f"{chroot}/{LAB.files_root(account)}"):
            files_directories[path] = FileState("root", files.USER, "750", directory=True)
        tree = f"{chroot}/{LAB.files_root(account)}/files"
        files_directories[tree] = FileState(files.USER, files.USER, "700", directory=True)
        usage = f"{chroot}/{files.FTP_QUOTA_FILE}"
        files_directories[usage] = FileState(files.USER, files.USER, "600", "0" * 64)
    # A primary does not follow; every other unit runs.
    trees = (dav.TREE, files.TREE)
    stopped = {tree.follow_unit for tree in trees} if replication.is_primary(LAB, host) else set()
    # The kernel runs what the sysctl files say (`live` overrides some).
    kernel = {
        key: value
        for path, item in rendered.items()
        if path.startswith("/etc/sysctl.d/")
        for key, value in sysctl_settings(item.content).items()
    }
    kernel.update(live or {})
    return {
        "HostState": lambda paths, packages, units, users=(), groups=(), sysctls=(): Found(
            pending=pending,
            files={
                path: FileState(item.user, item.group, item.mode.lstrip("0"), item.sha256)
                if (item := rendered.get(path))
                else files_directories[path]  # the files' data, locks, trees; masked units
                if path in files_directories
                else dav_directory  # the DAV data, collections and links
                if path.startswith(dav.DATA_DIR)
                else None  # a final pull owed by a former replica: none
                if path.startswith(replication.STATE_DIR)
                else mail_directory  # the mail home, the mailboxes
                for path in paths
            },
            packages=dict.fromkeys(packages, True),
            units={unit: UnitState(*(2 * [unit not in stopped])) for unit in units},
            users={
                user: {
                    mail.VMAIL_USER: Account(VMAIL_GID, mail.VMAIL_HOME, mailstore.NO_LOGIN),
                    dav.USER: Account(DAV_GID, dav.DATA_DIR, dav.NO_LOGIN),
                    files.USER: Account(FILES_GID, files.DATA_DIR, files.NO_LOGIN),
                    backup.USER: Account(BACKUP_GID, backup.REPOSITORY_DIR, backup.SHELL),
                }[user]
                for user in users
            },
            groups={
                group: {
                    mail.VMAIL_USER: VMAIL_GID,
                    dav.USER: DAV_GID,
                    files.USER: FILES_GID,
                    backup.USER: BACKUP_GID,
                }[group]
                for group in groups
            },
            sysctls={key: kernel.get(key) for key in sysctls},
        ),
        "Date": now,
        "File": {"mtime": now, "user": "root", "group": "root", "mode": 644, "size": 1},
        "Command": "none",
        "WireGuardImplementation": "kernel",
        "LiveRuleset": RulesetState("1" * 64, "1" * 64),
        "Groups": ["vmail"],
        "Users": {
            "vmail": {
                "home": "/var/vmail",
                "shell": "/usr/sbin/nologin",
                "group": "vmail",
                "groups": [],
                "comment": None,
            }
        },
        "Directory": {"mode": 700, "user": "vmail", "group": "vmail"},  # server.user's
        "FindInFile": lambda path, pattern, **_: [
            line for line in pins if re.search(pattern, line)
        ],
    }


def fresh() -> dict:
    """The facts of a host nothing has been deployed to (a container, WireGuard in the kernel)."""
    return {
        "Command": "systemd-nspawn",
        "WireGuardImplementation": "kernel",
        "Users": {},
        "Groups": [],
        "Os": "Linux",
        "LinuxName": "Debian",
        "Which": lambda command: f"/usr/sbin/{command}",
    }


def converge(role: str, host_name: str, facts: dict, vault: Vault) -> list[Step]:
    module = registry.role_module(role)
    return run_deploy(module.converge, facts, LAB, LAB.host(host_name), vault, host_name=host_name)


@pytest.mark.parametrize(("role", "host_name"), RUNS)
def test_a_converged_host_gets_no_command(role, host_name, lab_vault):
    steps = converge(role, host_name, converged(host_name, lab_vault), lab_vault)
    assert [step for step in steps if step.commands] == []


@pytest.mark.parametrize(
    ("role", "host_name", "action", "commands"),
    [
        (
            "base",
            "nj-mail",
            "sysctl-60-bulwark-net.conf",
            ("sysctl -q -p /etc/sysctl.d/60-bulwark-net.conf",),
        ),
        ("base", "nj-mail", "ssh.service-reload", ("systemctl reload-or-restart ssh.service",)),
        (
            "mailstore",
            "nj-mail",
            "dovecot.service-reload",
            ("systemctl reload-or-restart dovecot.service",),
        ),
        ("mx", "nj-mail", "postfix.service-restart", ("systemctl restart postfix.service",)),
        (
            "vpn",
            "nj-gw",
            "wg-quick@wg0.service-restart",
            ("systemctl daemon-reload", "systemctl restart wg-quick@wg0.service"),
        ),
        ("pki", "nj-web", "trust-store", ("update-ca-certificates --fresh",)),
        (
            "backup",
            "nj-backup",
            "bulwark-backup-sshd.service-restart",
            ("systemctl daemon-reload", "systemctl restart bulwark-backup-sshd.service"),
        ),
    ],
)
def test_an_action_an_interrupted_run_left_pending_is_completed(
    role, host_name, action, commands, lab_vault
):
    facts = converged(host_name, lab_vault, pending=frozenset({action}))
    steps = [step for step in converge(role, host_name, facts, lab_vault) if step.commands]
    assert steps == [
        Step(f"{role}: {action}", (*commands, f"rm -f /var/lib/bulwark/pending/{action}"))
    ]


@pytest.mark.parametrize(
    ("role", "host_name", "key", "path"),
    [
        ("mailstore", "nj-mail", "net.ipv4.tcp_syn_retries", mailstore.SYSCTL_FILE),
        ("base", "nj-web", "net.ipv4.conf.all.rp_filter", "/etc/sysctl.d/60-bulwark-net.conf"),
        ("vpn", "nj-gw", "net.ipv4.ip_forward", "/etc/sysctl.d/61-bulwark-forwarding.conf"),
    ],
)
def test_a_kernel_parameter_changed_at_runtime_is_loaded_again(
    role, host_name, key, path, lab_vault
):
    """The file is right and no run was cut short: only the live value says the kernel does
    not run it (`sysctl -w`). bulwark drift reports it; the next deploy loads the file."""
    facts = converged(host_name, lab_vault, live={key: "7"})
    steps = [step for step in converge(role, host_name, facts, lab_vault) if step.commands]
    action = f"sysctl-{path.rsplit('/', 1)[-1]}"
    assert steps == [
        Step(
            f"{role}: {action}",
            (f"sysctl -q -p {path}", f"rm -f /var/lib/bulwark/pending/{action}"),
        )
    ]


@pytest.mark.parametrize(("role", "host_name"), RUNS)
def test_a_fresh_host_gets_exactly_the_recorded_steps(role, host_name, lab_vault):
    steps = [
        [step.name, list(step.commands)] for step in converge(role, host_name, fresh(), lab_vault)
    ]
    path = FIXTURES / f"{role}@{host_name}.json"
    if os.environ.get("BULWARK_REGENERATE"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(steps, indent=2) + "\n")
    assert steps == json.loads(path.read_text())


# What a no-op run asks besides HostState: apt.update's stamp and the host's date, whether the
# host is a container (base), WireGuard's implementation (gateways), the live ruleset
# (firewall); on mail stores the replica's line in /etc/hosts (files.line).
OTHER_FACTS = ["File", "Date", "Command", "LiveRuleset"]
MAIL_STORE_FACTS = ["FindInFile"]
NO_OP_FACTS = {
    "nj-gw": ["HostState", *OTHER_FACTS, "WireGuardImplementation"],
    "nj-mail": ["HostState", *OTHER_FACTS, *MAIL_STORE_FACTS],
    "sea-mail": ["HostState", *OTHER_FACTS, *MAIL_STORE_FACTS],
    "nj-web": ["HostState", *OTHER_FACTS],
}


@pytest.mark.parametrize(("host_name", "facts"), NO_OP_FACTS.items())
def test_a_no_op_run_of_every_role_reads_the_host_state_once(host_name, facts, lab_vault):
    host = LAB.host(host_name)
    deploys = [(module.converge, (LAB, host, lab_vault)) for module in registry.host_modules(host)]
    steps, offline = run_deploys(deploys, converged(host_name, lab_vault), host_name, yes=True)
    assert [step for step in steps if step.commands] == []
    assert sorted(offline.asked) == sorted(facts)


@pytest.mark.parametrize("host_name", ["nj-mail", "nj-web"])
def test_a_closed_account_gets_no_mailbox_collection_or_tree_and_loses_nothing(
    host_name, lab_vault
):
    """At the primary, a fresh host's converge creates bob's mailboxes, collections and file
    tree while he is open, and names him in no command once he is closed: nothing is created
    for him, and nothing of his is deleted (no deploy deletes an account's data)."""
    closed = dataclasses.replace(
        LAB,
        accounts=tuple(
            dataclasses.replace(account, closed=datetime.date(2026, 11, 30))
            if account.user == "bob"
            else account
            for account in LAB.accounts
        ),
    )

    def commands(topology) -> list[str]:
        host = topology.host(host_name)
        return [
            command
            for module in registry.host_modules(host)
            for step in run_deploy(
                module.converge, fresh(), topology, host, lab_vault, host_name=host_name
            )
            for command in step.commands
        ]

    assert [command for command in commands(LAB) if "bob" in command]
    after = commands(closed)
    assert [command for command in after if "bob" in command] == []
    assert [command for command in after if "alice" in command]
    assert not [command for command in after if command.startswith(("rm -r", "rm -fr"))]
