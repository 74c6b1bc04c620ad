"""The roles' own facts and operations offline: the firewall's safe apply and its live-ruleset
check, the WireGuard implementation fact, the mail store's mailboxes. Facts in, commands out.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from offline import run_operation

from bulwark import bruteforce, operations
from bulwark.audit import SealedSecrets
from bulwark.hoststate import FileState, Found
from bulwark.inventory import load_topology
from bulwark.render import render_role_files
from roles import firewall, mailstore, vpn
from roles.firewall import RulesetState

LAB = load_topology(Path(__file__).resolve().parents[2] / "inventory/lab.py")
CANDIDATE_SHA, INSTALLED_SHA = "c" * 64, "i" * 64
LIVE, APPLIED = "l" * 64, "a" * 64


def ruleset_facts(installed: str, ruleset: RulesetState) -> dict:
    digests = {firewall.CANDIDATE: CANDIDATE_SHA, firewall.RULESET: installed}
    return {
        "HostState": lambda paths, packages, units, users=(), groups=(): Found(
            files={path: FileState("root", "root", "600", digests[path]) for path in paths}
        ),
        "LiveRuleset": ruleset,
    }


APPLY = [
    "nft -c -f /etc/bulwark/nftables.candidate",
    "mkdir -p /run/bulwark && { echo 'flush ruleset'; nft list ruleset; } > "
    "/run/bulwark/nftables.rollback",
    "systemctl stop bulwark-nft-rollback.timer bulwark-nft-rollback.service 2>/dev/null || true",
    "systemd-run --quiet --unit bulwark-nft-rollback --on-active 60 nft -f "
    "/run/bulwark/nftables.rollback",
    "nft -f /etc/bulwark/nftables.candidate",
    "call _confirm_fresh_connection",
    "call _disarm_rollback",
    "install -m 0600 /etc/bulwark/nftables.candidate /etc/nftables.conf",
    "install -d -m 0700 /var/lib/bulwark/firewall",
    f"{firewall.LIVE_DIGEST.get_raw_value()} > /var/lib/bulwark/firewall/applied.sha256",
]
SAFE_RULESET = {
    "installed-and-live-as-applied": (CANDIDATE_SHA, RulesetState(LIVE, LIVE), []),
    "a-rule-added-by-hand": (CANDIDATE_SHA, RulesetState(LIVE, APPLIED), APPLY),
    "table-flushed-by-hand": (CANDIDATE_SHA, RulesetState("e" * 64, APPLIED), APPLY),
    "never-applied-by-this-version": (CANDIDATE_SHA, RulesetState(LIVE, None), APPLY),
    "new-candidate": (INSTALLED_SHA, RulesetState(LIVE, LIVE), APPLY),
}


@pytest.mark.parametrize(
    ("installed", "ruleset", "commands"), SAFE_RULESET.values(), ids=SAFE_RULESET.keys()
)
def test_safe_ruleset_applies_on_any_difference_and_only_then(installed, ruleset, commands):
    offline = run_operation(firewall.safe_ruleset, ruleset_facts(installed, ruleset))
    assert offline.commands == commands
    assert offline.asked == ["HostState", "LiveRuleset"]


def test_the_live_ruleset_fact_reads_the_digest_and_the_recorded_one():
    command = firewall.LiveRuleset().command().get_raw_value()
    assert command == (
        "nft -s list ruleset 2>/dev/null | awk "
        "'/^\\tset / { dynamic = 0 } /^\\t\\tflags .*dynamic/ { dynamic = 1 } "
        "dynamic && /^\\t\\telements = / { skip = 1 } !skip { print } skip && /[}]$/ { skip = 0 }'"
        " | sha256sum | cut -d' ' -f1 ; cat /var/lib/bulwark/firewall/applied.sha256 2>/dev/null"
        " || true"
    )
    assert firewall.LiveRuleset().process([LIVE, APPLIED]) == RulesetState(LIVE, APPLIED)
    assert firewall.LiveRuleset().process([LIVE]) == RulesetState(LIVE, None)


LISTING = """table inet bulwark {
\tset management_v4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.1.0.0/24,
\t\t\t     10.2.0.0/24 }
\t}

\tset ssh_new_v4 {
\t\ttype ipv4_addr
\t\tsize 65535
\t\tflags dynamic,timeout
\t\ttimeout 1m
%s\t}

