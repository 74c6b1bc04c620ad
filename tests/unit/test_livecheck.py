"""The check kinds of `bulwark status` and `bulwark drift` (bulwark.probes), table-driven: canned
outputs of each read-only command in, verdicts and figures (or differences) out.

The outputs are what the commands print on Debian 12 (iproute2 6.1, systemd 252, Dovecot
2.3.19, wireguard-tools 1.0.20210914, OpenSSL 3.0, apt 2.6)."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bulwark.hoststate import PENDING_DIR
from bulwark.inventory import load_topology
from bulwark.livecheck import (
    Finding,
    HostContext,
    Reading,
    Verdict,
    host_script,
    limits,
    merged,
    prelude,
    split_output,
)
from bulwark.probes import (
    Certificate,
    Clock,
    Directories,
    Directory,
    Disk,
    Handshakes,
    Listening,
    MailReplication,
    ManagedFiles,
    Refresh,
    Replica,
    SecurityUpdates,
    Sysctl,
    Unit,
    Units,
    WriteSwitch,
    duration,
    parse_replicator,
    parse_ss,
    pending_script,
    sysctl_settings,
)
from bulwark.render import RenderedFile
from roles.firewall import APPLIED_DIGEST, CANDIDATE, RULESET, LiveRulesetCheck

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
NOW = 1_800_000_000.0
DAY = 86400


def reading(text: str, rc: int | None = 0) -> Reading:
    return Reading(tuple(text.strip("\n").splitlines()), rc)


def context(host: str = "nj-mail", container: bool = True, **changes) -> HostContext:
    base = HostContext(LAB, LAB.host(host), NOW, container, NOW - 0.4, NOW + 0.3, limits())
    return replace(base, **changes)


def verdicts(findings: list[Finding]) -> dict[str, str]:
    return {finding.check: finding.verdict.name for finding in findings}


def rendered(path: str, content: str, mode: str = "0644", secret: bool = False) -> RenderedFile:
    return RenderedFile("nj-mail", "base", path, content, mode, "root", "root", None, secret)


# --- the script and its sections -----------------------------------------------------------------


def test_a_host_script_runs_each_part_in_its_own_section_under_sh():
    script = host_script(["echo one; echo two", None, "echo oops >&2; exit 3", "cat"])
    result = subprocess.run(
        ["sh", "-s"], input=script.text, capture_output=True, text=True, timeout=30, check=True
    )
    readings = split_output(result.stdout, script.marker)
    assert script.sections == ("now", "virt", "0", "2", "3", "end")
    assert readings["0"] == Reading(("one", "two"), 0)
    assert readings["2"] == Reading(("oops",), 3)  # stderr kept, in order, with the status
    assert readings["3"] == Reading((), 0)  # stdin is closed: a part never eats the script
    now, _ = prelude(readings)
    assert now is not None and abs(now - __import__("time").time()) < 60


def test_output_cut_short_leaves_the_open_section_without_status_and_no_forged_frame():
    script = host_script(["echo a", "echo b"], marker="@@m")
    output = "@@m begin now\n1\n@@m end now 0\n@@m begin 0\n@@x end 0 0\nhalf"
    readings = split_output(output, "@@m")
    assert readings["0"] == Reading(("@@x end 0 0", "half"), None)
    assert "1" not in readings and script.marker == "@@m"


@pytest.mark.parametrize(
    ("virt", "container"), [("none", False), ("systemd-nspawn", True), ("", False)]
)
def test_prelude_reads_the_clock_and_the_container(virt, container):
    readings = {"now": reading("1800000000.25"), "virt": reading(virt)}
    assert prelude(readings) == (1800000000.25, container)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5 s"),
        (119, "119 s"),
        (200, "3 min 20 s"),
        (600, "10 min"),
        (7260, "2 h 1 min"),
        (3 * DAY, "3 d"),
    ],
)
def test_durations_read_as_an_operator_reads_them(seconds, text):
    assert duration(seconds) == text


def test_thresholds_are_overridden_by_name_and_a_typo_is_named():
    assert limits(["disk-warn=50.5"])["disk-warn"] == 50.5
    with pytest.raises(Exception, match="did you mean 'disk-warn'"):
        limits(["disk-wran=50"])
    with pytest.raises(Exception, match="not a number"):
        limits(["disk-warn=lots"])


# --- units -------------------------------------------------------------------------------------

SYSTEMCTL_SHOW = """
Id=dovecot.service
LoadState=loaded
ActiveState=active
SubState=running
UnitFileState=enabled

Id=bulwark-replication-retry.timer
LoadState=loaded
ActiveState=active
SubState=waiting
UnitFileState=enabled

Id=postfix@-.service
LoadState=loaded
ActiveState=active
SubState=running
UnitFileState=disabled

