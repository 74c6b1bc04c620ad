"""How long the lab takes: base build, `lab up`, deploy, no-op re-run, `lab down`, `make test`.

Run as root from the repository root, with the lab down (it is taken down first and left down):

    .venv/bin/python benchmarks/lab.py [--cold] [--make-test]

Prints one line per measurement. Targets: `lab up` from a cached base <= 15 s, a no-op re-run
<= 8 s with 0 changes. The base build goes through the lab's apt cache; `--cold` empties it
first, as on a fresh machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bulwark.lab import paths

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
INVENTORY = "inventory/lab.py"
DEPLOY_ENV = {"BULWARK_VAULT_KEY": str(paths.STATE_DIR / "vault.key")}


def timed(label: str, argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run `argv` from the repository root, print its wall time, return its stdout."""
    started = time.monotonic()
    result = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"{label}: `{' '.join(argv)}` failed ({result.returncode})")
    print(f"{label:<42} {elapsed:7.1f} s", flush=True)
    return result.stdout


def changed_operations(pyinfra_json: str) -> int:
    operations = json.loads(pyinfra_json)["results"]["operations"]
    return sum(1 for operation in operations if operation["success"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="empty the apt cache first")
    parser.add_argument("--make-test", action="store_true", help="also time `make test`")
    args = parser.parse_args()
    bulwark = str(BIN / "bulwark")
    deploy = [str(BIN / "pyinfra"), "-y", "--json", INVENTORY, "deploy.py"]

    timed("lab down (before)", [bulwark, "lab", "down"])
    shutil.rmtree(paths.ROOTFS_CACHE, ignore_errors=True)
    if args.cold:
        shutil.rmtree(paths.APT_CACHE, ignore_errors=True)
    cache = "cold" if args.cold else "warm"
    timed(f"lab up, base built ({cache} apt cache)", [bulwark, "lab", "up"])
    timed("lab down", [bulwark, "lab", "down"])
    timed("lab up from the cached base, sshd up", [bulwark, "lab", "up"])
    timed("secrets", ["make", "--no-print-directory", "lab-secrets"])
    timed("apt-get update, one host at a time", [bulwark, "lab", "apt-update"])
    first = timed("first deploy", deploy, DEPLOY_ENV)
    print(f"{'  operations changed':<42} {changed_operations(first):7d}")
    again = timed("no-op re-run", deploy, DEPLOY_ENV)
    print(f"{'  operations changed':<42} {changed_operations(again):7d}")
    timed("lab down", [bulwark, "lab", "down"])
    if args.make_test:
        timed("make test", ["make", "--no-print-directory", "test"])


if __name__ == "__main__":
    main()