\tchain input {
\t\ttcp dport 22 accept
%s\t}
}
"""
METER = "\t\telements = { 10.101.0.5 timeout 1m expires 40s,\n\t\t\t     10.101.0.6 expires 9s }\n"


@pytest.mark.skipif(shutil.which("awk") is None, reason="no awk")
def test_the_digest_ignores_the_ssh_meter_but_not_a_rule_or_element_added_by_hand():
    def normalised(listing: str) -> str:
        result = subprocess.run(
            ["awk", firewall._NORMALISE], input=listing, capture_output=True, text=True, check=True
        )
        return result.stdout

    applied = normalised(LISTING % ("", ""))
    assert normalised(LISTING % (METER, "")) == applied
    assert "10.2.0.0/24" in applied
    assert normalised(LISTING % ("", "\t\ttcp dport 2222 accept\n")) != applied
    widened = LISTING.replace("10.2.0.0/24 }", "10.2.0.0/24, 0.0.0.0/0 }")
    assert normalised(widened % ("", "")) != applied


@pytest.mark.skipif(shutil.which("awk") is None, reason="no awk")
def test_the_digest_ignores_banned_addresses_so_a_ban_never_reapplies_the_ruleset():
    """The ban set as the firewall role renders it, with and without addresses the watcher
    added (bulwark.bruteforce): same digest."""
    (rendered,) = render_role_files(firewall, LAB, LAB.host("nj-mail"), SealedSecrets(), False)
    declared = rendered.content.split(f"\tset {bruteforce.BAN_SET} {{\n", 1)[1]
    declared = declared.split("\t}", 1)[0]
    listing = f"table inet bulwark {{\n\tset {bruteforce.BAN_SET} {{\n{declared}%s\t}}\n}}\n"
    banned = (
        "\t\telements = { 198.51.100.200 timeout 30m expires 29m58s,\n"
        "\t\t\t     203.0.113.9 timeout 30m expires 3m }\n"
    )
    result = [
        subprocess.run(
            ["awk", firewall._NORMALISE], input=text, capture_output=True, text=True, check=True
        ).stdout
        for text in (listing % "", listing % banned)
    ]
    assert result[0] == result[1]
    assert "flags dynamic,timeout" in result[0]


@pytest.mark.parametrize(
    ("output", "value"), [(["kernel"], "kernel"), (["userspace\n"], "userspace")]
)
def test_the_wireguard_implementation_fact(output, value):
    fact = vpn.WireGuardImplementation()
    assert fact.command() == (
        "if [ -d /sys/module/wireguard ] || modprobe -q wireguard 2>/dev/null; "
        "then echo kernel; else echo userspace; fi"
    )
    assert fact.process(output) == value


ALICE, BOB = "alice@example.net", "bob@example.net"
MAILBOXES = {
    "/var/vmail/example.net/alice/Maildir/dovecot-uidlist": (ALICE, "INBOX"),
    "/var/vmail/example.net/alice/Maildir/.Sent": (ALICE, "Sent"),
    "/var/vmail/example.net/alice/Maildir/.Trash": (ALICE, "Trash"),
    "/var/vmail/example.net/bob/Maildir/.Sent": (BOB, "Sent"),
}
MAILBOXES_CREATED = {
    "all-there": ((), []),
    "one-account-new": (
        tuple(path for path, (address, _) in MAILBOXES.items() if address == ALICE),
        [
            f"doveadm mailbox status -u {ALICE} guid INBOX",
            f"doveadm mailbox create -s -u {ALICE} Sent Trash",
        ],
    ),
    "one-mailbox-each-missing": (
        (
            "/var/vmail/example.net/alice/Maildir/.Trash",
            "/var/vmail/example.net/bob/Maildir/.Sent",
        ),
        [f"doveadm mailbox create -s -u {ALICE} Trash", f"doveadm mailbox create -s -u {BOB} Sent"],
    ),
}


@pytest.mark.parametrize(
    ("missing", "commands"), MAILBOXES_CREATED.values(), ids=MAILBOXES_CREATED.keys()
)
def test_only_the_mailboxes_not_on_disk_are_created_in_one_look_at_the_disk(missing, commands):
    there = FileState("vmail", "vmail", "700", directory=True)
    facts = {
        "HostState": lambda paths, packages, units, users=(), groups=(): Found(
            files={path: None if path in missing else there for path in paths}
        )
    }
    offline = run_operation(mailstore.mailboxes_created, facts, wanted=MAILBOXES)
    assert offline.commands == commands
    assert offline.asked == ["HostState"]
    assert bool(offline.noops) == (commands == [])


MASKED_UNIT = {
    # what /etc/systemd/system/apache2.service is -> the commands
    "masked-already": (FileState("root", "root", "777"), []),
    "nothing-there": (
        None,
        ["mkdir -p /etc/systemd/system", "ln -s /dev/null /etc/systemd/system/apache2.service"],
    ),
}


@pytest.mark.parametrize(("found", "commands"), MASKED_UNIT.values(), ids=MASKED_UNIT.keys())
def test_a_masked_unit_is_read_with_the_host_state_and_linked_only_when_it_is_not(found, commands):
    """A link to /dev/null reads as neither a file nor a directory (hoststate follows no
    link): masked, nothing to do, and no fact asked but the host's state."""
    facts = {
        "HostState": lambda paths, packages, units, users=(), groups=(): Found(
            files=dict.fromkeys(paths, found)
        ),
        "Link": None,
    }
    offline = run_operation(operations.unit_masked, facts, unit="apache2.service")
    assert offline.commands == commands
    assert offline.asked[0] == "HostState"
    assert (offline.asked == ["HostState"]) == (commands == [])  # pyinfra's link asks its own


