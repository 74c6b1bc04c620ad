"""A deploy that reports no change has left every host converged (issue: a run killed after an
upload left the daemon behind its file, and a hand-made firewall rule survived later deploys).

Each test puts one host in the state the fault leaves, runs the deploy narrowed to the role
concerned, and checks the host is converged again.
"""

from __future__ import annotations

from pathlib import Path

from bulwark.inventory import load_topology
from bulwark.operations import marker_path
from roles import firewall, mailstore

TOPOLOGY = load_topology(Path(__file__).resolve().parents[2] / "inventory" / "lab.py")
SYN_RETRIES = "net.ipv4.tcp_syn_retries"


def test_a_run_killed_after_an_upload_is_finished_by_the_next(lab_host, lab_pyinfra):
    """What a run killed between the upload of a sysctl file and its `sysctl -p` leaves: the
    file in place, its pending marker, the kernel still on the old value."""
    name = TOPOLOGY.hosts_with_role("mailstore", TOPOLOGY.primary_site.name)[0].name
    host = lab_host(name)
    marker = marker_path(f"sysctl-{Path(mailstore.SYSCTL_FILE).name}")
    host.check_output("sysctl -q -w %s=6", SYN_RETRIES)
    host.check_output("touch %s", marker)
    result = lab_pyinfra("deploy.py", name, "--data", "only_roles=mailstore")
    assert result.returncode == 0, result.stderr[-2000:]
    assert host.check_output("sysctl -n %s", SYN_RETRIES) == str(mailstore.TCP_SYN_RETRIES)
    assert not host.file(marker).exists


def test_a_rule_added_by_hand_is_removed_by_the_next_deploy(lab_host, lab_pyinfra):
    name = TOPOLOGY.hosts_with_role("dav", TOPOLOGY.primary_site.name)[0].name
    host = lab_host(name)
    host.check_output("nft add rule inet bulwark input tcp dport 2222 accept")
    assert "dport 2222" in host.check_output("nft list chain inet bulwark input")
    result = lab_pyinfra("deploy.py", name, "--data", "only_roles=firewall")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dport 2222" not in host.check_output("nft list chain inet bulwark input")
    assert host.run("systemctl is-active %s", firewall.ROLLBACK_TIMER).stdout.strip() != "active"
