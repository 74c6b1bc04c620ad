"""What the directory serves, measured as mail clients see it from the lab's internet namespace.

  refresh  seconds for the refresh to rebuild the address book after --contacts (default
           10,000) contacts appear in alice's Default book at the primary web host (written
           straight into Radicale's storage for the run, as CardDAV would leave them), then
           after --changed (default 1,000) of them change: `systemctl start` of the refresh,
           timed on the host, and the refresh's own figure from its journal line.
  search   ms for one Thunderbird-style substring lookup (`(|(cn=X*)(mail=X*)(sn=X*))`, X a
           three-letter prefix of a contact's name) over that book, on one bound connection,
           as alice: median and p95 of --samples (default 200), and the entries returned.
  binds    successful binds/s (each its own TLS connection, Argon2id checked by slapd) from
           --threads (default 4) for --seconds (default 10), and one bind's latency.

Usage: .venv/bin/python benchmarks/directory.py [--contacts 10000] [--changed 1000]
       [--samples 200] [--threads 4] [--seconds 10]
Run as root on the controller, from the repository root, with the lab up and deployed. Prints
one JSON object; nothing is asserted. The scratch contacts are removed afterwards, whatever
happened, and the address book rebuilt without them; the refresh's timer is stopped meanwhile.
"""

from __future__ import annotations

import argparse
import json
import random
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ldap3 import SUBTREE, Connection, Server, Tls

from bulwark import catalogue, davstore
from bulwark.inventory import load_topology
from bulwark.lab import access, lifecycle
from bulwark.lab.accounts import lab_accounts
from bulwark.topology import Host, Topology
from roles import directory

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab.py"
PART_TIMEOUT = 900  # seconds for one client part
HOST_TIMEOUT = 900  # seconds for one command on a host (writing 10,000 files, a refresh)
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "te", "vi", "zo", "ba", "de", "fu")

