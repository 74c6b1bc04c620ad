"""The brute-force watcher (bulwark/banwatch.py) and where bulwark.bruteforce installs it: real
Dovecot 2.3 and Postfix 3.7 log lines in, bans out; the window, the threshold, and the networks
that are never banned."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bulwark import banwatch, bruteforce, exposure, mail
from bulwark.audit import SealedSecrets
from bulwark.banwatch import Failure, SlapdConnections, Window, parse
from bulwark.exposure import management_sources, site_lans
from bulwark.inventory import load_topology
from bulwark.render import render_host_configs

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")
ATTACKER = ipaddress.IPv4Address("198.51.100.200")
WINDOW = bruteforce.WINDOW_MINUTES * 60

# Lines as Dovecot 2.3.19 and Postfix 3.7 write them (src/login-common/client-common.c,
# smtpd_sasl_glue.c), with the number of failed logins each reports.
FAILURES = [
    (
        "imap-login: Disconnected: Aborted login by logging out"
        " (auth failed, 1 attempts in 2 secs): user=<alice@example.net>, method=PLAIN,"
        " rip=198.51.100.200, lip=198.51.100.11, TLS, session=<3vF0Qm4Xkq3GZWTI>",
        1,
    ),
    (
        "pop3-login: Disconnected: Connection closed (auth failed, 3 attempts in 14 secs):"
        " user=<bob@example.net>, method=PLAIN, rip=198.51.100.200, lip=198.51.100.11, TLS,"
        " session=<kq3GZWTIxF0>",
        3,
    ),
    (
        "imap-login: Disconnected: Inactivity (auth failed, 2 attempts in 180 secs): user=<>,"
        " method=PLAIN, rip=198.51.100.200, lip=198.51.100.11, TLS, session=<x>",
        2,
    ),
    (
        "warning: unknown[198.51.100.200]: SASL PLAIN authentication failed: UGFzc3dvcmQ6",
        1,
    ),
    (
        "warning: client.example.org[198.51.100.200]: SASL LOGIN authentication failed:"
        " authentication failure",
        1,
    ),
    ("login failed: rip=198.51.100.200 realm=caldav user='alice@example.net'", 1),
]
NOT_FAILURES = [
    "imap-login: Login: user=<alice@example.net>, method=PLAIN, rip=198.51.100.200,"
    " lip=198.51.100.11, mpid=4242, TLS, session=<abc>",
    "imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): user=<>,"
    " rip=198.51.100.200, lip=198.51.100.11, TLS, session=<abc>",
    "pop3-login: Disconnected: Connection closed (tried to use disallowed plaintext auth):"
    " user=<>, rip=198.51.100.200, lip=198.51.100.11, session=<abc>",
    "connect from unknown[198.51.100.200]",
    "warning: hostname example.org does not resolve to address 198.51.100.200",
    "lmtp(alice@example.net)<123><abc>: msgid=<x@example.org>: saved mail to INBOX",
    # bulwark-webauth without the client's address (nginx sent no X-Real-IP): nobody to ban.
    "login failed: rip=- realm=carddav user='alice@example.net'",
    "",
]


@pytest.mark.parametrize(("line", "count"), FAILURES, ids=lambda value: str(value)[:30])
def test_failed_logins_are_read_with_their_address_and_count(line, count):
    assert parse(line) == Failure(ATTACKER, count)


@pytest.mark.parametrize("line", NOT_FAILURES, ids=lambda value: value[:30] or "empty")
def test_other_lines_are_not_failures(line):
    assert parse(line) is None


def test_a_user_name_cannot_choose_whom_to_ban():
    """The user name comes before Dovecot's rip=: a forged `rip=` inside it is ignored."""
    line = (
        "imap-login: Disconnected: Connection closed (auth failed, 1 attempts in 2 secs):"
        " user=<x, method=PLAIN, rip=10.0.0.1, lip=10.0.0.2, y>, method=PLAIN,"
        " rip=198.51.100.200, lip=198.51.100.11, TLS, session=<abc>"
    )
    assert parse(line) == Failure(ATTACKER, 1)
    assert (
        parse("imap-login: user=<(auth failed, 9 attempts in 1 secs): user=<, rip=1.2.3.4, lip=")
        is None
    )


def test_a_web_login_cannot_choose_whom_to_ban():
    """bulwark-webauth writes the client's login last: a `rip=` inside it is never read."""
    forged = "x rip=6.6.6.6 realm=caldav\nlogin failed: rip=6.6.6.6 realm=caldav user=y"
    line = f"login failed: rip=198.51.100.200 realm=caldav user={forged!r}"
    assert parse(line) == Failure(ATTACKER, 1)
    assert parse(f"login failed: rip=- realm=caldav user={forged!r}") is None