Id=bulwark-replica-dav.service
LoadState=loaded
ActiveState=inactive
SubState=dead
UnitFileState=disabled
"""


@pytest.mark.parametrize(
    ("unit", "verdict", "figure"),
    [
        (Unit("dovecot.service"), "OK", "active (running), enabled"),
        (Unit("bulwark-replication-retry.timer"), "OK", "active (waiting), enabled"),
        (Unit("postfix@-.service", enabled=None), "OK", "active (running), disabled"),
        (Unit("postfix@-.service"), "WARN", "want enabled at boot"),
        (Unit("bulwark-replica-dav.service", False, False), "OK", "inactive (dead)"),
        (Unit("bulwark-replica-dav.service"), "FAIL", "want running"),
        (Unit("missing.service"), "FAIL", "no such unit"),
    ],
)
def test_units_are_judged_as_the_roles_keep_them(unit, verdict, figure):
    (finding,) = Units((unit,)).status(reading(SYSTEMCTL_SHOW), context())
    assert (finding.check, finding.verdict.name) == (f"unit {unit.name}", verdict)
    assert figure in finding.figure


def test_a_stopped_unit_is_drift_and_so_is_a_disabled_one():
    units = Units((Unit("dovecot.service"), Unit("postfix@-.service"), Unit("gone.service")))
    stopped = SYSTEMCTL_SHOW.replace(
        "SubState=running\nUnitFileState=enabled", "SubState=dead\nUnitFileState=enabled", 1
    )
    found = {
        (d.subject, d.detail.rsplit("; ", 1)[1]) for d in units.drift(reading(stopped), context())
    }
    assert found == {
        ("unit dovecot.service", "the roles want it running"),
        ("unit postfix@-.service", "the roles want it enabled at boot"),
        ("unit gone.service", "the roles want it running"),
        ("unit gone.service", "the roles want it enabled at boot"),
    }


def test_units_of_several_roles_are_read_in_one_command_and_must_agree():
    (one,) = merged(
        [Units((Unit("a"), Unit("b", enabled=None))), Units((Unit("b"),)), Disk(("/",))]
    )[:1]
    assert one == Units((Unit("a"), Unit("b")))
    with pytest.raises(ValueError, match="disagree"):
        merged([Units((Unit("a"),)), Units((Unit("a", running=False),))])


# --- sockets -----------------------------------------------------------------------------------

# nj-mail: Postfix and Dovecot on every address (their public services), LMTP and doveadm on
# the LAN address only, sshd everywhere, a resolver on loopback.
SS_MAIL = """
tcp   LISTEN 0      100          0.0.0.0:25          0.0.0.0:*    users:(("master",pid=501,fd=13))
tcp   LISTEN 0      100          0.0.0.0:465         0.0.0.0:*    users:(("master",pid=501,fd=17))
tcp   LISTEN 0      100          0.0.0.0:587         0.0.0.0:*    users:(("master",pid=501,fd=21))
tcp   LISTEN 0      100             [::]:25             [::]:*    users:(("master",pid=501,fd=14))
tcp   LISTEN 0      100          0.0.0.0:993         0.0.0.0:*    users:(("dovecot",pid=410,fd=38))
tcp   LISTEN 0      100          0.0.0.0:995         0.0.0.0:*    users:(("dovecot",pid=410,fd=40))
tcp   LISTEN 0      100       10.81.1.11:24          0.0.0.0:*    users:(("dovecot",pid=410,fd=42))
tcp   LISTEN 0      100       10.81.1.11:12345       0.0.0.0:*    users:(("dovecot",pid=410,fd=44))
tcp   LISTEN 0      100       10.81.1.11:10993       0.0.0.0:*    users:(("dovecot",pid=410,fd=46))
tcp   LISTEN 0      100       10.81.1.11:10995       0.0.0.0:*    users:(("dovecot",pid=410,fd=48))
tcp   LISTEN 0      100       10.81.1.11:10465       0.0.0.0:*    users:(("master",pid=501,fd=25))
tcp   LISTEN 0      128        127.0.0.1:11332       0.0.0.0:*    users:(("rspamd",pid=530,fd=9))
tcp   LISTEN 0      128          0.0.0.0:22          0.0.0.0:*    users:(("sshd",pid=120,fd=3))
tcp   LISTEN 0      128             [::]:22             [::]:*    users:(("sshd",pid=120,fd=4))
udp   UNCONN 0      0      127.0.0.53%lo:53          0.0.0.0:*    users:(("resolved",pid=90,fd=12))
"""


def listening(host: str = "nj-mail") -> Listening:
    return Listening.for_host(LAB, LAB.host(host))


def test_ss_lines_are_read_with_address_port_and_process():
    sockets = parse_ss(SS_MAIL.splitlines())
    assert str(sockets[3]) == "[::]:25/tcp (master)"
    assert str(sockets[-1]) == "127.0.0.53:53/udp (resolved)" and sockets[-1].loopback


def test_a_converged_mail_host_listens_exactly_where_the_catalogue_says():
    findings = listening().status(reading(SS_MAIL), context())
    assert set(verdicts(findings).values()) == {"OK"}
    figures = {finding.check: finding.figure for finding in findings}
    assert figures["port lmtp"] == "10.81.1.11:24/tcp (dovecot)"
    assert figures["port smtp"] == "0.0.0.0:25/tcp (master), [::]:25/tcp (master)"
    assert figures["port spam-filter"] == "127.0.0.1:11332/tcp (rspamd)"
    assert figures["public sockets"] == "only the catalogue's services"
    assert listening().drift(reading(SS_MAIL), context()) == []


@pytest.mark.parametrize(
    ("change", "check", "figure"),
    [
        (  # Dovecot stopped: its four services are gone
            lambda text: "\n".join(line for line in text.splitlines() if "dovecot" not in line),
            "port imaps",
            "993/tcp not listening (want 198.51.100.11 or every address)",
        ),
        (  # LMTP on every address: reachable beyond the MX hosts but for the firewall
            lambda text: text.replace("10.81.1.11:24 ", "0.0.0.0:24 "),
            "port lmtp",
            "0.0.0.0:24/tcp (dovecot) listening, want 10.81.1.11",
        ),
        (  # something else on the public address
            lambda text: (
                text
                + 'tcp LISTEN 0 5 198.51.100.11:8080 0.0.0.0:* users:(("python3",pid=9,fd=3))\n'
            ),
            "public sockets",
            "not in the catalogue: 198.51.100.11:8080/tcp (python3)",
        ),
        (  # plaintext IMAP, even on the LAN only
            lambda text: (
                text + 'tcp LISTEN 0 5 10.81.1.11:143 0.0.0.0:* users:(("dovecot",pid=9,fd=3))\n'
            ),
            "public sockets",
            "not in the catalogue: 10.81.1.11:143/tcp (dovecot)",
        ),
    ],
)
def test_sockets_out_of_place_fail_with_what_listens(change, check, figure):
    findings = {f.check: f for f in listening().status(reading(change(SS_MAIL)), context())}
    assert findings[check].verdict is Verdict.FAIL
    assert figure in findings[check].figure
    assert listening().drift(reading(change(SS_MAIL)), context())


def test_loopback_only_services_never_count_as_public():
    extra = SS_MAIL + 'tcp LISTEN 0 5 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=9,fd=3))\n'
    assert set(verdicts(listening().status(reading(extra), context())).values()) == {"OK"}


SS_GATEWAY = """
udp UNCONN 0 0 0.0.0.0:51820 0.0.0.0:* users:(("wireguard-go",pid=312,fd=7))
udp UNCONN 0 0    [::]:51820    [::]:* users:(("wireguard-go",pid=312,fd=8))
tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=120,fd=3))
tcp LISTEN 0 511 198.51.100.13:993 0.0.0.0:* users:(("nginx",pid=700,fd=6))
tcp LISTEN 0 511 198.51.100.14:995 0.0.0.0:* users:(("nginx",pid=700,fd=7))
tcp LISTEN 0 511 198.51.100.15:465 0.0.0.0:* users:(("nginx",pid=700,fd=8))
"""


def test_a_gateway_listens_for_wireguard_on_every_address_and_each_proxy_on_its_own():
    findings = listening("nj-gw").status(reading(SS_GATEWAY), context("nj-gw"))
    assert verdicts(findings) == {
        "port ssh": "OK",
        "port wireguard": "OK",
        "port imaps-proxy": "OK",
        "port pops-proxy": "OK",
        "port smtps-proxy": "OK",
        "public sockets": "OK",
    }


@pytest.mark.parametrize(
    ("change", "check", "figure"),
    [
        (  # a proxy on the gateway's own address instead of its own
            lambda text: text.replace("198.51.100.13:993", "198.51.100.10:993"),
            "port imaps-proxy",
            "993/tcp not listening (want 198.51.100.13); "
            "198.51.100.10:993/tcp (nginx) listening, want 198.51.100.13",
        ),
        (  # something else on a proxy address
            lambda text: text + 'tcp LISTEN 0 5 198.51.100.14:8443 0.0.0.0:* users:(("x",pid=9))\n',
            "public sockets",
            "not in the catalogue: 198.51.100.14:8443/tcp (x)",
        ),
    ],
)
def test_a_proxy_off_its_address_or_a_stranger_on_one_fails(change, check, figure):
    findings = listening("nj-gw").status(reading(change(SS_GATEWAY)), context("nj-gw"))
    assert {f.check: f.figure for f in findings if f.verdict is Verdict.FAIL} == {check: figure}


# --- disks -------------------------------------------------------------------------------------

DF = """
path /
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         263174212 27262976  80740352      26% /
Filesystem       Inodes  IUsed    IFree IUse% Mounted on
/dev/vda       16777216 513857 16263359    4% /
path /var/vmail
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/mapper/mail  10000000  8500000   1500000      85% /var/vmail
Filesystem       Inodes  IUsed    IFree IUse% Mounted on
/dev/mapper/mail   655360  20000   635360    4% /var/vmail
path /var/log
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         263174212 27262976  80740352      26% /
Filesystem       Inodes  IUsed    IFree IUse% Mounted on
/dev/vda       16777216 513857 16263359    4% /
"""


def test_disk_use_is_one_line_per_filesystem_naming_the_paths_it_holds():
    findings = Disk(("/", "/var/vmail", "/var/log")).status(reading(DF), context())
    by_check = {finding.check: finding for finding in findings}
    assert by_check["disk /"].verdict is Verdict.OK
    assert by_check["disk /"].figure == (
        "25.2 % used, 77.0 GiB free; inodes 3.1 % used (holds /, /var/log)"
    )
    assert by_check["disk /var/vmail"].verdict is Verdict.WARN
    assert by_check["disk /var/vmail"].value == 85.0


@pytest.mark.parametrize(
    ("used", "inodes", "verdict"),
    [(79, 10, "OK"), (80, 10, "WARN"), (95, 10, "FAIL"), (10, 96, "FAIL"), (10, 81, "WARN")],
)
def test_disk_and_inode_thresholds(used, inodes, verdict):
    df = (
        "path /srv\nFilesystem 1024-blocks Used Available Capacity Mounted on\n"
        f"/dev/x 100 {used} {100 - used} {used}% /srv\n"
        f"Filesystem Inodes IUsed IFree IUse% Mounted on\n/dev/x 100 {inodes} {100 - inodes} x /srv"
    )
    (finding,) = Disk(("/srv",)).status(reading(df), context())
    assert finding.verdict.name == verdict


def test_a_missing_data_path_fails_with_dfs_words():
    df = "path /srv\ndf: /srv: No such file or directory\ndf: /srv: No such file or directory"
    (finding,) = Disk(("/srv",)).status(reading(df, 1), context())
    assert finding.verdict is Verdict.FAIL and "No such file" in finding.figure


def test_a_threshold_override_moves_the_verdict():
    (finding, _) = Disk(("/", "/var/vmail")).status(
        reading(DF), context(limits=limits(["disk-warn=25"]))
    )
    assert finding.verdict is Verdict.WARN


# --- certificates ------------------------------------------------------------------------------


def certificate(days: float) -> str:
    """A PEM certificate ending `days` after NOW, then a second one (a chain: leaf first)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nj-mail.example.net")])
    end = datetime.fromtimestamp(NOW + days * DAY, UTC)
    pems = []
    for not_after in (end, end + timedelta(days=3000)):
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(not_after - timedelta(days=4000))
            .not_valid_after(not_after)
            .sign(key, hashes.SHA256())
        )
        pems.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(pems)