# Writes (or rewrites, with `tag` in each name) the scratch contacts into a book, as its owner.
WRITE_CONTACTS = """
import os, pwd, random, sys
book, prefix, count, tag, owner = sys.argv[1:6]
count = int(count)
syllables = {syllables!r}
user = pwd.getpwnam(owner)
rng = random.Random(7)
for index in range(count):
    first = "".join(rng.choice(syllables) for _ in range(3)).title()
    last = "".join(rng.choice(syllables) for _ in range(4)).title()
    path = os.path.join(book, f"{{prefix}}{{index:05d}}.vcf")
    with open(path, "w") as card:
        card.write("BEGIN:VCARD\\r\\nVERSION:3.0\\r\\n"
                   f"UID:{{prefix}}{{index}}\\r\\nFN:{{first}} {{last}}{{tag}}\\r\\n"
                   f"N:{{last}};{{first}};;;\\r\\nEMAIL:{{first}}.{{last}}{{index}}@example.org\\r\\n"
                   f"TEL;TYPE=WORK:+1 555 {{index:05d}}\\r\\nORG:Bench Works\\r\\nEND:VCARD\\r\\n")
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o640)
"""
TIMED_REFRESH = (
    "s=$(date +%s.%N); systemctl start {unit}; e=$(date +%s.%N); "
    "journalctl -q -o cat -u {unit} -n 5 | grep 'dc=AddressBook: ' | tail -1; echo \"$s $e\""
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def primary_web(topology: Topology) -> Host:
    return topology.hosts_with_role("directory", topology.primary_site.name)[0]


# --- client side (inside the internet namespace) -------------------------------------------------


def server(topology: Topology, ca: str) -> Server:
    tls = Tls(ca_certs_file=ca, validate=ssl.CERT_REQUIRED)
    name = f"{catalogue.service('ldaps').names[0]}.{topology.domain}"
    return Server(name, port=catalogue.service("ldaps").port, use_ssl=True, tls=tls)


def client_search(topology: Topology, ca: str, args: argparse.Namespace) -> dict[str, Any]:
    alice = lab_accounts(topology)[0]
    connection = Connection(
        server(topology, ca), f"cn={alice.address},dc=User", alice.password.reveal()
    )
    assert connection.bind(), connection.result
    rng = random.Random(11)  # noqa: S311 - which names to look up, repeatably; no secret
    seconds, returned, limited = [], [], 0
    for _ in range(args.samples):
        text = rng.choice(SYLLABLES).title() + rng.choice(SYLLABLES)[0]
        ldap_filter = f"(|(cn={text}*)(mail={text}*)(sn={text}*))"
        started = time.perf_counter()
        connection.search("dc=AddressBook", ldap_filter, SUBTREE, attributes=["cn", "mail"])
        seconds.append(time.perf_counter() - started)
        returned.append(len(connection.entries))
        limited += connection.result["result"] == 4  # sizeLimitExceeded
    return {
        **access.summary_ms(seconds),
        "entries_returned_median": sorted(returned)[len(returned) // 2],
        "size_limited": limited,
    }


def client_binds(topology: Topology, ca: str, args: argparse.Namespace) -> dict[str, Any]:
    alice = lab_accounts(topology)[0]
    dn, password = f"cn={alice.address},dc=User", alice.password.reveal()
    target = server(topology, ca)
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def worker() -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            started = time.perf_counter()
            connection = Connection(target, dn, password)
            ok = connection.bind()
            connection.unbind()
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "threads": args.threads,
        "seconds": round(elapsed, 1),
        "binds": len(latencies),
        "binds_per_second": round(len(latencies) / elapsed, 1),
        "failed": failures,
        "latency": access.summary_ms(latencies),
    }


CLIENT_PARTS = {"search": client_search, "binds": client_binds}


# --- controller side ------------------------------------------------------------------------------


def in_namespace(part: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [__file__, "client", f"--part={part}", f"--samples={args.samples}",
            f"--threads={args.threads}", f"--seconds={args.seconds}"]  # fmt: skip
    return access.internet_client_json(INVENTORY, argv, PART_TIMEOUT)


def on_host(lab: lifecycle.Lab, host: Host, command: str, stdin: str | None = None) -> str:
    return access.on_host(lab.plan, host.name, command, stdin=stdin, timeout=HOST_TIMEOUT)


def write_contacts(lab: lifecycle.Lab, host: Host, book: str, prefix: str, count: int, tag: str):
    script = WRITE_CONTACTS.format(syllables=SYLLABLES)
    on_host(lab, host, f"python3 - {book} {prefix} {count} '{tag}' {davstore.USER}", script)


def timed_refresh(lab: lifecycle.Lab, host: Host) -> dict[str, Any]:
    """The refresh run to its end on the host: wall seconds, and its own journal line."""
    lines = on_host(lab, host, TIMED_REFRESH.format(unit=directory.REFRESH_UNIT)).splitlines()
    started, ended = (float(value) for value in lines[-1].split())
    return {"seconds": round(ended - started, 2), "journal": lines[-2] if len(lines) > 1 else ""}


@contextmanager
def scratch_contacts(lab: lifecycle.Lab, topology: Topology, count: int) -> Iterator[str]:
    """`count` contacts in alice's Default book at the primary, for the run only; the prefix
    of their file names."""
    host = primary_web(topology)
    book = davstore.default_book(topology, topology.accounts[0])
    prefix = f"bench-{uuid.uuid4().hex[:12]}-"
    # The timer stays off meanwhile: a refresh of its own, amid the writing, would be timed.
    on_host(lab, host, f"systemctl stop {directory.REFRESH_TIMER}")
    try:
        yield prefix
    finally:
        on_host(lab, host, f"find {book} -maxdepth 1 -name '{prefix}*' -delete")
        timed_refresh(lab, host)
        on_host(lab, host, f"systemctl start {directory.REFRESH_TIMER}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "client"])
    parser.add_argument("--part", choices=list(CLIENT_PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    topology = load_topology(INVENTORY)
    if args.what == "client":
        access.run_client_part(topology, lambda ca: CLIENT_PARTS[args.part](topology, ca, args))
        return
    lab = lifecycle.require_up(INVENTORY)
    host = primary_web(topology)
    book = davstore.default_book(topology, topology.accounts[0])
    report: dict[str, Any] = {"contacts": args.contacts, "changed": args.changed}
    with scratch_contacts(lab, topology, args.contacts) as prefix:
        log(f"--- refresh: {args.contacts} new contacts")
        write_contacts(lab, host, book, prefix, args.contacts, "")
        report["refresh_new"] = timed_refresh(lab, host)
        log(f"--- refresh: {args.changed} changed contacts")
        write_contacts(lab, host, book, prefix, args.changed, " II")
        report["refresh_changed"] = timed_refresh(lab, host)
        log("--- search")
        report["search"] = in_namespace("search", args)
        log("--- binds")
        report["binds"] = in_namespace("binds", args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