# slapd 2.5 (loglevel stats), as the lab's journal shows it: the address on ACCEPT, the failed
# bind (tag 97, err 49) later on the same connection, the bind's DN on a line of its own.
SLAPD_SESSION = (
    "conn=1005 fd=15 ACCEPT from IP=198.51.100.200:45678 (IP=198.51.100.12:636)",
    "conn=1005 fd=15 TLS established tls_ssf=256 ssf=256 tls_proto=TLS1.3 tls_cipher=AES-256-GCM",
    'conn=1005 op=0 BIND dn="cn=x conn=1005 fd=15 ACCEPT from IP=6.6.6.6:1 ,dc=User" method=128',
    "conn=1005 op=0 RESULT tag=97 err=49 qtime=0.000011 etime=0.290125 text=",
)


def test_a_failed_ldap_bind_is_charged_to_the_connections_address():
    slapd = SlapdConnections()
    found = [slapd.failure(line) for line in SLAPD_SESSION]
    assert found == [None, None, None, Failure(ATTACKER, 1)]
    # The stateless parser knows none of these lines.
    assert [parse(line) for line in SLAPD_SESSION] == [None] * 4


def test_a_successful_bind_a_search_and_a_closed_connection_charge_nothing():
    slapd = SlapdConnections()
    slapd.failure(SLAPD_SESSION[0])
    assert slapd.failure("conn=1005 op=0 RESULT tag=97 err=0 qtime=0.1 etime=0.3 text=") is None
    assert slapd.failure("conn=1005 op=1 RESULT tag=101 err=49 qtime=0.1 etime=0.3 text=") is None
    assert slapd.failure("conn=1005 fd=15 closed (connection lost)") is None
    assert slapd.failure(SLAPD_SESSION[-1]) is None  # the connection is gone: no address
    # ldapi connections have a path, never an address to ban.
    slapd.failure("conn=7 fd=9 ACCEPT from PATH=/run/bulwark-slapd/ldapi (PATH=/run/x)")
    assert slapd.failure("conn=7 op=0 RESULT tag=97 err=49 qtime=0 etime=0 text=") is None


def _window(exempt=()) -> Window:
    return Window(bruteforce.MAX_FAILURES, WINDOW, exempt)


def test_the_threshold_bans_within_the_window_and_only_at_the_threshold():
    window = _window()
    one = Failure(ATTACKER, 1)
    results = [window.record(one, now=float(second)) for second in range(bruteforce.MAX_FAILURES)]
    assert results == [False] * (bruteforce.MAX_FAILURES - 1) + [True]
    # Counting starts again after a ban: one more failure does not ban again at once.
    assert window.record(one, now=float(bruteforce.MAX_FAILURES)) is False


def test_failures_older_than_the_window_no_longer_count():
    window = _window()
    one = Failure(ATTACKER, 1)
    spaced = WINDOW / (bruteforce.MAX_FAILURES - 1) + 1  # the first has left when the last comes
    assert not any(window.record(one, now=i * spaced) for i in range(bruteforce.MAX_FAILURES))


def test_one_line_reporting_several_attempts_counts_them_all():
    window = _window()
    assert window.record(Failure(ATTACKER, bruteforce.MAX_FAILURES - 1), now=0.0) is False
    assert window.record(Failure(ATTACKER, 1), now=1.0) is True


def test_addresses_are_counted_apart():
    window = _window()
    other = ipaddress.IPv4Address("198.51.100.201")
    for second in range(bruteforce.MAX_FAILURES - 1):
        window.record(Failure(ATTACKER, 1), now=float(second))
    assert window.record(Failure(other, 1), now=20.0) is False
    assert window.record(Failure(ATTACKER, 1), now=21.0) is True


@pytest.mark.parametrize("topology", [LAB, PRODUCTION], ids=["lab", "production"])
def test_management_admin_and_site_lan_addresses_are_never_banned(topology):
    exempt = [ipaddress.IPv4Network(network) for network in exposure.exempt_networks(topology)]
    assert set(exempt) == {*management_sources(topology), *site_lans(topology)}
    assert set(topology.admin_networks) <= set(exempt)
    window = _window(exempt)
    never = [
        ipaddress.IPv4Address("127.0.0.1"),
        *(host.lan_address for host in topology.hosts),
        *(host.management_address for host in topology.hosts),
        *(network.network_address + 1 for network in topology.admin_networks),
    ]
    for address in never:
        burst = Failure(address, bruteforce.MAX_FAILURES * 10)
        assert window.record(burst, now=0.0) is False, address
    assert window.record(Failure(ATTACKER, bruteforce.MAX_FAILURES), now=0.0) is True


def test_the_ban_is_one_nft_element_with_a_timeout_and_no_shell():
    assert banwatch.ban_command("bulwark", "banned_v4", ATTACKER, 30) == [
        "nft", "add", "element", "inet", "bulwark", "banned_v4",
        "{", "198.51.100.200", "timeout", "30m", "}",
    ]  # fmt: skip