@pytest.mark.parametrize(
    ("days", "verdict", "figure"),
    [(396.5, "OK", "396 days left"), (20, "WARN", "20 days left"), (3, "FAIL", "3 days left"),
     (-2, "FAIL", "expired 2 days ago")],
)  # fmt: skip
def test_certificate_days_left_are_the_leafs(days, verdict, figure):
    (finding,) = Certificate("/etc/ssl/bulwark/host.crt", "host").status(
        reading(certificate(days)), context()
    )
    assert (finding.verdict.name, finding.figure.split(" (")[0]) == (verdict, figure)


@pytest.mark.parametrize(
    ("text", "rc", "figure"),
    [
        ("cat: /etc/ssl/bulwark/host.crt: No such file or directory", 1,
         "/etc/ssl/bulwark/host.crt: cat: /etc/ssl/bulwark/host.crt: No such file or directory"),
        ("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----", 0,
         "/etc/ssl/bulwark/host.crt: no certificate in it"),
    ],
)  # fmt: skip
def test_an_unreadable_certificate_fails_naming_it(text, rc, figure):
    (finding,) = Certificate("/etc/ssl/bulwark/host.crt", "host").status(
        reading(text, rc), context()
    )
    assert (finding.verdict, finding.figure) == (Verdict.FAIL, figure)


