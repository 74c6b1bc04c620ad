"""Commands on lab hosts from the internet namespace, for the e2e tests that need a host's view
(its journal, its ban set, a connection from its LAN address). They run through the container's
own systemd, as `bulwark lab exec` does: the internet namespace has no route to the hosts' SSH.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bulwark.lab import containers, lifecycle, paths
from bulwark.topology import Host, Topology
from bulwark.vault import KEY_ENV

LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"
HOST_COMMAND_TIMEOUT = 60


def on_host(
    topology: Topology,
    host: Host,
    argv: list[str],
    stdin: str = "",
    timeout: float = HOST_COMMAND_TIMEOUT,
) -> str:
    """Run `argv` in the lab container `host` (its systemd, its capabilities); its stdout.
    `timeout`: for a command that may wait for another to finish (a backup host's lock)."""
    plan = lifecycle.load(LAB_INVENTORY).plan
    pid = containers.init_pid(plan.host(host.name))
    result = subprocess.run(
        ["nsenter", f"--target={pid}", "--all", "systemd-run", "--quiet", "--wait", "--collect",
         "--pipe", "--", *argv],
        input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"{host.name}: {argv[:3]} failed: {result.stderr.strip()}")
    return result.stdout


def operator_netns() -> str:
    """The network namespace the run was started from (the controller's, where the hosts' SSH
    is): that of the nearest ancestor process outside the internet namespace."""
    own = os.stat("/proc/self/ns/net").st_ino
    pid = os.getppid()
    while pid > 1:
        namespace = f"/proc/{pid}/ns/net"
        if os.stat(namespace).st_ino != own:
            return namespace
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    raise AssertionError("no ancestor of this run is outside the internet namespace")


def as_operator(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600):
    """`argv` (a program of the checkout's venv: bulwark, pyinfra) run as the operator runs it:
    from the controller's network namespace, where the hosts' SSH is, with the lab's vault key."""
    repo = LAB_INVENTORY.parents[1]
    return subprocess.run(
        [
            "nsenter",
            f"--net={operator_netns()}",
            "--",
            str(repo / ".venv/bin" / argv[0]),
            *argv[1:],
        ],
        cwd=repo,
        env={**os.environ, KEY_ENV: str(paths.STATE_DIR / "vault.key"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
