"""The firewall-friendly proxies, measured as IMAP clients see them from the internet.

  latency  ms for a session's setup (TCP, TLS with the certificate checked, the IMAP greeting)
           and for its LOGIN with an app password: median and p95 of --samples (default 200)
           sequential sessions, straight to imap.DOMAIN:993 and through imaps-proxy.DOMAIN on
           993 (the listener's own port) and on 8443 (translated by the firewall).
  hold     TLS sessions held open through the proxy at once: --connections (default 500)
           handshakes on imaps-proxy:8443, 100 at a time, each then idle for --seconds
           (default 30); how many completed and how many still answered a NOOP at the end,
           with the gateway's nginx memory and established sockets while they were held. Every
           connection is closed at the end (and by a deadline, whatever happens).

Usage: .venv/bin/python benchmarks/proxy.py [--samples 200] [--connections 500] [--seconds 30]
Run as root on the controller, from the repository root, with the lab up and deployed. Prints
one JSON object; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import ssl
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bulwark import catalogue
from bulwark.inventory import load_topology
from bulwark.lab import access, lifecycle
from bulwark.lab.accounts import lab_accounts
from bulwark.topology import Topology

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab.py"
PART_TIMEOUT = 900  # seconds for one client part
TIMEOUT = 30  # seconds for one client operation
BATCH = 100  # handshakes started at once while filling the proxy
GATEWAY_FIGURES = (
    "ss -Htn state established | wc -l; ps -C nginx -o rss= | awk '{kb += $1} END {print kb}'"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def paths(topology: Topology) -> dict[str, tuple[str, int]]:
    """Where a client connects: straight to the mail host, or through the proxy."""
    proxy = f"{catalogue.proxies()[0].names[0]}.{topology.domain}"
    return {
        "direct_993": (f"{catalogue.service('imaps').names[0]}.{topology.domain}", 993),
        "proxy_993": (proxy, 993),
        "proxy_8443": (proxy, 8443),
    }


def client_latency(topology: Topology, ca: str, args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca)
    alice = lab_accounts(topology)[0]
    report = {}
    for label, (name, port) in paths(topology).items():
        setup, login = [], []
        for _ in range(args.samples):
            started = time.perf_counter()
            with imaplib.IMAP4_SSL(name, port, ssl_context=context, timeout=TIMEOUT) as mailbox:
                connected = time.perf_counter()
                mailbox.login(alice.address, alice.password.reveal())
                login.append(time.perf_counter() - connected)
                setup.append(connected - started)
        report[label] = {"setup": access.summary_ms(setup), "login": access.summary_ms(login)}
    return report


async def _hold(name: str, port: int, context: ssl.SSLContext, args: argparse.Namespace):
    """Open the sessions, hold them, NOOP each, close all; (opened, alive)."""
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one() -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(name, port, ssl=context), TIMEOUT
        )
        await asyncio.wait_for(reader.readline(), TIMEOUT)  # the greeting
        streams.append((reader, writer))

    async def alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"a NOOP\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(b"a OK")

    for first in range(0, args.connections, BATCH):
        batch = range(first, min(first + BATCH, args.connections))
        await asyncio.gather(*(one() for _ in batch), return_exceptions=True)
    opened = len(streams)
    await asyncio.sleep(args.seconds)
    answers = await asyncio.gather(*(alive(*stream) for stream in streams), return_exceptions=True)
    for _, writer in streams:
        writer.close()
    return opened, sum(answer is True for answer in answers)


def client_hold(topology: Topology, ca: str, args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca)
    name, port = paths(topology)["proxy_8443"]
    started = time.perf_counter()
    opened, alive = asyncio.run(
        asyncio.wait_for(_hold(name, port, context, args), args.seconds + 3 * TIMEOUT + 120)
    )
    return {
        "asked": args.connections,
        "opened": opened,
        "alive_after_idle": alive,
        "seconds": round(time.perf_counter() - started, 1),
    }


CLIENT_PARTS = {"latency": client_latency, "hold": client_hold}


def in_namespace(part: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [__file__, "client", f"--part={part}", f"--samples={args.samples}",
            f"--connections={args.connections}", f"--seconds={args.seconds}"]  # fmt: skip
    return access.internet_client_json(INVENTORY, argv, PART_TIMEOUT)


def in_namespace_async(args: argparse.Namespace) -> Future:
    """The hold part started in the background, so the gateway can be read meanwhile."""
    return ThreadPoolExecutor(max_workers=1).submit(in_namespace, "hold", args)


def gateway_figures(lab: lifecycle.Lab, topology: Topology) -> dict[str, int]:
    gateway = topology.hosts_with_role("proxy", topology.primary_site.name)[0]
    sockets, rss = access.on_host(lab.plan, gateway.name, GATEWAY_FIGURES).split()
    return {"established_sockets": int(sockets), "nginx_rss_kb": int(rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "client"])
    parser.add_argument("--part", choices=list(CLIENT_PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    topology = load_topology(INVENTORY)
    if args.what == "client":
        access.run_client_part(topology, lambda ca: CLIENT_PARTS[args.part](topology, ca, args))
        return
    lab = lifecycle.require_up(INVENTORY)
    report: dict[str, Any] = {"samples": args.samples}
    log("--- latency")
    report["latency"] = in_namespace("latency", args)
    log("--- hold")
    report["gateway_before"] = gateway_figures(lab, topology)
    holding = in_namespace_async(args)
    time.sleep(args.seconds / 2 + 10)  # the sessions are open and idle by now
    report["gateway_holding"] = gateway_figures(lab, topology)
    report["hold"] = holding.result()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