# --- WireGuard ---------------------------------------------------------------------------------

PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


@pytest.mark.parametrize(
    ("latest", "verdict", "figure"),
    [
        (NOW - 42, "OK", "latest handshake 42 s ago (198.51.100.74:51820)"),
        (NOW - 200, "WARN", "latest handshake 3 min 20 s ago"),
        (NOW - 900, "FAIL", "latest handshake 15 min ago"),
        (0, "FAIL", "no handshake yet with 198.51.100.74:51820"),
    ],
)
def test_handshake_age_per_peer_site(latest, verdict, figure):
    dump = f"{PEER}\t198.51.100.74:51820\t10.82.1.0/24\t{int(latest)}"
    check = Handshakes("wg0", (("sea", "10.82.1.0/24"),))
    (finding,) = check.status(reading(dump), context("nj-gw"))
    assert (finding.check, finding.verdict.name) == ("wireguard sea", verdict)
    assert figure in finding.figure


def test_a_tunnel_that_is_down_fails_for_every_peer_site():
    check = Handshakes("wg0", (("sea", "10.82.1.0/24"), ("chi", "10.83.1.0/24")))
    findings = check.status(reading("wg0: no such interface", 1), context("nj-gw"))
    assert [(f.verdict.name, f.figure) for f in findings] == 2 * [
        ("FAIL", "wg0: no such interface")
    ]


def test_a_peer_site_without_a_peer_fails():
    dump = f"{PEER}\t198.51.100.74:51820\t10.82.1.0/24\t{int(NOW)}"
    check = Handshakes("wg0", (("chi", "10.83.1.0/24"),))
    (finding,) = check.status(reading(dump), context("nj-gw"))
    assert finding.verdict is Verdict.FAIL and "10.83.1.0/24" in finding.figure


def test_the_wireguard_script_never_lets_the_private_key_out():
    script = Handshakes("wg0", (("sea", "10.82.1.0/24"),)).status_script()
    assert "NR > 1" in script and "$2" not in script  # line 1 and column 2 hold keys


# --- mail replication --------------------------------------------------------------------------

TITLES = "username\tpriority\tfast sync\tfull sync\tsuccess sync\tfailed\tnext sync secs"


def replicator(*rows: str) -> str:
    return "\n".join([TITLES, *rows])


@pytest.mark.parametrize(
    ("rows", "verdict", "figure"),
    [
        (
            ["alice@example.net\tnone\t00:00:05\t03:10:00\t00:00:05\t-\t00:00:00",
             "bob@example.net\tnone\t00:02:00\t03:10:00\t00:02:00\t-\t00:00:00"],
            "OK",
            "2 users, oldest last success 2 min ago",
        ),
        (
            ["alice@example.net\tnone\t00:00:05\t03:10:00\t00:07:00\ty\t00:00:00"],
            "FAIL",
            "last sync failed: alice@example.net",
        ),
        (
            ["alice@example.net\thigh\t00:03:00\t03:10:00\t00:03:00\t-\t00:00:00"],
            "WARN",
            "alice@example.net queued (high), last success 3 min ago",
        ),
        (
            ["alice@example.net\tlow\t00:10:00\t03:10:00\t00:10:00\t-\t00:00:00"],
            "FAIL",
            "queued (low), last success 10 min ago",
        ),
        (["alice@example.net\tnone\t-\t-\t-\t-\t00:00:00"], "WARN", "never synced: alice"),
        (
            ["alice@example.net\tnone\t26:00:00\t26:00:00\t26:00:00\t-\t00:00:00"],
            "WARN",
            "oldest last success 26 h ago",
        ),
        ([], "WARN", "the replicator knows no user yet"),
    ],
)  # fmt: skip
def test_mail_replication_as_the_replicator_sees_it(rows, verdict, figure):
    (finding,) = MailReplication("sea-mail").status(reading(replicator(*rows)), context())
    assert (finding.check, finding.verdict.name) == ("mail replication sea-mail", verdict)
    assert figure in finding.figure


def test_a_stopped_dovecot_leaves_no_replicator_to_ask():
    text = "Fatal: connect(/run/dovecot/replicator-doveadm) failed: No such file or directory"
    (finding,) = MailReplication("sea-mail").status(reading(text, 75), context())
    assert finding.verdict is Verdict.FAIL
    assert finding.figure == f"replicator unreachable: {text}"


def test_replicator_columns_are_found_by_their_titles():
    old = "username\tpriority\tfast sync\tfull sync\tfailed\nbob\tnone\t00:00:09\t01:00:00\t-"
    (user,) = parse_replicator(old.splitlines())
    assert (user.user, user.last_success, user.failed) == ("bob", 9, False)


# --- one-way replication and the write switch -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rc", "verdict", "figure"),
    [
        (str(int(NOW - 4)), 0, "OK", "last pull 4 s ago"),
        (str(int(NOW - 90)), 0, "WARN", "last pull 90 s ago"),
        (str(int(NOW - 400)), 0, "FAIL", "last pull 6 min 40 s ago"),
        ("stat: cannot statx '/var/lib/bulwark/replication/dav.synced': No such file", 1, "FAIL",
         "never pulled"),
    ],
)  # fmt: skip
def test_a_replicas_lag_is_the_age_of_its_last_pull(text, rc, verdict, figure):
    check = Replica("dav", False, "/x/dav.synced", "/x/dav.source")
    (finding,) = check.status(reading(text, rc), context("sea-web"))
    assert (finding.verdict.name, finding.figure.split(" (")[0]) == (verdict, figure)


@pytest.mark.parametrize(
    ("text", "verdict", "figure"),
    [
        (f"Result=success\nExecMainExitTimestamp=@{int(NOW - 30)}", "OK", "last run 30 s ago"),
        (f"Result=success\nExecMainExitTimestamp=@{int(NOW - 200)}", "WARN", "last run 3 min"),
        (f"Result=success\nExecMainExitTimestamp=@{int(NOW - 400)}", "FAIL", "last run 6 min"),
        (f"Result=exit-code\nExecMainExitTimestamp=@{int(NOW - 30)}", "FAIL",
         "last run 30 s ago failed (exit-code)"),
        ("Result=success\nExecMainExitTimestamp=", "FAIL", "r.service never ran"),
    ],
)  # fmt: skip
def test_a_refresh_is_its_last_runs_result_and_age(text, verdict, figure):
    (finding,) = Refresh("LDAP", "r.service").status(reading(text), context("nj-web"))
    assert finding.verdict.name == verdict
    assert finding.figure.startswith(figure), finding.figure


def test_a_primary_that_still_owes_its_final_pull_warns():
    check = Replica("dav", True, "/x/dav.synced", "/x/dav.source")
    (owed,) = check.status(reading("owed sea-web.example.net"), context("nj-web"))
    (clear,) = check.status(reading("none"), context("nj-web"))
    assert owed.verdict is Verdict.WARN and "sea-web.example.net" in owed.figure
    assert clear.verdict is Verdict.OK


