"""The lab's authoritative DNS server: knotd in the internet namespace, serving the zone
`bulwark dns` renders (bulwark.dns) with the lab's own SOA and NS, and the outside world's mail
as a real remote server has it: its domain (OUTSIDE_DOMAIN) with an MX, whose name (OUTSIDE_MX)
is the internet namespace's address, and SPF naming that address; and the reverse zone of the
lab's public network, where that address's PTR names it back. The e2e tests' mail from outside
then comes from a server the platform's spam filter finds well configured, as it would a
legitimate one, and not from an unknown address.

The end-to-end clients then resolve host names, SRV, TLSA and TXT records as real clients and
remote MTAs do: the internet namespace's resolv.conf names this server, and its hosts file
keeps localhost alone. The zone comes from the vault (TLSA needs the certificates), so it is
served after `make lab-secrets`, and served again (knotd restarted) whenever it changes.
`bulwark lab down` stops it with everything else in the lab's namespaces.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable

from bulwark.dns import TTL, Record, render_zone
from bulwark.errors import BulwarkError
from bulwark.lab import network, paths, processes
from bulwark.lab.hostsfile import render_hosts_file
from bulwark.lab.plan import INTERNET_NETNS, LabPlan
from bulwark.topology import Topology

PROCESS = "knotd"
DNS_DIR = paths.RUN_DIR / "dns"
CONFIG = DNS_DIR / "knot.conf"
LOG = paths.LOG_DIR / "knotd.log"
# The user knotd drops to (Debian's knot package makes it).
USER = "knot"
# The name the lab's server answers as (NS and SOA), at the internet namespace's address.
SERVER_LABEL = "ns"
# The domain the internet namespace sends mail from (RFC 2606's, nobody's on the platform), and
# the name its mail server greets with.
OUTSIDE_DOMAIN = "example.org"
OUTSIDE_MX = f"mx.{OUTSIDE_DOMAIN}"
# Seconds knotd may take to answer its first query.
START_SECONDS = 15


def zone_file(domain: str) -> str:
    return str(DNS_DIR / f"{domain}.zone")


def render_lab_zone(topology: Topology, plan: LabPlan, records: Iterable[Record]) -> str:
    """The whole zone: the lab's SOA, NS and the server's address, then the platform's records.
    The serial is fixed: knotd is restarted on a new zone and never transfers it."""
    return "\n".join(_head(topology.domain, plan)) + "\n" + render_zone(topology, records)


def _head(domain: str, plan: LabPlan) -> list[str]:
    """A zone's SOA and NS: the lab's server, which answers as `ns.DOMAIN` at the internet
    namespace's address."""
    server = f"{SERVER_LABEL}.{domain}."
    return [
        f"{domain}.\t{TTL}\tIN\tSOA\t{server} hostmaster.{domain}. 1 3600 600 604800 300",
        f"{domain}.\t{TTL}\tIN\tNS\t{server}",
        f"{server}\t{TTL}\tIN\tA\t{plan.internet.ip}",
    ]


def render_outside_zone(plan: LabPlan) -> str:
    """OUTSIDE_DOMAIN's zone: its server's address, its MX (the internet namespace) and SPF."""
    domain, address = OUTSIDE_DOMAIN, plan.internet.ip
    lines = [
        *_head(domain, plan),
        f"{OUTSIDE_MX}.\t{TTL}\tIN\tA\t{address}",
        f"{domain}.\t{TTL}\tIN\tMX\t10 {OUTSIDE_MX}.",
        f'{domain}.\t{TTL}\tIN\tTXT\t"v=spf1 ip4:{address} -all"',
    ]
    return "\n".join(lines) + "\n"


def reverse_zone_name(plan: LabPlan) -> str:
    """The in-addr.arpa zone of the lab's public /24, where the internet address is."""
    return ".".join(reversed(str(plan.internet.ip).split(".")[:3])) + ".in-addr.arpa"


