"""Backups measured in the lab: the primary mail store's hourly archive with --messages (default
10,000) more messages, then with 1 % more, the restore of those messages, and a drill.

  first        seconds for the archive that first holds the messages (written straight into a
               scratch folder of alice's Maildir for the run, --size bytes each, random text as
               mail bodies are: compressible, never deduplicated), and MB/s of their bytes.
  incremental  seconds for the next archive after 1 % more messages arrive.
  restore      seconds for `bulwark backup restore --account alice --what mail` after the
               scratch folder's messages are deleted, as the operator runs it, and how many
               came back.
  drill        seconds for `bulwark backup drill` (every repository checked, its newest archive
               extracted and counted).

Usage: .venv/bin/python benchmarks/backup.py [--messages 10000] [--size 4096]
Run as root on the controller, from the repository root, with the lab up and deployed. Prints
one JSON object; nothing is asserted. The scratch folder is removed afterwards, whatever
happened (it stays in the archives until the prune's 7 days).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bulwark import account_data, mail
from bulwark.inventory import load_topology
from bulwark.lab import access, lifecycle
from bulwark.topology import Host
from roles import backup as role

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab.py"
HOST_TIMEOUT = 1800  # seconds for one command on a host (writing 10,000 messages, a backup)
FOLDER = ".BenchBackup"  # Maildir++ name of the scratch folder

# Writes `count` messages from `start` into a Maildir++ folder, as the vmail user.
WRITE_MESSAGES = """
import os, pwd, random, string, sys
folder, start, count, size, owner = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
user = pwd.getpwnam(owner)
for part in ("", "/cur", "/new", "/tmp"):
    os.makedirs(folder + part, mode=0o700, exist_ok=True)
    os.chown(folder + part, user.pw_uid, user.pw_gid)
open(folder + "/maildirfolder", "a").close()
rng = random.Random(start)
words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
         for _ in range(2000)]
for index in range(start, start + count):
    body = []
    while sum(len(word) + 1 for word in body) < size:
        body.append(rng.choice(words))
    text = (f"From: bench@example.org\\r\\nTo: alice\\r\\nSubject: bench {index}\\r\\n"
            f"Message-ID: <bench-{index}@example.org>\\r\\n\\r\\n" + " ".join(body) + "\\r\\n")
    path = f"{folder}/cur/1700000000.B{index}.bench,S={len(text)}:2,S"
    with open(path, "w") as message:
        message.write(text)
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o600)
"""
TIMED_BACKUP = (
    "{wait}; s=$(date +%s.%N); systemctl start {unit}; e=$(date +%s.%N); "
    "id=$(systemctl show --property InvocationID --value {unit}); "
    'journalctl -q -o cat _SYSTEMD_INVOCATION_ID="$id" | sed -n "/^{{/,/^}}/p"; echo "$s $e"'
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def on_host(lab: lifecycle.Lab, host: Host, command: str, stdin: str | None = None) -> str:
    return access.on_host(lab.plan, host.name, command, stdin=stdin, timeout=HOST_TIMEOUT)


def write_messages(lab, host: Host, folder: str, start: int, count: int, size: int) -> None:
    command = f"python3 - {folder} {start} {count} {size} {mail.VMAIL_USER}"
    on_host(lab, host, command, WRITE_MESSAGES)


def timed_backup(lab, host: Host) -> dict[str, Any]:
    command = TIMED_BACKUP.format(unit=role.CLIENT_UNIT, wait=role.run_finished(role.CLIENT_UNIT))
    output = on_host(lab, host, command).strip().splitlines()
    started, ended = (float(value) for value in output[-1].split())
    report = json.loads("\n".join(output[:-1]))
    return {"seconds": round(ended - started, 2), **report}


def operator(*argv: str) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / ".venv/bin/bulwark"), *argv], cwd=REPO, capture_output=True, text=True,
        timeout=HOST_TIMEOUT, check=True,
    )  # fmt: skip
    return round(time.monotonic() - started, 2), result.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    lab = lifecycle.require_up(INVENTORY)
    topology = load_topology(INVENTORY)
    host = topology.hosts_with_role("mailstore", topology.primary_site.name)[0]
    alice = topology.accounts[0]
    home = account_data.account_paths(topology, alice, "mail")[0]
    folder = f"{home}/{mail.MAILDIR}/{FOLDER}"
    scratch_bytes = args.messages * args.size
    result: dict[str, Any] = {"messages": args.messages, "message_bytes": args.size}
    try:
        log(f"writing {args.messages} messages into {folder} on {host.name}")
        write_messages(lab, host, folder, 0, args.messages, args.size)
        on_host(lab, host, f"doveadm force-resync -u {alice.address(topology.domain)} '*'")
        first = timed_backup(lab, host)
        first["mb_per_s"] = round(scratch_bytes / 1e6 / first["seconds"], 2)
        result["first"] = first
        more = max(1, args.messages // 100)
        write_messages(lab, host, folder, args.messages, more, args.size)
        result["incremental"] = timed_backup(lab, host) | {"messages_added": more}
        on_host(lab, host, f"find {folder}/cur -type f -delete")
        seconds, said = operator("backup", "restore", str(INVENTORY), "--account", alice.user,
                                 "--what", "mail")  # fmt: skip
        result["restore"] = {"seconds": seconds, "said": said}
        seconds, said = operator("backup", "drill", str(INVENTORY))
        result["drill"] = {"seconds": seconds, "repositories": len(said.splitlines())}
    finally:
        on_host(lab, host, f"rm -rf {folder}")
        on_host(lab, host, f"doveadm force-resync -u {alice.address(topology.domain)} '*'")
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
