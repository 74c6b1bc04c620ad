"""What the mail roles cost and deliver in the lab.

  deploy       seconds the mx and mailstore roles add to a deploy of the mail hosts: the full
               deploy.py minus the same hosts deployed without those two roles. "first" only
               when the hosts have no Postfix yet (a fresh lab); "no-op" always, with the number
               of mail operations that changed something (must be 0).
  replication  seconds from submitting a message on 587 in the primary site to it being
               visible over IMAP in the other site (median and max of --samples).
  throughput   messages/second accepted on 587 by --workers authenticated sessions sending to
               a local account until --messages in total or --seconds, whichever comes first.
  filtering    that throughput with rspamd as deployed (every message signed and checked),
               then with Postfix's milter taken out on the primary site's mx hosts for the run
               (their main.cf saved to /run first and put back, Postfix reloaded, in every
               case): what signing and filtering cost a submission. Not part of "all".

Usage: .venv/bin/python benchmarks/mail.py [all|deploy|clients|filtering] [--samples 10]
       [--workers 4] [--messages 2000] [--seconds 30]
Deploys take the lab's deploy lock; the client measurements re-run this script inside the lab's
internet namespace (`bulwark lab internet`) and delete the messages they sent. Every loop is
bounded in count and time; nothing is asserted.
"""

from __future__ import annotations

import argparse
import email.message
import imaplib
import os
import smtplib
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from bulwark import catalogue
from bulwark.inventory import load_topology
from bulwark.lab import access, lifecycle, paths
from bulwark.lab.accounts import LabAccount, lab_accounts
from bulwark.lab.plan import INTERNET_NETNS
from bulwark.lab.rolecost import measure_role_deploys
from bulwark.lab.trust import lab_ca_file
from bulwark.topology import Topology

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab.py"
BIN = Path(sys.executable).parent
MAIL_ROLES = ("mx", "mailstore")
MAIN_CF = "/etc/postfix/main.cf"
SAVED_MAIN_CF = "/run/bulwark-bench-main.cf"
# Postfix without its milter: nothing signed, nothing checked.
NO_MILTER = "postconf -e smtpd_milters= non_smtpd_milters= && postfix reload"
# Every subject of one run starts with this (a run deletes exactly its own messages).
SUBJECT_PREFIX = f"bulwark-bench-{uuid.uuid4().hex[:8]}-"
TIMEOUT = 30


# --- clients (inside the internet namespace) ----------------------------------------------------


def _client_name(topology: Topology, service: str, site: str) -> str:
    return f"{catalogue.service(service).names[0]}.{site}.{topology.domain}"


def _submit_session(topology: Topology, context: ssl.SSLContext, account: LabAccount, site: str):
    smtp = smtplib.SMTP(
        _client_name(topology, "submission", site),
        catalogue.service("submission").port,
        timeout=TIMEOUT,
    )
    smtp.starttls(context=context)
    smtp.login(account.address, account.password.reveal())
    return smtp


def _imap_session(topology: Topology, context: ssl.SSLContext, account: LabAccount, site: str):
    mailbox = imaplib.IMAP4_SSL(
        _client_name(topology, "imaps", site),
        catalogue.service("imaps").port,
        ssl_context=context,
        timeout=TIMEOUT,
    )
    mailbox.login(account.address, account.password.reveal())
    mailbox.select("INBOX")
    return mailbox


def _message(sender: str, recipient: str) -> email.message.EmailMessage:
    mail = email.message.EmailMessage()
    mail["From"], mail["To"] = sender, recipient
    mail["Subject"] = f"{SUBJECT_PREFIX}{uuid.uuid4().hex}"
    mail.set_content("benchmark message\n")
    return mail


def measure_replication(topology, context, sender, recipient, samples: int) -> None:
    primary = topology.primary_site.name
    other = topology.peer_sites(primary)[0].name
    delays = []
    smtp = _submit_session(topology, context, sender, primary)
    mailbox = _imap_session(topology, context, recipient, other)
    try:
        for _ in range(samples):
            mail = _message(sender.address, recipient.address)
            started = time.monotonic()
            smtp.send_message(mail)
            deadline = started + 120
            while time.monotonic() < deadline:
                mailbox.noop()
                if mailbox.search(None, "HEADER", "Subject", mail["Subject"])[1][0]:
                    delays.append(time.monotonic() - started)
                    break
                time.sleep(0.02)
    finally:
        smtp.quit()
        mailbox.logout()
    lost = samples - len(delays)
    print(
        f"replication:    {primary} submission -> {other} IMAP: median "
        f"{statistics.median(delays):.2f} s, max {max(delays):.2f} s over {len(delays)} "
        f"messages" + (f" ({lost} not seen within 120 s)" if lost else "")
    )


