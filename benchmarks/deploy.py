"""What a no-op deploy costs beside the engine's own floor, on the running lab.

Run as root from the repository root with the lab up and deployed (`make deploy-lab`):

    .venv/bin/python benchmarks/deploy.py [--runs 3]

Prints the median wall time of a no-op `pyinfra inventory/lab.py deploy.py` (every role, 0
changes), the median of a deploy of one trivial operation per host (connecting, one command,
disconnecting: what any pyinfra run costs), and their ratio. The target is a ratio of 3 or less:
a no-op costs in proportion to what changes, not to the number of files a role manages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bulwark.lab import lifecycle, paths

REPO = Path(__file__).resolve().parents[1]
PYINFRA = str(REPO / ".venv" / "bin" / "pyinfra")
INVENTORY = REPO / "inventory" / "lab.py"
ENV = {**os.environ, "BULWARK_VAULT_KEY": str(paths.STATE_DIR / "vault.key")}
# One operation per host that asks the host one thing and changes nothing.
FLOOR_DEPLOY = """\
from pyinfra.operations import server

server.shell(name="floor: one command", commands=["true"])
"""


def run_seconds(deploy: str) -> tuple[float, int]:
    """Wall time of one `pyinfra -y --json` run of `deploy`, and its changed operations."""
    started = time.monotonic()
    result = subprocess.run(
        [PYINFRA, "-y", "--json", str(INVENTORY), deploy],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"`pyinfra {deploy}` failed ({result.returncode}):\n{result.stderr[-2000:]}")
    operations = json.loads(result.stdout)["results"]["operations"]
    return elapsed, sum(1 for operation in operations if operation["success"])


def median_seconds(deploy: str, runs: int) -> tuple[float, list[int]]:
    samples = [run_seconds(deploy) for _ in range(runs)]
    return statistics.median(seconds for seconds, _ in samples), [changed for _, changed in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lifecycle.require_up(INVENTORY)
    with tempfile.TemporaryDirectory() as directory:
        floor_deploy = Path(directory) / "floor.py"
        floor_deploy.write_text(FLOOR_DEPLOY)
        floor, _ = median_seconds(str(floor_deploy), args.runs)
    noop, changed = median_seconds("deploy.py", args.runs)
    if any(changed):
        print(f"warning: the no-op runs changed {changed} operations: the lab was not converged")
    print(f"one trivial operation per host (floor)  {floor:6.2f} s  (median of {args.runs})")
    print(f"no-op deploy, every role                {noop:6.2f} s  (median of {args.runs})")
    print(f"ratio                                   {noop / floor:6.2f}x (target <= 3)")


if __name__ == "__main__":
    main()
