"""`bulwark status` and `bulwark drift` as an operator runs them, without hosts.

- What is refused before anything connects: a broken inventory, a --limit naming no host, a
  bad --threshold, the inventory's own check (the lab's), for drift a vault that cannot open.
- A host that cannot be reached is FAIL "unreachable" with ssh's words, never a traceback.
- The whole lab, simulated (tests/unit/livehost.py): converged, every check OK and no drift;
  each fault of the issue shows with its host and figure, and the exit status follows.
- Each role declares exactly the units its converge keeps, and a Sysctl check for each sysctl
  file it writes: a new role that forgets one fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from livehost import Faults, SimulatedLab
from test_role_converge import converge, fresh

from bulwark import deploying, liverun, registry
from bulwark.cli import main
from bulwark.inventory import load_inventory, load_topology
from bulwark.lab import lifecycle
from bulwark.livecheck import host_checks
from bulwark.probes import Listening, ManagedFiles, Sysctl, Units, expected_ports
from bulwark.remote import run_script, ssh_argv
from bulwark.render import render_host_configs
from roles import mailstore

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
LAB = load_topology(LAB_INVENTORY)


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def no_connection(monkeypatch):
    """Any attempt to connect fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("connected although the run should have been refused")

    monkeypatch.setattr(liverun, "run_everywhere", refuse)


# --- refused before connecting --------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "drift"])
def test_a_limit_that_names_no_host_is_an_error_naming_it(
    two_site_inventory, no_connection, command
):
    result = run(command, str(two_site_inventory.write()), "--limit", "nj-wbe")
    assert result.exit_code == 2
    assert (
        "--limit 'nj-wbe': no host or group of the inventory (did you mean 'nj-web'?)"
        in result.output
    )


@pytest.mark.parametrize("command", ["status", "drift"])
def test_a_broken_inventory_is_reported_whole_before_connecting(
    two_site_inventory, no_connection, command
):
    two_site_inventory.host("nj-web")["lan_address"] = "10.1.0.400"
    result = run(command, str(two_site_inventory.write()))
    assert result.exit_code == 2
    assert "nj-web.lan_address: '10.1.0.400' is not an IPv4 address" in result.output


def test_a_bad_threshold_is_refused(two_site_inventory, no_connection):
    result = run("status", str(two_site_inventory.write()), "--threshold", "cert-wran=10")
    assert result.exit_code == 2 and "did you mean 'cert-warn'" in result.output


def test_drift_without_the_vault_key_is_refused_naming_it(
    two_site_inventory, no_connection, monkeypatch
):
    monkeypatch.delenv("BULWARK_VAULT_KEY", raising=False)
    two_site_inventory.set_platform("vault_file", str(two_site_inventory.directory / "x.vault"))
    result = run("drift", str(two_site_inventory.write()))
    assert result.exit_code == 2 and "BULWARK_VAULT_KEY is not set" in result.output


