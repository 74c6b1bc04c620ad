"""The lab's controller-side setup that can be checked offline: cgroup discovery, the nft guard."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bulwark.inventory import load_inventory, load_topology
from bulwark.lab.cgroups import systemd_hierarchies
from bulwark.lab.guard import render_ruleset
from bulwark.lab.plan import LINK_PREFIX, build_plan

LAB = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"

HYBRID_MOUNTINFO = """\
25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
38 30 0:34 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
39 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_hybrid_hierarchies_are_cgroup2_and_name_systemd():
    assert systemd_hierarchies(HYBRID_MOUNTINFO) == [
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/unified"),
    ]


def test_unified_only_hierarchy():
    line = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert systemd_hierarchies(line) == [Path("/sys/fs/cgroup")]


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_topology(LAB), next(iter(load_inventory(LAB))).data.dict())


def test_guard_lets_containers_reach_the_apt_proxy_only(plan):
    input_chain, forward_chain = render_ruleset(plan).split("chain forward")
    rules = [line.strip() for line in input_chain.splitlines()]
    links = f'iifname "{LINK_PREFIX}*"'
    assert f"{links} ip daddr {plan.bridge.ip} tcp dport {plan.apt_proxy_port} accept" in rules
    assert f"{links} ct state established,related accept" in rules
    # The last input rule for lab links refuses everything else; nothing is forwarded.
    assert [rule for rule in rules if rule.startswith(links)][-1].startswith(f"{links} reject")
    assert f"{links} drop" in forward_chain


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_guard_ruleset_is_accepted_by_nft(plan, tmp_path):
    ruleset = tmp_path / "guard.nft"
    ruleset.write_text(render_ruleset(plan))
    result = subprocess.run(["nft", "-c", "-f", str(ruleset)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