@pytest.mark.parametrize(
    ("value", "primary", "verdict"),
    [("0;", True, "OK"), ("1;", False, "OK"), ("1;", True, "FAIL"), ("0;", False, "FAIL")],
)
def test_the_write_switch_agrees_with_site_primary(value, primary, verdict):
    check = WriteSwitch(
        "dav", "/etc/nginx/bulwark-dav-writes.conf", "$bulwark_dav_refused", primary
    )
    (finding,) = check.status(reading(value), context("nj-web"))
    assert finding.verdict.name == verdict


def test_the_write_switch_script_reads_the_rendered_file(lab_vault, tmp_path):
    from bulwark.render import render_host_configs
    from bulwark.web import DAV_WRITES_CONFIG

    for name, refused in (("nj-web", "0"), ("sea-web", "1")):
        files = render_host_configs(LAB, LAB.host(name), lab_vault, reveal=True)
        (switch,) = [item for item in files if item.path == DAV_WRITES_CONFIG]
        copy = tmp_path / f"{name}.conf"
        copy.write_text(switch.content)
        check = WriteSwitch("dav", str(copy), "$bulwark_dav_refused", name == "nj-web")
        out = subprocess.run(["sh", "-c", check.status_script()], capture_output=True, text=True)
        assert out.stdout.strip() == f"{refused};"
        (finding,) = check.status(reading(out.stdout), context(name))
        assert finding.verdict is Verdict.OK


# --- clock and updates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "text", "now", "verdict", "figure"),
    [
        (False, "NTP=yes\nNTPSynchronized=yes", NOW, "OK", "synchronized; within 0.4 s"),
        (False, "NTP=yes\nNTPSynchronized=no", NOW, "WARN", "not synchronized (NTP yes)"),
        (False, "NTP=yes\nNTPSynchronized=yes", NOW + 3, "WARN", "+2.7 s from this machine"),
        (False, "NTP=yes\nNTPSynchronized=yes", NOW - 30, "FAIL", "-29.6 s from this machine"),
        (True, "container", NOW, "OK", "container, the machine's clock"),
    ],
)
def test_the_clock(container, text, now, verdict, figure):
    (finding,) = Clock().status(reading(text), context(container=container, now=now))
    assert finding.verdict.name == verdict and figure in finding.figure


def test_the_clock_offset_is_bounded_by_both_ends_of_the_script():
    # The host read its clock 0.1 s after the session began and 0.1 s before it ended: were it
    # 2 s ahead, it could not have read NOW + 0.1 first; its offset is within the session's.
    tight = context(container=False, started=NOW, finished=NOW + 0.5, now=NOW + 2.1,
                    host_end=NOW + 2.4)  # fmt: skip
    (finding,) = Clock().status(reading("NTPSynchronized=yes"), tight)
    assert "+1.9 s from this machine" in finding.figure and finding.verdict is Verdict.WARN


def updates(
    pending: list[str], stamp: str = "-", config: float = NOW - DAY, lists: float = NOW - 3600
) -> str:
    lines = [f"stamp {stamp}", f"config {int(config)}", f"lists {int(lists)}"]
    return "\n".join([*lines, *(f"pending {name}" for name in pending)])


@pytest.mark.parametrize(
    ("text", "verdict", "figure"),
    [
        (updates([]), "OK", "none pending (lists 60 min old)"),
        (updates(["openssl", "libssl3"]), "OK",
         "2 pending (libssl3, openssl); unattended-upgrades never run yet"),
        (updates(["openssl"], config=NOW - 3 * DAY), "WARN", "1 pending (openssl)"),
        (updates(["openssl"], stamp=str(int(NOW - 8 * DAY)), config=NOW - 30 * DAY), "FAIL",
         "last run 8 d ago"),
        (updates(["openssl"], stamp=str(int(NOW - 5 * 3600)), config=NOW - 30 * DAY), "OK",
         "last run 5 h ago"),
        (updates(["openssl"], lists=NOW - 9 * DAY), "WARN", "package lists 9 d old"),
    ],
)  # fmt: skip
def test_pending_security_updates(text, verdict, figure):
    (finding,) = SecurityUpdates("/etc/apt/apt.conf.d/52x").status(reading(text), context())
    assert finding.verdict.name == verdict and figure in finding.figure


# --- drift: files, directories, sysctls, the ruleset ------------------------------------------


def hoststate_output(files: dict[str, str], pending: tuple[str, ...] = ()) -> str:
    return "\n".join(
        ["## pending", *pending, "## files", *files.values(), "## packages", "## units"]
    )


