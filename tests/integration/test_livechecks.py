"""`bulwark status` and `bulwark drift` on the running lab (issue: live checks).

On the converged lab both are clean and take at most 5 s. Each fault of the issue is caused on
one host, seen by the command with that host and the figure behind it, then put right (the
service restarted, or the deploy of the role concerned) and seen clean again. Every fault is
undone in `finally`, whatever happens. Neither command changes a host: a deploy right after
them reports no change.

The lab's disk is the machine's (tens of GB free), so "a disk past the warning threshold" is a
bounded scratch file (at most SCRATCH_LIMIT) with the threshold moved, for that run, to just
below what the file brings the use to (`--threshold disk-warn=...`, the operator's own knob).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bulwark.exposure import VPN_UNIT
from bulwark.inventory import load_topology
from bulwark.lab import paths
from bulwark.vault import KEY_ENV
from roles import base, mailstore

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
TOPOLOGY = load_topology(LAB_INVENTORY)
PRIMARY = TOPOLOGY.primary_site.name
SECONDARY = TOPOLOGY.peer_sites(PRIMARY)[0].name
STORE = TOPOLOGY.hosts_with_role("mailstore", PRIMARY)[0].name
WEB = TOPOLOGY.hosts_with_role("dav", PRIMARY)[0].name
GATEWAY = TOPOLOGY.gateway(SECONDARY).name
OTHER_GATEWAY = TOPOLOGY.gateway(PRIMARY).name
# The largest scratch file the disk test writes; it skips rather than write more.
SCRATCH_LIMIT = 2 * 1024**3
SCRATCH = "/root/bulwark-livechecks-scratch"  # on the root filesystem
# How long a repaired fault may take to read clean again (a handshake, a replication retry).
RECOVERY = 60


def bulwark(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Run the operator's `bulwark` on the lab inventory; (the process, its wall time)."""
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / ".venv/bin/bulwark"), *args],
        cwd=REPO,
        env={**os.environ, KEY_ENV: str(paths.STATE_DIR / "vault.key")},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.monotonic() - started


def status(*options: str) -> tuple[int, dict]:
    result, _ = bulwark("status", str(LAB_INVENTORY), "--json", *options)
    assert result.returncode in (0, 1, 3), result.stderr[-2000:]
    return result.returncode, json.loads(result.stdout)


def findings(report: dict, host: str) -> dict[str, dict]:
    return {finding["check"]: finding for finding in report["hosts"][host]["checks"]}


def not_ok(report: dict) -> list[str]:
    return [
        f"{host} {finding['verdict']} {finding['check']}: {finding['figure']}"
        for host, entry in report["hosts"].items()
        for finding in entry["checks"]
        if finding["verdict"] != "OK"
    ]


def drift(*options: str) -> subprocess.CompletedProcess:
    result, _ = bulwark("drift", str(LAB_INVENTORY), *options)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    return result


def eventually_clean(*options: str, deadline: float = RECOVERY) -> list[str]:
    """Poll status until nothing is WARN or FAIL; what still is at the deadline."""
    start = time.monotonic()
    while True:
        _, report = status(*options)
        if not (left := not_ok(report)) or time.monotonic() - start > deadline:
            return left
        time.sleep(2)