def test_the_journal_is_followed_by_trusted_unit_only_from_now_on():
    command = banwatch.journal_command(["dovecot.service", "postfix@-.service"])
    assert command[:4] == ["journalctl", "--follow", "--lines=0", "--output=json"]
    assert command[4:] == ["_SYSTEMD_UNIT=dovecot.service", "_SYSTEMD_UNIT=postfix@-.service"]


def test_journal_messages_are_read_as_text_or_bytes_and_junk_is_skipped():
    text = FAILURES[3][0]
    lines = [
        json.dumps({"MESSAGE": text, "_SYSTEMD_UNIT": "postfix@-.service"}),
        json.dumps({"MESSAGE": list(text.encode())}),
        "not json",
        json.dumps(["a list"]),
        json.dumps({"MESSAGE": None}),
    ]
    assert list(banwatch.messages(lines)) == [text, text]


def test_the_watcher_runs_with_the_standard_library_alone(tmp_path):
    """It is installed as a script on hosts that have no bulwark: nothing else may be imported."""
    script = tmp_path / "bulwark-banwatch"
    script.write_text(bruteforce.SOURCE.read_text())
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "--failures" in result.stdout


# --- where and how bulwark.bruteforce installs it -------------------------------------------------


@pytest.mark.parametrize(
    ("topology", "host_name", "writer", "units"),
    [
        (LAB, "nj-mail", "mx", [mail.POSTFIX_INSTANCE, mail.DOVECOT_UNIT]),
        (PRODUCTION, "nj-mx", "mx", [mail.POSTFIX_INSTANCE]),
        (PRODUCTION, "sea-store", "mailstore", [mail.DOVECOT_UNIT]),
    ],
)
def test_each_host_with_logins_gets_one_watcher_following_its_daemons(
    topology, host_name, writer, units
):
    files = {
        item.path: item
        for item in render_host_configs(topology, topology.host(host_name), SealedSecrets())
    }
    script, unit = files[bruteforce.SCRIPT], files[bruteforce.UNIT_FILE]
    assert (script.role, unit.role, script.mode) == (writer, writer, "0755")
    assert script.content.startswith("#!/usr/bin/python3\n")
    assert bruteforce.SOURCE.read_text() in script.content
    (exec_start,) = [line for line in unit.content.splitlines() if line.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[0] == bruteforce.SCRIPT
    options = banwatch._arguments(argv[1:])
    assert (options.failures, options.window, options.ban_minutes) == (
        bruteforce.MAX_FAILURES,
        bruteforce.WINDOW_MINUTES * 60,
        bruteforce.BAN_MINUTES,
    )
    assert (options.table, options.set_name, options.unit) == ("bulwark", "banned_v4", units)
    assert [str(network) for network in options.exempt] == list(exposure.exempt_networks(topology))
    assert "\nRestart=always\n" in unit.content


@pytest.mark.parametrize("host_name", ["nj-gw", "sea-backup"])
def test_hosts_without_logins_get_no_watcher(host_name):
    topology = PRODUCTION if host_name == "sea-backup" else LAB
    paths = {
        item.path
        for item in render_host_configs(topology, topology.host(host_name), SealedSecrets())
    }
    assert bruteforce.SCRIPT not in paths and bruteforce.UNIT_FILE not in paths


@pytest.mark.usefixtures("every_role_deployed")
def test_every_role_with_logins_names_the_units_reporting_its_failures():
    """A role gaining a module for logins (dav, files, directory) must add its row first."""
    from bulwark import registry

    with_logins = {role.name for role in registry.ROLES if any(s.logins for s in role.services)}
    assert with_logins == {"mx", "mailstore", "dav", "files", "directory"}
    implemented = {name for name in with_logins if registry.role(name).module is not None}
    assert implemented <= set(bruteforce.WATCHED_UNITS)


def test_a_ban_is_listed_with_its_end_and_ended_bans_are_dropped(tmp_path):
    """The list Dovecot's passdb reads: one line per address in force, its end in epoch
    seconds; a repeated ban moves the end, an ended one disappears at the next write."""
    listing = tmp_path / "banned"
    first, second = ipaddress.IPv4Address("198.51.100.200"), ipaddress.IPv4Address("203.0.113.9")
    banwatch.record_ban(str(listing), first, 30, now=1000.0)
    assert listing.read_text() == "198.51.100.200 2800\n"
    assert listing.stat().st_mode & 0o777 == 0o644
    banwatch.record_ban(str(listing), second, 30, now=2000.0)
    assert listing.read_text() == "198.51.100.200 2800\n203.0.113.9 3800\n"
    banwatch.record_ban(str(listing), second, 30, now=3000.0)  # the first has ended
    assert listing.read_text() == "203.0.113.9 4800\n"
    assert not (tmp_path / "banned.new").exists()