def render_reverse_zone(plan: LabPlan) -> str:
    """The PTR of the internet namespace's address: OUTSIDE_MX, which resolves back to it."""
    zone = reverse_zone_name(plan)
    last = str(plan.internet.ip).rsplit(".", 1)[1]
    lines = [
        *_head(zone, plan),
        f"{last}.{zone}.\t{TTL}\tIN\tPTR\t{OUTSIDE_MX}.",
    ]
    return "\n".join(lines) + "\n"


def render_config(topology: Topology, plan: LabPlan) -> str:
    """knotd's configuration: the platform's zone, the outside's and the reverse one, each read
    from its file and never written back."""
    return "\n".join(
        [
            "server:",
            f"    listen: {plan.internet.ip}@53",
            f"    rundir: {DNS_DIR}",
            f"    user: {USER}:{USER}",
            "database:",
            f"    storage: {DNS_DIR}/db",
            "log:",
            "  - target: stdout",
            "    any: info",
            "template:",
            "  - id: default",
            f"    storage: {DNS_DIR}",
            "    zonefile-sync: -1",
            "    zonefile-load: whole",
            "    journal-content: none",
            "    semantic-checks: on",
            "zone:",
            *(
                line
                for domain in (topology.domain, OUTSIDE_DOMAIN, reverse_zone_name(plan))
                for line in (f"  - domain: {domain}", f"    file: {zone_file(domain)}")
            ),
            "",
        ]
    )


def serve(topology: Topology, plan: LabPlan, records: Iterable[Record]) -> str:
    """Write the zone and configuration, start knotd (or have it reload them), wait until it
    answers, then point the internet namespace's resolver at it. Returns what it did."""
    DNS_DIR.mkdir(parents=True, exist_ok=True)
    (DNS_DIR / "db").mkdir(exist_ok=True)
    zone = render_lab_zone(topology, plan, records)
    with open(zone_file(topology.domain), "w") as out:
        out.write(zone)
    for name, text in (
        (OUTSIDE_DOMAIN, render_outside_zone(plan)),
        (reverse_zone_name(plan), render_reverse_zone(plan)),
    ):
        with open(zone_file(name), "w") as out:
            out.write(text)
    CONFIG.write_text(render_config(topology, plan))
    for path in (DNS_DIR, DNS_DIR / "db"):
        shutil.chown(path, USER, USER)
    # Restarted rather than reloaded: the zone keeps serial 1, which a reload would not
    # take as a change.
    running = processes.running(PROCESS)
    if running:
        processes.terminate([running], grace=5)
    _start()
    done = "restarted" if running else "started"
    _wait_until_it_answers(topology.domain, plan)
    resolver = paths.NETNS_ETC / INTERNET_NETNS / "resolv.conf"
    resolver.parent.mkdir(parents=True, exist_ok=True)
    resolver.write_text(f"nameserver {plan.internet.ip}\noptions timeout:2 attempts:2\n")
    network.write_hosts_file(render_hosts_file(topology, names=False))
    records_count = sum(1 for line in zone.splitlines() if line and not line.startswith(";"))
    return f"knotd {done}: {records_count} records of {topology.domain} at {plan.internet.ip}:53"


def _start() -> None:
    paths.LOG_DIR.mkdir(parents=True, exist_ok=True)
    argv = ["ip", "netns", "exec", INTERNET_NETNS, "knotd", "-c", str(CONFIG)]
    with open(LOG, "ab") as log:
        daemon = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    processes.record(PROCESS, daemon.pid, str(CONFIG))


def _wait_until_it_answers(domain: str, plan: LabPlan) -> None:
    """The zone's SOA from inside the internet namespace, as its clients will ask."""
    argv = ["ip", "netns", "exec", INTERNET_NETNS, "kdig", "+short", "+time=1", "+retry=0",
            f"@{plan.internet.ip}", domain, "SOA"]  # fmt: skip
    deadline = time.monotonic() + START_SECONDS
    while True:
        answer = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        if answer.strip():
            return
        if time.monotonic() > deadline:
            raise BulwarkError(f"knotd does not answer for {domain}: see {LOG}")
        time.sleep(0.2)