def deploy_reports_no_change(lab_pyinfra, limit: str, *options: str) -> list[str]:
    """The operations a deploy changed (it must succeed)."""
    result = lab_pyinfra("deploy.py", limit, "--json", *options, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    operations = json.loads(result.stdout)["results"]["operations"]
    return [operation["name"] for operation in operations if operation["success"]]


# --- the converged lab ---------------------------------------------------------------------


def test_status_of_the_converged_lab_is_all_ok(record_property):
    """Every check of every host OK, exit 0. (Its time is measured by benchmarks/live.py, not
    held to here: a test asserts behaviour; the wall time is only recorded.)"""
    result, seconds = bulwark("status", str(LAB_INVENTORY), "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and not_ok(report) == [], not_ok(report)
    assert sorted(report["hosts"]) == sorted(host.name for host in TOPOLOGY.hosts)
    record_property("status_seconds", round(seconds, 2))


def test_drift_of_the_converged_lab_is_nothing(record_property):
    result, seconds = bulwark("drift", str(LAB_INVENTORY))
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.splitlines()[-1].startswith(f"no drift on {len(TOPOLOGY.hosts)} hosts")
    record_property("drift_seconds", round(seconds, 2))


def test_neither_command_changes_a_host(lab_pyinfra):
    """Both run, then a deploy of the whole lab: it changes nothing."""
    assert bulwark("status", str(LAB_INVENTORY))[0].returncode == 0
    assert drift().returncode == 0
    assert deploy_reports_no_change(lab_pyinfra, "*") == []


# --- status: each fault, with its host and figure ---------------------------------------------


def test_a_stopped_dovecot_fails_and_is_ok_again_once_started(lab_host):
    host = lab_host(STORE)
    host.check_output("systemctl stop dovecot.service")
    try:
        code, report = status("--limit", STORE)
        found = findings(report, STORE)
        assert code == 1
        assert found["unit dovecot.service"]["verdict"] == "FAIL"
        assert "want running" in found["unit dovecot.service"]["figure"]
        assert found["port imaps"]["verdict"] == "FAIL"
        assert "993/tcp not listening" in found["port imaps"]["figure"]
        replication = found[
            f"mail replication {mailstore.replica(TOPOLOGY, TOPOLOGY.host(STORE)).name}"
        ]
        assert (
            replication["verdict"] == "FAIL" and "replicator unreachable" in replication["figure"]
        )
        text, _ = bulwark("status", str(LAB_INVENTORY), "--limit", STORE)
        assert f"  {STORE} (" in text.stdout
        assert any(
            line.split()[:3] == ["FAIL", "unit", "dovecot.service"]
            for line in text.stdout.splitlines()
        )
        assert "unit dovecot.service" in drift("--limit", STORE).stdout
    finally:
        host.check_output("systemctl start dovecot.service")
    assert eventually_clean("--limit", STORE) == []


def test_a_cut_tunnel_fails_on_the_gateway_and_is_ok_again_once_back(lab_host):
    gateway = lab_host(GATEWAY)
    unit = VPN_UNIT
    gateway.check_output("systemctl stop %s", unit)
    try:
        code, report = status("--limit", GATEWAY)
        found = findings(report, GATEWAY)
        assert code == 1
        assert found[f"unit {unit}"]["verdict"] == "FAIL"
        tunnel = found[f"wireguard {PRIMARY}"]
        assert tunnel["verdict"] == "FAIL" and "wg0" in tunnel["figure"]
    finally:
        gateway.check_output("systemctl start %s", unit)
    assert eventually_clean("--limit", f"{GATEWAY},{OTHER_GATEWAY}") == []
    # Mail replication catches up within the retry interval once the tunnel is back.
    assert eventually_clean() == []


def _df(host, path: str) -> tuple[int, int]:
    """(used, available) KiB of the filesystem holding `path`."""
    _, _, used, available, *_ = host.check_output("df -P %s | tail -n 1", path).split()
    return int(used), int(available)


def test_a_disk_past_the_warning_threshold_warns_and_is_ok_again_once_freed(lab_host):
    host = lab_host(WEB)
    used, available = _df(host, "/")
    total = used + available
    scratch = min(SCRATCH_LIMIT, max(256 * 1024**2, total * 1024 // 100))  # ~1 % of it
    if scratch >= available * 1024 // 2:
        pytest.skip("not enough free space for a bounded scratch file")
    after = 100.0 * (used + scratch // 1024) / total
    warn = round((100.0 * used / total + after) / 2, 2)  # between today's use and the file's
    options = ("--threshold", f"disk-warn={warn}", "--threshold", "disk-fail=100")
    assert findings(status("--limit", WEB, *options)[1], WEB)["disk /"]["verdict"] == "OK"
    try:
        written = host.run("fallocate -l %s %s", str(scratch), SCRATCH)
        if written.rc != 0:  # a filesystem without fallocate: write it
            count = str(scratch // 1024**2)
            host.check_output("dd if=/dev/zero of=%s bs=1M count=%s status=none", SCRATCH, count)
        code, report = status("--limit", WEB, *options)
        disk = findings(report, WEB)["disk /"]
        assert disk["verdict"] == "WARN", disk
        assert disk["value"] >= warn and "% used" in disk["figure"]
        assert code == 3  # a warning alone: not OK, and not a FAIL either
        assert status("--limit", WEB, "--warn-ok", *options)[0] == 0
    finally:
        host.run("rm -f %s", SCRATCH)
    assert findings(status("--limit", WEB, *options)[1], WEB)["disk /"]["verdict"] == "OK"


# --- drift: each change reported, and cleared by the next deploy ------------------------------


def _reported(result: subprocess.CompletedProcess, host: str, subject: str) -> list[str]:
    """The lines of `host`'s section of drift's output that start with `subject`, blanks
    collapsed."""
    lines = result.stdout.split(f"  {host}: ", 1)[1].splitlines()[1:]
    section = []
    for line in lines:
        if not line.startswith("    "):
            break
        section.append(" ".join(line.split()))
    return [line for line in section if line.startswith(subject)]


def test_a_hand_edited_file_is_drift_a_secret_only_as_differs_and_the_deploy_clears_it(
    lab_host, lab_pyinfra
):
    host = lab_host(STORE)
    plain, secret = "/etc/postfix/main.cf", "/etc/dovecot/bulwark-auth.lua"
    marker = "bulwark-livechecks-hand-edit"
    try:
        host.check_output("echo %s >> %s", f"# {marker}", plain)
        host.check_output("echo %s >> %s", f"-- {marker}", secret)
        result = drift("--limit", STORE)
        assert result.returncode == 1
        (edited,) = _reported(result, STORE, f"file {plain}")
        assert "content differs" in edited
        (hidden,) = _reported(result, STORE, f"file {secret}")
        assert "content differs (it holds secrets: not shown)" in hidden
        assert marker not in result.stdout
    finally:
        changed = deploy_reports_no_change(lab_pyinfra, STORE, "--data", "only_roles=mx,mailstore")
    assert changed  # the deploy put both files back
    assert drift("--limit", STORE).returncode == 0


def test_a_changed_mode_is_drift_and_the_deploy_clears_it(lab_host, lab_pyinfra):
    host = lab_host(GATEWAY)
    try:
        host.check_output("chmod 0644 %s", base.SSHD_CONFIG)
        result = drift("--limit", GATEWAY)
        assert result.returncode == 1
        assert _reported(result, GATEWAY, f"file {base.SSHD_CONFIG}") == [
            f"file {base.SSHD_CONFIG} mode 0644, want 0600"
        ]
    finally:
        deploy_reports_no_change(lab_pyinfra, GATEWAY, "--data", "only_roles=base")
    assert drift("--limit", GATEWAY).returncode == 0


def test_a_hand_added_nft_rule_is_drift_and_the_deploy_clears_it(lab_host, lab_pyinfra):
    host = lab_host(WEB)
    try:
        host.check_output("nft add rule inet bulwark input tcp dport 2222 accept")
        result = drift("--limit", WEB)
        assert result.returncode == 1
        (line,) = _reported(result, WEB, "nft ruleset")
        assert "not the one the last apply left" in line
        assert findings(status("--limit", WEB)[1], WEB)["firewall"]["verdict"] == "WARN"
    finally:
        deploy_reports_no_change(lab_pyinfra, WEB, "--data", "only_roles=firewall")
    assert drift("--limit", WEB).returncode == 0


def test_a_sysctl_reverted_at_runtime_is_drift_and_the_deploy_clears_it(lab_host, lab_pyinfra):
    host = lab_host(STORE)
    key = "net.ipv4.tcp_syn_retries"
    try:
        host.check_output("sysctl -q -w %s=6", key)
        result = drift("--limit", STORE)
        assert result.returncode == 1
        (line,) = _reported(result, STORE, f"sysctl {key}")
        assert f"6 live, {mailstore.SYSCTL_FILE} sets {mailstore.TCP_SYN_RETRIES}" in line
        # The file itself is right: only the live value differs.
        assert _reported(result, STORE, f"file {mailstore.SYSCTL_FILE}") == []
    finally:
        deploy_reports_no_change(lab_pyinfra, STORE, "--data", "only_roles=mailstore")
    assert host.check_output("sysctl -n %s", key) == str(mailstore.TCP_SYN_RETRIES)
    assert drift("--limit", STORE).returncode == 0


def test_a_deploy_cut_short_is_drift_until_the_next_deploy(lab_host, lab_pyinfra):
    """What a run killed between an upload and its reload leaves: the file right, the marker
    (bulwark.operations). drift names the action the daemon never got."""
    host = lab_host(STORE)
    action = "dovecot.service-reload"
    try:
        host.check_output("touch /var/lib/bulwark/pending/%s", action)
        result = drift("--limit", STORE)
        assert result.returncode == 1
        (line,) = _reported(result, STORE, f"pending {action}")
        assert "cut short" in line
    finally:
        deploy_reports_no_change(lab_pyinfra, STORE, "--data", "only_roles=mailstore")
    assert drift("--limit", STORE).returncode == 0
