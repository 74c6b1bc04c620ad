"""What a role adds to a deploy of its hosts in the lab, for the benchmarks: the full deploy.py
minus the same hosts deployed without the roles measured (and the roles that need them beside).

"first" is measured only where none of the hosts has the roles' marker package yet (a fresh
lab); "no-op" always, with the count of the roles' operations that changed something (which
must be 0). Deploys hold the lab's deploy lock, so two benchmarks never deploy at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bulwark import registry
from bulwark.lab import paths
from bulwark.topology import Topology

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory" / "lab.py"
DEPLOY_LOCK = "/run/bulwark-lab-deploy.lock"
# deploy.py without some roles: the baseline the roles' cost is measured against.
_WITHOUT = """
from bulwark import registry
from bulwark.deploying import deploy_host, deploy_secrets, deploy_topology

_topology, _host, _secrets = deploy_topology(), deploy_host(), deploy_secrets()
_others = [role.name for role in registry.ROLES if role.name not in {left_out!r}]
for module in registry.host_modules(_host, only=_others):
    module.converge(_topology, _host, _secrets)
"""


def deploy(deploy_file: Path, hosts: Sequence[str], roles: Sequence[str]) -> tuple[float, int]:
    """One locked pyinfra run on `hosts`: (seconds, operations of `roles` that changed)."""
    limits = [argument for host in hosts for argument in ("--limit", host)]
    env = {**os.environ, "BULWARK_VAULT_KEY": str(paths.STATE_DIR / "vault.key")}
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    started = time.monotonic()
    result = subprocess.run(
        ["flock", DEPLOY_LOCK, pyinfra, "-y", "--json", str(INVENTORY), str(deploy_file), *limits],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"deploy failed:\n{result.stderr[-3000:]}")
    operations = json.loads(result.stdout)["results"]["operations"]
    changed = sum(
        len(operation["success"])
        for operation in operations
        if operation["name"].split(" | ")[0] in roles
    )
    return elapsed, changed


def _lacks_package(hosts: Sequence[str], package: str) -> bool:
    """Whether no host has `package` installed yet: a first deploy can be measured."""
    ssh_config = str(paths.STATE_DIR / "ssh" / "ssh_config")
    return all(
        subprocess.run(
            ["ssh", "-F", ssh_config, host, "dpkg-query", "-W", package],
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        != 0
        for host in hosts
    )


def measure_role_deploys(topology: Topology, roles: Sequence[str], marker_package: str) -> None:
    """Print the seconds `roles` add to a first deploy (if their hosts lack `marker_package`)
    and to a no-op one, on the hosts that have any of them. Roles that need one of `roles`
    beside them (registry `beside`) are left out of the baseline too, and deployed last."""
    dependants = tuple(
        role.name for role in registry.ROLES if {needed for needed, _ in role.beside} & set(roles)
    )
    hosts = [host.name for host in topology.hosts if set(host.roles) & set(roles)]
    what = " and ".join(roles)
    with tempfile.TemporaryDirectory(prefix="bulwark-bench-") as scratch:
        without = Path(scratch) / "deploy_without.py"
        without.write_text(_WITHOUT.format(left_out=(*roles, *dependants)))
        with_roles = Path(scratch) / "deploy_with.py"
        with_roles.write_text(_WITHOUT.format(left_out=dependants))
        fresh = _lacks_package(hosts, marker_package)
        deploy(without, hosts, roles)  # converge everything else first
        baseline, _ = deploy(without, hosts, roles)
        if fresh:
            first, _ = deploy(with_roles, hosts, roles)
            print(
                f"deploy, first:  {what} add {first - baseline:5.1f} s "
                f"({first:.1f} s vs {baseline:.1f} s without)"
            )
        else:
            print(f"deploy, first:  not measured (the hosts already have {marker_package})")
        deploy(with_roles, hosts, roles)
        noop, changed = deploy(with_roles, hosts, roles)
        deploy(REPO / "deploy.py", hosts, roles)  # and whatever needs them, as before
    print(
        f"deploy, no-op:  {what} add {noop - baseline:5.1f} s "
        f"({noop:.1f} s vs {baseline:.1f} s without); their operations changed: {changed}"
    )
