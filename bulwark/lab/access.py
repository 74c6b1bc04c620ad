"""SSH from the controller into the lab: the client key, the config, pinned host keys.

pyinfra, testinfra and `bulwark lab ssh` all read the same three files (paths from the
inventory's `ssh_config_file`, `ssh_known_hosts_file` and `ssh_key`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bulwark.errors import BulwarkError
from bulwark.lab import paths, rootfs
from bulwark.lab.plan import INTERNET_NETNS, LabHost, LabPlan
from bulwark.lab.sshconfig import render_known_hosts, render_ssh_config
from bulwark.lab.system import installed, run, succeeds
from bulwark.lab.trust import lab_ca_file
from bulwark.topology import Topology

# Seconds one command on a lab host (`on_host`) may take.
HOST_COMMAND_TIMEOUT = 600


def ensure_client_key(plan: LabPlan) -> str:
    """The lab's own key pair (made once per lab); returns the public key line."""
    key = Path(plan.ssh.key)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.parent.chmod(0o700)
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bulwark-lab", "-f", str(key)])
    return key.with_suffix(".pub").read_text()


def write_client_files(plan: LabPlan) -> None:
    """known_hosts from the host keys in the upper layers, and the ssh_config naming them."""
    keys = {host.name: rootfs.host_public_keys(host) for host in plan.hosts}
    Path(plan.ssh.known_hosts_file).write_text(render_known_hosts(plan, keys))
    paths.SSH_CONTROL_DIR.mkdir(parents=True, exist_ok=True)
    paths.SSH_CONTROL_DIR.chmod(0o700)
    config = render_ssh_config(plan, str(paths.SSH_CONTROL_DIR))
    Path(plan.ssh.config_file).write_text(config)


def ssh_argv(plan: LabPlan, host: LabHost, command: Sequence[str], *options: str) -> list[str]:
    return ["ssh", "-F", plan.ssh.config_file, *options, host.name, *command]


def verify(plan: LabPlan) -> None:
    """Log in to every host through the config with its pinned key: what pyinfra will do."""
    with ThreadPoolExecutor(max_workers=len(plan.hosts)) as pool:
        results = pool.map(
            lambda host: succeeds(ssh_argv(plan, host, ["true"], "-o", "ControlMaster=no")),
            plan.hosts,
        )
        failed = [host.name for host, ok in zip(plan.hosts, results, strict=True) if not ok]
    if failed:
        raise BulwarkError(f"SSH through {plan.ssh.config_file} fails for {', '.join(failed)}")


def end_masters() -> None:
    """End the ControlPersist masters left by ssh and testinfra; the next connection opens
    its own (their directory stays, as the lab's SSH config needs it)."""
    sockets = paths.SSH_CONTROL_DIR.glob("*") if installed("ssh") else []
    for socket in sockets:
        run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "lab"], check=False)


def close_masters() -> None:
    """End the masters (processes the lab caused) and remove their directory: the lab is going
    away."""
    end_masters()
    shutil.rmtree(paths.SSH_CONTROL_DIR, ignore_errors=True)


def on_host(
    plan: LabPlan,
    host_name: str,
    command: str,
    stdin: str | None = None,
    timeout: float = HOST_COMMAND_TIMEOUT,
) -> str:
    """`command` through the lab's SSH as root on `host_name`; its stdout. Raises on failure
    (benchmarks set up and clean away their scratch data this way)."""
    argv = ssh_argv(plan, plan.host(host_name), [command])
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise BulwarkError(f"{host_name}: `{command}` failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def run_client_part(topology: Topology, part: Callable[[str], dict]) -> None:
    """A benchmark's client part, inside the lab's internet namespace only: `part(CA file)`'s
    figures printed as one JSON line, which `internet_client_json` reads back."""
    if not os.path.samefile("/proc/self/ns/net", paths.NETNS_DIR / INTERNET_NETNS):
        sys.exit("the client measurements run in the lab's internet namespace")
    with lab_ca_file(topology) as ca:
        print(json.dumps(part(ca)))


def internet_client_json(inventory: Path, argv: Sequence[str], timeout: float) -> dict:
    """Run `argv` (this Python and its arguments) in the lab's internet namespace, as a
    benchmark's client part; the JSON object its last line of output holds, or
    {"error": ...} saying what went wrong (its stderr is the caller's own)."""
    command = [str(Path(sys.executable).parent / "bulwark"), "lab", "internet",
               "-i", str(inventory), "--", sys.executable, *argv]  # fmt: skip
    try:
        result = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"killed after {timeout} s (scratch data may be left)"}
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return {"error": f"exit status {result.returncode} (its stderr is above)"}
    return json.loads(lines[-1])


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """A benchmark's latencies as its report gives them: count, median, nearest-rank p95, max
    (milliseconds)."""
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }
