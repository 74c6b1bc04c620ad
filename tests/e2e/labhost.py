"""Commands on lab hosts from the internet namespace, for the e2e tests that need a host's view
(its journal, its ban set, a connection from its LAN address). They run through the container's
own systemd, as `bulwark lab exec` does: the internet namespace has no route to the hosts' SSH.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bulwark.lab import containers, lifecycle
from bulwark.topology import Host, Topology

LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventory" / "lab.py"
HOST_COMMAND_TIMEOUT = 60


def on_host(topology: Topology, host: Host, argv: list[str], stdin: str = "") -> str:
    """Run `argv` in the lab container `host` (its systemd, its capabilities); its stdout."""
    plan = lifecycle.load(LAB_INVENTORY).plan
    pid = containers.init_pid(plan.host(host.name))
    result = subprocess.run(
        ["nsenter", f"--target={pid}", "--all", "systemd-run", "--quiet", "--wait", "--collect",
         "--pipe", "--", *argv],
        input=stdin, capture_output=True, text=True, timeout=HOST_COMMAND_TIMEOUT, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"{host.name}: {argv[:3]} failed: {result.stderr.strip()}")
    return result.stdout