def test_the_inventorys_own_check_runs_before_connecting(two_site_inventory, no_connection):
    path = two_site_inventory.write()
    path.write_text(
        path.read_text() + "\nfrom bulwark.errors import BulwarkError\n"
        "from bulwark.inventory import check_before_connecting\n"
        "def _lab_down(source, inventory):\n"
        "    raise BulwarkError('the lab is not up')\n"
        "check_before_connecting(_lab_down)\n"
    )
    result = run("status", str(path))
    assert result.exit_code == 2 and "the lab is not up" in result.output


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_an_unreachable_host_fails_with_ssh_s_words(two_site_inventory, tmp_path):
    host = two_site_inventory.host("nj-gw")
    host.update(
        ssh_hostname="127.0.0.1",
        ssh_port=1,
        ssh_known_hosts_file=str(tmp_path / "known_hosts"),
        ssh_strict_host_key_checking="yes",
    )
    result = run("status", str(two_site_inventory.write()), "--limit", "nj-gw", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    (finding,) = report["hosts"]["nj-gw"]["checks"]
    assert finding["check"] == "ssh" and finding["verdict"] == "FAIL"
    assert finding["figure"].startswith("unreachable: ssh: connect to host 127.0.0.1 port 1")


# --- the simulated lab ---------------------------------------------------------------------


@pytest.fixture
def lab(monkeypatch, lab_vault):
    """The lab inventory with its own check passed, and a simulated host behind every name."""
    monkeypatch.setattr(lifecycle, "require_up", lambda *args, **kwargs: None)
    simulated = SimulatedLab(LAB, lab_vault)
    monkeypatch.setattr(liverun, "run_everywhere", simulated.run_everywhere)
    monkeypatch.setattr(liverun, "drift_secrets", lambda target: lab_vault)
    return simulated


def status(*options: str):
    result = run("status", str(LAB_INVENTORY), *options)
    return result, (json.loads(result.output) if "--json" in options else None)


def test_status_of_the_converged_lab_is_all_ok(lab):
    result, report = status("--json")
    assert result.exit_code == 0, result.output
    assert report["verdict"] == "OK" and report["counts"]["WARN"] == report["counts"]["FAIL"] == 0
    assert list(report["sites"]) == ["nj", "sea"] and report["sites"]["nj"]["primary"]
    checks = {c["check"] for c in report["hosts"]["nj-mail"]["checks"]}
    assert {"unit dovecot.service", "port imaps", "public sockets", "certificate host",
            "mail replication sea-mail", "disk /", "clock", "security updates", "firewall",
            } <= checks  # fmt: skip
    assert "wireguard sea" in {c["check"] for c in report["hosts"]["nj-gw"]["checks"]}
    assert {"dav replication", "dav writes"} <= {
        c["check"] for c in report["hosts"]["sea-web"]["checks"]
    }


def test_status_prints_per_site_and_host_with_a_summary(lab):
    result, _ = status("--limit", "nj")
    lines = result.output.splitlines()
    assert lines[0] == "nj (primary site)"
    assert lines[1] == "  nj-gw (gateway, proxy)"
    assert lines[2].startswith("    OK    ")
    assert "sea" not in lines and not any(line.startswith("  sea-") for line in lines)
    assert lines[-1].startswith("4 hosts: ") and " 0 WARN, 0 FAIL" in lines[-1]


STRAY = 'tcp LISTEN 0 5 0.0.0.0:8080 0.0.0.0:* users:(("nc",pid=7,fd=3))'


@pytest.mark.parametrize(
    ("faults", "host", "check", "verdict", "figure"),
    [
        (Faults(stopped={"nj-mail": {"dovecot.service"}}), "nj-mail", "unit dovecot.service",
         "FAIL", "inactive (dead), enabled; want running"),
        (Faults(stopped={"nj-mail": {"dovecot.service"}}), "nj-mail", "port imaps",
         "FAIL", "993/tcp not listening"),
        (Faults(stopped={"nj-mail": {"dovecot.service"}}), "nj-mail", "mail replication sea-mail",
         "FAIL", "replicator unreachable"),
        (Faults(stopped={"sea-gw": {"wg-quick@wg0.service"}}), "sea-gw", "wireguard nj",
         "FAIL", "wg0: no such interface"),
        (Faults(handshake_age={"nj-gw": 700}), "nj-gw", "wireguard sea", "FAIL",
         "latest handshake 11 min ago"),
        (Faults(disk_percent={"nj-web": 85}), "nj-web", "disk /", "WARN", "85.0 % used"),
        (Faults(replication_failed={"sea-mail"}), "sea-mail", "mail replication nj-mail", "FAIL",
         "last sync failed: alice@example.net"),
        (Faults(unreachable={"sea-web"}), "sea-web", "ssh", "FAIL",
         "unreachable: ssh: connect to host sea-web port 22: Connection timed out"),
        (Faults(extra_sockets={"nj-web": [STRAY]}), "nj-web", "public sockets", "FAIL",
         "0.0.0.0:8080/tcp (nc)"),
    ],
)  # fmt: skip
def test_each_fault_shows_with_its_host_and_figure(lab, faults, host, check, verdict, figure):
    lab.faults = faults
    result, report = status("--json")
    findings = {c["check"]: c for c in report["hosts"][host]["checks"]}
    assert findings[check]["verdict"] == verdict, findings[check]
    assert figure in findings[check]["figure"]
    assert result.exit_code == {"FAIL": 1, "WARN": 3}.get(verdict, 0)


def test_a_warning_exits_3_unless_warnings_are_ok(lab):
    lab.faults = Faults(disk_percent={"nj-web": 85})
    assert status()[0].exit_code == 3
    assert status("--warn-ok")[0].exit_code == 0
    calm = status("--threshold", "disk-warn=90")[0]
    assert "0 WARN" in calm.output and calm.exit_code == 0


def test_json_is_the_only_thing_on_stdout_and_its_keys_are_sorted(lab):
    result, report = status("--json", "--limit", "sea-*")
    assert result.output.startswith("{") and result.output.rstrip().endswith("}")
    assert list(report) == sorted(report) and sorted(report["hosts"]) == [
        "sea-backup",
        "sea-gw",
        "sea-mail",
        "sea-web",
    ]


def drift(*options: str):
    return run("drift", str(LAB_INVENTORY), *options)


def test_drift_of_the_converged_lab_is_nothing(lab):
    result = drift()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("no drift on 8 hosts")


@pytest.mark.parametrize(
    ("faults", "host", "line"),
    [
        (Faults(edited={"nj-mail": {"/etc/postfix/main.cf": "# hand-edited\n"}}), "nj-mail",
         "file /etc/postfix/main.cf  content differs (sha256 "),
        (Faults(edited={"nj-mail": {"/etc/dovecot/dovecot.conf": "x"}}), "nj-mail",
         "file /etc/dovecot/dovecot.conf  content differs (it holds secrets: not shown)"),
        (Faults(modes={"nj-web": {"/etc/ssh/sshd_config.d/10-bulwark.conf": "644"}}), "nj-web",
         "file /etc/ssh/sshd_config.d/10-bulwark.conf  mode 0644, want 0600"),
        (Faults(ruleset_changed={"sea-web"}), "sea-web",
         "nft ruleset  the live ruleset is not the one the last apply left"),
        (Faults(sysctl={"nj-mail": {"net.ipv4.tcp_syn_retries": "6"}}), "nj-mail",
         f"sysctl net.ipv4.tcp_syn_retries  6 live, {mailstore.SYSCTL_FILE} sets 3: not applied"),
        (Faults(pending={"nj-mail": {"dovecot.service-reload"}}), "nj-mail",
         "pending dovecot.service-reload  a deploy was cut short"),
        (Faults(stopped={"nj-mail": {"dovecot.service"}}), "nj-mail",
         "unit dovecot.service  inactive (dead), enabled; the roles want it running"),
    ],
)  # fmt: skip
def test_each_drift_is_reported_with_its_host(lab, faults, host, line):
    lab.faults = faults
    result = drift()
    assert result.exit_code == 1, result.output
    section = result.output.split(f"  {host}: ", 1)[1].split("\n  ", 1)[0]
    body = result.output.split(f"  {host}: ", 1)[1]
    assert section.endswith("differences") or section.endswith("difference")
    assert any(
        " ".join(row.split()).startswith(" ".join(line.split())) for row in body.splitlines()
    )


def test_no_secret_value_ever_reaches_the_drift_output(lab, lab_vault):
    lab.faults = Faults(edited={"nj-mail": {path: "x" for path in lab.expected("nj-mail")}})
    result = drift("--json")
    secrets = [
        item.content
        for item in render_host_configs(LAB, LAB.host("nj-mail"), lab_vault, reveal=True)
        if item.holds_secrets
    ]
    assert secrets and result.exit_code == 1
    for item in lab.expected("nj-mail").values():
        if item.holds_secrets:
            assert item.sha256[:12] not in result.output
    assert "hunter" not in result.output


def test_drift_reads_each_host_once_and_compares_the_firewall_candidate(lab):
    drift("--limit", "nj-web")
    assert list(lab.scripts) == ["nj-web"]
    assert "/etc/bulwark/nftables.candidate" in lab.scripts["nj-web"]


# --- every role declares what its converge keeps ----------------------------------------------

RUNS = [(module.ROLE, host.name) for host in LAB.hosts for module in registry.host_modules(host)]


@pytest.mark.parametrize(("role", "host_name"), RUNS)
def test_a_role_declares_exactly_the_units_its_converge_keeps(
    role, host_name, lab_vault, monkeypatch
):
    kept = set()
    keep = deploying.unit_state

    def record(**arguments):
        kept.add((arguments["unit"], arguments["running"], arguments["enabled"]))
        return keep(**arguments)

    monkeypatch.setattr(deploying, "unit_state", record)
    converge(role, host_name, fresh(), lab_vault)
    module = registry.role_module(role)
    declared = {
        (unit.name, unit.running, unit.enabled)
        for check in module.live_checks(LAB, LAB.host(host_name))
        if isinstance(check, Units)
        for unit in check.units
    }
    assert declared == kept


@pytest.mark.parametrize("host", LAB.hosts, ids=lambda host: host.name)
def test_every_sysctl_file_a_host_gets_is_checked_live(host, lab_vault):
    files = render_host_configs(LAB, host, lab_vault, reveal=True)
    written = {item.path for item in files if item.path.startswith("/etc/sysctl.d/")}
    checks = host_checks(LAB, host)
    assert written and written == {check.path for check in checks if isinstance(check, Sysctl)}


@pytest.mark.parametrize("inventory", ["lab", "production"])
def test_every_host_of_both_inventories_gets_its_checks(inventory):
    topology = load_topology(REPO / "inventory" / f"{inventory}.py")
    for host in topology.hosts:
        checks = host_checks(
            topology, host, generic=(ManagedFiles(), Listening.for_host(topology, host))
        )
        assert any(isinstance(check, Units) for check in checks)
        assert expected_ports(topology, host)


# --- connecting ----------------------------------------------------------------------------


def test_ssh_takes_the_inventorys_settings():
    data = {
        "ssh_hostname": "10.101.0.1",
        "ssh_port": 2222,
        "ssh_user": "root",
        "ssh_key": "/keys/id",
        "ssh_config_file": "/etc/bulwark/ssh_config",
        "ssh_known_hosts_file": "/etc/bulwark/known_hosts",
        "ssh_strict_host_key_checking": "yes",
    }
    argv = ssh_argv("nj-gw", data)
    text = " ".join(argv)
    assert argv[0] == "ssh" and argv[-4:] == ["--", "10.101.0.1", "sh", "-s"]
    for part in (
        "-o BatchMode=yes",
        "-F /etc/bulwark/ssh_config",
        "-o StrictHostKeyChecking=yes",
        "-o UserKnownHostsFile=/etc/bulwark/known_hosts",
        "-i /keys/id -o IdentitiesOnly=yes",
        "-l root",
        "-p 2222",
    ):
        assert part in text


def test_the_lab_is_reached_through_its_pinned_host_keys():
    inventory = load_inventory(LAB_INVENTORY)
    argv = ssh_argv("nj-gw", inventory.get_host("nj-gw").data.dict())
    text = " ".join(argv)
    assert "-F /var/lib/bulwark-lab/ssh/ssh_config" in text
    assert "-o StrictHostKeyChecking=yes" in text and "-l root" in text
    assert argv[-3:] == ["nj-gw", "sh", "-s"]


def test_a_session_returns_output_and_says_why_it_failed():
    done = run_script("a", ["sh", "-s"], "echo hello\n", timeout=30)
    assert (done.output, done.error) == ("hello\n", None)
    refused = run_script("b", ["sh", "-c", "echo 'ssh: no route' >&2; exit 255"], "", timeout=30)
    assert refused.error == "ssh: no route"
    slow = run_script("c", ["sh", "-c", "sleep 10"], "", timeout=0.5)
    assert slow.error == "no answer within 0.5 s"
    missing = run_script("d", ["/nonexistent/ssh"], "", timeout=5)
    assert missing.error.startswith("cannot run ssh")