def test_managed_files_report_content_owner_mode_and_pending_actions_never_a_secret():
    plain = rendered("/etc/a.conf", "a = 1\n")
    secret = rendered("/etc/b.conf", "password = hunter2\n", mode="0600", secret=True)
    right = rendered("/etc/c.conf", "c\n")
    gone = rendered("/etc/d.conf", "d\n")
    digest = hashlib.sha256(b"edited\n").hexdigest()
    out = hoststate_output(
        {
            "a": f"file root root 644 {digest}\t/etc/a.conf",
            "b": f"file root root 644 {digest}\t/etc/b.conf",
            "c": f"file root root 644 {right.sha256}\t/etc/c.conf",
            "d": "missing\t/etc/d.conf",
        },
        pending=("nginx.service-reload",),
    )
    expected = {item.path: item for item in (plain, secret, right, gone)}
    differences = ManagedFiles().drift(reading(out), context(expected=expected))
    text = [f"{d.subject}: {d.detail}" for d in differences]
    assert text == [
        "pending nginx.service-reload: a deploy was cut short before this action ran: the "
        "daemon or kernel still runs the previous configuration",
        f"file /etc/a.conf: content differs (sha256 {digest[:12]} on the host, "
        f"{plain.sha256[:12]} rendered)",
        "file /etc/b.conf: content differs (it holds secrets: not shown)",
        "file /etc/b.conf: mode 0644, want 0600",
        "file /etc/d.conf: missing",
    ]
    assert not any(secret.sha256[:12] in line or "hunter2" in line for line in text)


def test_the_managed_files_script_reads_every_expected_path_and_the_markers():
    expected = {"/etc/x y.conf": rendered("/etc/x y.conf", "")}
    script = ManagedFiles().drift_script(context(expected=expected))
    assert "'/etc/x y.conf'" in script and PENDING_DIR in script


def test_directories_owner_and_mode():
    check = Directories(
        (
            Directory("/var/vmail", "vmail", "vmail", "0700"),
            Directory("/srv", "root", "root", "0755"),
        )
    )
    out = "root vmail 755\t/var/vmail\nmissing\t/srv"
    text = [f"{d.subject}: {d.detail}" for d in check.drift(reading(out), context())]
    assert text == [
        "directory /var/vmail: owner root:vmail, want vmail:vmail",
        "directory /var/vmail: mode 0755, want 0700",
        "directory /srv: missing",
    ]


SYSCTL_FILE = "# managed\nnet.ipv4.tcp_syn_retries = 3\n\n-net.core.somaxconn=4096\n"


def test_sysctl_files_are_read_as_systemd_sysctl_does():
    assert sysctl_settings(SYSCTL_FILE) == {
        "net.ipv4.tcp_syn_retries": "3",
        "net.core.somaxconn": "4096",
    }


@pytest.mark.parametrize(
    ("live", "container", "in_containers", "found"),
    [
        ("net.ipv4.tcp_syn_retries\t3\nnet.core.somaxconn\t4096", True, True, []),
        ("net.ipv4.tcp_syn_retries\t6\nnet.core.somaxconn\t4096", True, True,
         ["sysctl net.ipv4.tcp_syn_retries: 6 live, /etc/sysctl.d/62.conf sets 3: not applied"]),
        ("net.ipv4.tcp_syn_retries\t6\nnet.core.somaxconn\t4096", True, False, []),
        ("net.ipv4.tcp_syn_retries\t6\nnet.core.somaxconn\t4096", False, False,
         ["sysctl net.ipv4.tcp_syn_retries: 6 live, /etc/sysctl.d/62.conf sets 3: not applied"]),
        ("net.ipv4.tcp_syn_retries\tsysctl: cannot stat /proc/sys/net/ipv4/tcp_syn_retries: "
         "No such file or directory\nnet.core.somaxconn\t4096", False, True,
         ["sysctl net.ipv4.tcp_syn_retries: unreadable (sysctl: cannot stat"]),
    ],
)  # fmt: skip
def test_a_sysctl_reverted_at_runtime_is_drift(live, container, in_containers, found):
    path = "/etc/sysctl.d/62.conf"
    check = Sysctl(path, in_containers)
    ctx = context(container=container, expected={path: rendered(path, SYSCTL_FILE)})
    assert "net.ipv4.tcp_syn_retries net.core.somaxconn;" in check.drift_script(ctx)
    text = [f"{d.subject}: {d.detail}" for d in check.drift(reading(live), ctx)]
    assert len(text) == len(found)
    assert all(line.startswith(start) for line, start in zip(text, found, strict=True))


