"""What the files role serves, measured as its clients see it from the lab's internet namespace.

  throughput  MB/s of one --megabytes (default 200) upload and download: WebDAV (PUT, GET at
              webdav.DOMAIN), FTPS (STOR, RETR, passive, PROT P), and the ceiling: the same
              file from a plain nginx (static file, TLS, the same certificate) started for the
              run on the primary web host, on a port of the passive range (open in the
              firewall already), stopped afterwards. curl moves every byte (--netrc-file, so
              no password in a command line), as bob (the platform's default quota).
  propfind    ms for one PROPFIND Depth 1 on a folder of --objects (default 5000) files, made
              on the host for the run and removed after it, and for a 1 KB PUT into it (the
              quota check counts the whole tree each time): median and p95 of --samples.

Usage: .venv/bin/python benchmarks/files.py [all|throughput|propfind] [--megabytes 200]
       [--objects 5000] [--samples 20]
Run as root on the controller, from the repository root, with the lab up and deployed. Prints
one JSON object; nothing is asserted. Every scratch file is removed, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bulwark import catalogue, pki
from bulwark.inventory import load_topology
from bulwark.lab import access, lifecycle
from bulwark.lab.accounts import lab_accounts
from bulwark.topology import Host, Topology
from roles import files

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab.py"
PART_TIMEOUT = 1800  # seconds for one client part
CEILING_PORT = catalogue.FTP_PASSIVE_PORTS[1]  # open in the firewall, free unless FTP is busy
SCRATCH = "/var/lib/bulwark/bench"  # on the web host (root's): the ceiling's nginx and its file
CURL_TIMEOUT = 900  # seconds for one transfer


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def primary_web(topology: Topology) -> Host:
    return topology.hosts_with_role("files", topology.primary_site.name)[0]


# --- client side (inside the internet namespace) -------------------------------------------------


def curl(*arguments: str) -> dict[str, float]:
    """One curl transfer; its size and seconds, as curl measured them."""
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--output", "/dev/null",
         "--write-out", '{"bytes": %{size_download}, "up": %{size_upload}, '
         '"seconds": %{time_total}}', *arguments],
        capture_output=True, text=True, timeout=CURL_TIMEOUT, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"curl failed: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout)


def megabytes_per_second(transfer: dict[str, float]) -> float:
    moved = max(transfer["bytes"], transfer["up"])
    return round(moved / 1e6 / transfer["seconds"], 1)


def client_throughput(topology: Topology, ca: str, args: argparse.Namespace) -> dict[str, Any]:
    bob = lab_accounts(topology)[1]
    user, domain = bob.address.split("@")
    tree = f"{user}.{domain}/files"
    name = f"bench-{uuid.uuid4().hex}.bin"
    webdav = f"https://webdav.{topology.domain}/{tree}/{name}"
    ftp = f"ftp://ftp.{topology.domain}/{tree}/{name}"
    ceiling = f"https://webdav.{topology.domain}:{CEILING_PORT}/ceiling.bin"
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch, "source.bin")
        with source.open("wb") as out:
            for _ in range(args.megabytes):
                out.write(os.urandom(1024**2))
        netrc = Path(scratch, "netrc")
        netrc.touch(mode=0o600)
        netrc.write_text(
            "".join(
                f"machine {label}.{topology.domain} login {bob.address} "
                f"password {bob.password.reveal()}\n"
                for label in ("webdav", "ftp")
            )
        )
        common = ["--cacert", ca, "--netrc-file", str(netrc)]
        ftps = ["--ssl-reqd", "--ftp-pasv"]
        figures: dict[str, Any] = {"megabytes": args.megabytes}
        try:
            figures["webdav_upload"] = megabytes_per_second(
                curl(*common, "--upload-file", str(source), webdav)
            )
            figures["webdav_download"] = megabytes_per_second(curl(*common, webdav))
            figures["ftps_upload"] = megabytes_per_second(
                curl(*common, *ftps, "--upload-file", str(source), f"{ftp}.ftp")
            )
            figures["ftps_download"] = megabytes_per_second(curl(*common, *ftps, f"{ftp}.ftp"))
            figures["ceiling_download"] = megabytes_per_second(curl("--cacert", ca, ceiling))
        finally:
            for url in (webdav, f"{webdav}.ftp"):
                subprocess.run(
                    ["curl", "--silent", *common, "--request", "DELETE", url],
                    capture_output=True, timeout=60, check=False,
                )  # fmt: skip
    return figures


def client_propfind(topology: Topology, ca: str, args: argparse.Namespace) -> dict[str, Any]:
    bob = lab_accounts(topology)[1]
    user, domain = bob.address.split("@")
    url = f"https://webdav.{topology.domain}/{user}.{domain}/files/{args.folder}/"
    with tempfile.TemporaryDirectory() as scratch:
        netrc = Path(scratch, "netrc")
        netrc.touch(mode=0o600)
        netrc.write_text(
            f"machine webdav.{topology.domain} login {bob.address} "
            f"password {bob.password.reveal()}\n"
        )
        seconds = []
        for _ in range(args.samples):
            transfer = curl("--cacert", ca, "--netrc-file", str(netrc), "--request", "PROPFIND",
                            "--header", "Depth: 1", url)  # fmt: skip
            seconds.append(transfer["seconds"])
        small = Path(scratch, "small.txt")
        small.write_bytes(os.urandom(1024))
        puts = [
            curl("--cacert", ca, "--netrc-file", str(netrc), "--upload-file", str(small),
                 f"{url}put-{index}.txt")["seconds"]
            for index in range(args.samples)
        ]  # fmt: skip
    return {
        "objects": args.objects,
        "samples": len(seconds),
        **access.summary_ms(seconds),
        "response_bytes": transfer["bytes"],
        # A 1 KB PUT into the same folder: the quota check counts the account's whole tree.
        "put_1kb": access.summary_ms(puts),
    }


CLIENT_PARTS = {"throughput": client_throughput, "propfind": client_propfind}


# --- controller side ------------------------------------------------------------------------------


def on_host(lab: lifecycle.Lab, host: Host, command: str) -> str:
    return access.on_host(lab.plan, host.name, command)


def in_namespace(part: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [__file__, "client", f"--part={part}", f"--megabytes={args.megabytes}",
            f"--objects={args.objects}", f"--samples={args.samples}",
            f"--folder={args.folder}"]  # fmt: skip
    return access.internet_client_json(INVENTORY, argv, PART_TIMEOUT)


CEILING_CONFIG = """pid {scratch}/nginx.pid;
error_log {scratch}/error.log;
events {{}}
http {{
    access_log off;
    sendfile on;
    server {{
        listen {address}:{port} ssl;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {scratch};
    }}
}}
"""


@contextmanager
def ceiling(lab: lifecycle.Lab, host: Host, megabytes: int) -> Iterator[None]:
    """A plain nginx serving a static file on the web host, for the run only."""
    config = CEILING_CONFIG.format(
        scratch=SCRATCH, address=host.public_address, port=CEILING_PORT,
        certificate=pki.HOST_CERT_PATH, key=pki.HOST_KEY_PATH,
    )  # fmt: skip
    try:
        on_host(lab, host, f"mkdir -p {SCRATCH} && head -c {megabytes}M /dev/urandom "
                           f"> {SCRATCH}/ceiling.bin && chmod -R a+rX {SCRATCH} && "
                           f"cat > {SCRATCH}/nginx.conf <<'EOF'\n{config}EOF\n"
                           f"nginx -c {SCRATCH}/nginx.conf")  # fmt: skip
        yield
    finally:
        on_host(lab, host, f"kill $(cat {SCRATCH}/nginx.pid) 2>/dev/null; rm -rf {SCRATCH}")


@contextmanager
def folder_of_files(lab: lifecycle.Lab, topology: Topology, count: int) -> Iterator[str]:
    """A folder of `count` small files in bob's tree at the primary, for the run only."""
    account = topology.accounts[1]
    root = topology.files_root(account)
    name = f"bench-{uuid.uuid4().hex}"
    path = f"{files.DATA_DIR}/{root}/{root}/files/{name}"
    host = primary_web(topology)
    try:
        on_host(lab, host, f"install -d -o {files.USER} -g {files.USER} -m 0700 {path} && "
                           f"cd {path} && for i in $(seq {count}); do echo $i > file-$i.txt; done"
                           f" && chown {files.USER}: {path}/*")  # fmt: skip
        yield name
    finally:
        on_host(lab, host, f"rm -rf {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", *CLIENT_PARTS, "client"])
    parser.add_argument("--part", choices=list(CLIENT_PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    topology = load_topology(INVENTORY)
    if args.what == "client":
        access.run_client_part(topology, lambda ca: CLIENT_PARTS[args.part](topology, ca, args))
        return
    lab = lifecycle.require_up(INVENTORY)
    report: dict[str, Any] = {}
    if args.what in ("all", "throughput"):
        log("--- throughput")
        with ceiling(lab, primary_web(topology), args.megabytes):
            report["throughput"] = in_namespace("throughput", args)
    if args.what in ("all", "propfind"):
        log("--- propfind")
        with folder_of_files(lab, topology, args.objects) as folder:
            args.folder = folder
            started = time.monotonic()
            report["propfind"] = in_namespace("propfind", args)
            report["propfind"]["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