def measure_throughput(topology, context, sender, recipient, args) -> int:
    """Sends from `args.workers` sessions until `args.messages` or `args.seconds`; returns how
    many messages 587 accepted."""
    primary = topology.primary_site.name
    lock = threading.Lock()
    counts = {"claimed": 0, "accepted": 0}
    deadline = time.monotonic() + args.seconds

    def worker() -> None:
        smtp = _submit_session(topology, context, sender, primary)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if counts["claimed"] >= args.messages:
                        return
                    counts["claimed"] += 1
                smtp.send_message(_message(sender.address, recipient.address))
                with lock:
                    counts["accepted"] += 1
        finally:
            smtp.quit()

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    accepted = counts["accepted"]
    print(
        f"throughput:     {accepted} messages accepted on 587 in {elapsed:.1f} s by "
        f"{args.workers} sessions: {accepted / elapsed:.1f} messages/s"
    )
    return accepted


def _delete_benchmark_messages(topology, context, account, expected: int) -> None:
    """Once all `expected` benchmark messages have arrived (or after two minutes), delete them;
    the deletion replicates to the other site."""
    mailbox = _imap_session(topology, context, account, topology.primary_site.name)
    try:
        deadline = time.monotonic() + 120
        while True:
            mailbox.noop()
            found = mailbox.search(None, "HEADER", "Subject", SUBJECT_PREFIX)[1][0].split()
            if len(found) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for number in found:
            mailbox.store(number, "+FLAGS", "\\Deleted")
        mailbox.expunge()
    finally:
        mailbox.logout()


def measure_clients(topology: Topology, args) -> None:
    if not os.path.samefile("/proc/self/ns/net", paths.NETNS_DIR / INTERNET_NETNS):
        sys.exit("the client measurements run in the lab's internet namespace")
    with lab_ca_file(topology) as ca:
        context = ssl.create_default_context(cafile=ca)
    sender, recipient = lab_accounts(topology)[:2]
    sent = 0
    try:
        if args.samples:
            measure_replication(topology, context, sender, recipient, args.samples)
        sent = measure_throughput(topology, context, sender, recipient, args)
    finally:
        _delete_benchmark_messages(topology, context, recipient, args.samples + sent)


def run_clients(args, samples: int) -> None:
    """The client measurements, in the lab's internet namespace."""
    options = [f"--samples={samples}"] + [
        f"--{name}={getattr(args, name)}" for name in ("workers", "messages", "seconds")
    ]
    subprocess.run(
        [str(BIN / "bulwark"), "lab", "internet", "-i", str(INVENTORY), "--",
         sys.executable, __file__, "clients", *options],
        check=True,
    )  # fmt: skip


def measure_filtering(lab: lifecycle.Lab, topology: Topology, args) -> None:
    """Submission throughput as deployed, then with the milter out on the primary's mx hosts
    (put back however the run ends)."""
    primary = topology.primary_site.name
    hosts = [host.name for host in topology.hosts_with_role("mx", primary)]
    print("filtering on (rspamd signs and checks every message):")
    run_clients(args, samples=0)
    for name in hosts:
        access.on_host(lab.plan, name, f"cp -p {MAIN_CF} {SAVED_MAIN_CF} && {NO_MILTER}")
    try:
        print("filtering off (no milter):")
        run_clients(args, samples=0)
    finally:
        for name in hosts:
            access.on_host(
                lab.plan,
                name,
                f"cp -p {SAVED_MAIN_CF} {MAIN_CF} && rm {SAVED_MAIN_CF} && postfix reload",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="?", default="all", choices=["all", "deploy", "clients", "filtering"]
    )
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    topology = load_topology(INVENTORY)
    if args.what == "clients":
        measure_clients(topology, args)
        return
    lab = lifecycle.require_up(INVENTORY)
    if args.what == "filtering":
        measure_filtering(lab, topology, args)
        return
    if args.what in ("all", "deploy"):
        measure_role_deploys(topology, MAIL_ROLES, "postfix")
    if args.what == "all":
        run_clients(args, args.samples)


if __name__ == "__main__":
    main()