def test_the_sysctl_script_prints_key_and_value_per_line():
    path = "/etc/sysctl.d/62.conf"
    script = Sysctl(path).drift_script(
        context(expected={path: rendered(path, "kernel.ostype = Linux\n")})
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.split("\t")[0] == "kernel.ostype"


DIGEST = "a" * 64


@pytest.mark.parametrize(
    ("text", "verdict", "difference"),
    [
        (f"loaded\n{DIGEST}\n{DIGEST}", "OK", None),
        (f"loaded\n{'b' * 64}\n{DIGEST}", "WARN",
         "the live ruleset is not the one the last apply left"),
        (f"loaded\n{DIGEST}", "WARN", f"never applied by bulwark ({APPLIED_DIGEST} missing)"),
        (f"missing\n{DIGEST}\n{DIGEST}", "FAIL", "table inet bulwark not loaded"),
    ],
)  # fmt: skip
def test_the_live_ruleset_against_the_last_apply(text, verdict, difference):
    check = LiveRulesetCheck()
    (finding,) = check.status(reading(text), context())
    assert finding.verdict.name == verdict
    found = [d.detail for d in check.drift(reading(text), context())]
    if difference is None:
        assert found == []
    else:
        (detail,) = found
        assert detail.startswith(difference)


def test_the_staged_candidate_is_compared_with_the_rendered_ruleset():
    ruleset = rendered(RULESET, "flush ruleset\n", mode="0600")
    (candidate,) = LiveRulesetCheck().expected_files({RULESET: ruleset})
    assert (candidate.path, candidate.sha256, candidate.mode) == (CANDIDATE, ruleset.sha256, "0600")


# --- every script only reads ---------------------------------------------------------------------

# The commands a status or drift script may run, and how the ones that can also change things
# must be called.
READERS = {
    "apt", "awk", "cat", "cut", "date", "df", "doveadm", "dpkg", "dpkg-query", "echo", "exit",
    "export", "getent", "ip", "ls", "nft", "printf", "read", "set", "sha256sum", "sort", "ss",
    "stat", "sysctl", "systemctl", "systemd-detect-virt", "tail", "timedatectl", "tr", "true",
    "wg", "[",
}  # fmt: skip
READ_ONLY_FORMS = {
    "apt": r"apt list --upgradable",
    "doveadm": r"doveadm -f tab replicator status '\*'",
    "dpkg": r"dpkg --compare-versions",
    "ip": r"ip link show",
    "nft": r"nft (-s )?list (ruleset|table)",
    "sysctl": r"sysctl -n",
    "systemctl": r"systemctl show",
    "timedatectl": r"timedatectl show",
    "wg": r"wg show \S+ dump",
}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "while", "do", "done", "!", "{", "}", "(", ")"}
_SEPARATORS = {";", "&&", "||", "|", "(", ")", "&"}


def commands_of(script: str) -> set[str]:
    """The command words of a script: those in command position, in command substitutions
    and after pipes (a `for` loop's variable and list, and assignments, are skipped)."""
    lexer = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    found: set[str] = set()
    expect_command, in_for = True, False
    for word in lexer:
        if in_for:
            in_for = word != "do"
            expect_command = not in_for
        elif word in _SEPARATORS or word in _KEYWORDS:
            expect_command = True
        elif word == "for":
            in_for = True
        elif expect_command and not re.match(r"[A-Za-z_]\w*=", word):
            found.add(word)
            expect_command = False
    found |= set(re.findall(r"\$\(\s*([\w.\[-]+)", script))
    found |= set(re.findall(r"(?<!\|)\|\s*([a-z][\w.-]*)", script))
    return found - _KEYWORDS


def all_scripts(topology_name: str) -> list[tuple[str, str]]:
    from bulwark.audit import SealedSecrets
    from bulwark.livecheck import host_checks
    from bulwark.render import render_host_configs

    topology = load_topology(REPO / "inventory" / f"{topology_name}.py")
    scripts = []
    for host in topology.hosts:
        generic = (ManagedFiles(), Listening.for_host(topology, host))
        checks = host_checks(topology, host, generic)
        rendered = {
            item.path: item
            for item in render_host_configs(topology, host, SealedSecrets(), reveal=False)
        }
        for check in checks:
            for item in check.expected_files(rendered):
                rendered[item.path] = item
        ctx = replace(context(), topology=topology, host=host, expected=rendered)
        parts = [check.status_script() for check in checks]
        parts += [check.drift_script(ctx) for check in checks]
        scripts.append((host.name, host_script(parts).text))
    return scripts


@pytest.mark.parametrize("inventory", ["lab", "production"])
def test_every_status_and_drift_script_only_reads(inventory):
    for host, script in all_scripts(inventory):
        assert commands_of(script) <= READERS, (host, commands_of(script) - READERS)
        for command, form in READ_ONLY_FORMS.items():
            for match in re.finditer(rf"(?<![\w.-]){re.escape(command)}\s", script):
                assert re.match(form, script[match.start() :]), (host, script[match.start() :][:60])
        redirections = re.findall(r"(?<![0-9&])>\s*(?!/dev/null|&1|\d)(\S+)", script)
        assert redirections == [], (host, redirections)


def test_the_read_only_guard_sees_a_writing_command():
    assert "rm" in commands_of("echo x; rm -f /etc/passwd")
    assert "tee" in commands_of('printf "%s" "$(cat x | tee /etc/y)"')
    assert "touch" in commands_of("for p in a b; do touch $p; done")


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian machine")
def test_pending_security_updates_are_installed_packages_with_a_newer_version_listed(tmp_path):
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True
    ).stdout
    (tmp_path / "x_security_main_binary-amd64_Packages").write_text(
        f"Package: dpkg\nVersion: 99:{installed}\nArchitecture: amd64\n\n"
        "Package: bulwark-not-installed\nVersion: 1.0\n\n"
    )
    (tmp_path / "y_security_contrib_binary-amd64_Packages").write_text(
        f"Package: dpkg\nVersion: 0.1\n\nPackage: dpkg\nVersion: {installed}\n"
    )
    script = pending_script(str(tmp_path / "*security*_Packages"))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.split("\n") == ["pending dpkg", ""]
