"""How long `bulwark status` and `bulwark drift` take on the whole lab (the issue's target: 5 s
each), measured as an operator runs them.

  cold   the first run after the lab's SSH masters are closed: six SSH handshakes at once, then
         the checks (what an operator's first command of the day costs);
  warm   the median and max of --runs further runs, the masters (ControlPersist 60 s) open.

Usage: .venv/bin/python benchmarks/live.py [--runs 5]
Run as root from the repository root with the lab up and deployed. Read-only on every host;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bulwark.lab import access, lifecycle, paths
from bulwark.vault import KEY_ENV

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab.py"
BULWARK = str(Path(sys.executable).with_name("bulwark"))


def seconds(command: str) -> float:
    """Wall time of one `bulwark COMMAND` of the lab; a run that cannot finish stops here."""
    env = {**os.environ, KEY_ENV: str(paths.STATE_DIR / "vault.key")}
    started = time.monotonic()
    result = subprocess.run(
        [BULWARK, command, str(INVENTORY)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    # A host it could not reach is answered at once: that time says nothing of the checks.
    if result.returncode not in (0, 1, 3) or "unreachable" in result.stdout:
        sys.exit(f"bulwark {command} failed:\n{(result.stdout + result.stderr)[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    lifecycle.require_up(INVENTORY)
    for command in ("status", "drift"):
        access.end_masters()
        cold = seconds(command)
        warm = [seconds(command) for _ in range(args.runs)]
        print(
            f"{command}: cold {cold:.2f} s; warm median {statistics.median(warm):.2f} s, "
            f"max {max(warm):.2f} s over {args.runs} runs"
        )


if __name__ == "__main__":
    main()