REPLICATOR_STATUS = [
    "username\tpriority\tfast sync\tfull sync\tsuccess sync\tfailed",
    "alice@example.net\tnone\t00:00:05\t01:00:00\t00:00:05\t-",
    "bob@example.net\tlow\t02:00:00\t03:00:00\t02:00:00\ty",
]
FORGETTING = {
    # closed accounts, what the replicator holds -> the commands, the facts asked
    "bob-held": (
        ("bob@example.net",),
        REPLICATOR_STATUS,
        ["doveadm replicator remove bob@example.net"],
        ["ReplicatedUsers"],
    ),
    "bob-gone": (("bob@example.net",), REPLICATOR_STATUS[:2], [], ["ReplicatedUsers"]),
    "dovecot-down": (("bob@example.net",), [], [], ["ReplicatedUsers"]),
    "none-closed": ((), REPLICATOR_STATUS, [], []),
}


@pytest.mark.parametrize(
    ("addresses", "status", "commands", "asked"), FORGETTING.values(), ids=FORGETTING.keys()
)
def test_the_replicator_forgets_a_closed_account_it_still_syncs_and_only_that(
    addresses, status, commands, asked
):
    """A closed account the replicator still holds is removed from it (else its sync fails at
    every retry); nothing else is, and with no closed account the replicator is not asked."""
    facts = {"ReplicatedUsers": mailstore.ReplicatedUsers().process(status)}
    offline = run_operation(mailstore.replication_forgets, facts, addresses=addresses)
    assert offline.commands == commands
    assert offline.asked == asked
    assert bool(offline.noops) == (commands == [])


WHO = [
    "username\t#\tproto\t(pids)\t(ips)",
    "alice@example.net\t2\timap\t(101 102)\t(198.51.100.200)",
    "bob@example.net\t1\timap\t(103)\t(198.51.100.200)",
]
KICKING = {
    # closed accounts, who has a session -> the commands, the facts asked
    "bob-connected": (
        ("bob@example.net",),
        WHO,
        ["doveadm kick bob@example.net"],
        ["SessionUsers"],
    ),
    "bob-not-connected": (("bob@example.net",), WHO[:2], [], ["SessionUsers"]),
    "dovecot-down": (("bob@example.net",), [], [], ["SessionUsers"]),
    "none-closed": ((), WHO, [], []),
}


@pytest.mark.parametrize(
    ("addresses", "who", "commands", "asked"), KICKING.values(), ids=KICKING.keys()
)
def test_a_closed_accounts_open_sessions_are_ended_and_no_one_elses(
    addresses, who, commands, asked
):
    facts = {"SessionUsers": mailstore.SessionUsers().process(who)}
    offline = run_operation(mailstore.sessions_ended, facts, addresses=addresses)
    assert offline.commands == commands
    assert offline.asked == asked
    assert bool(offline.noops) == (commands == [])
