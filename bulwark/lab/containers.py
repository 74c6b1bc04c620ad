"""The hosts: `systemd-nspawn -b` containers over the shared base, one per inventory host.

Options as the recipe measured them: without `--register=no` nspawn wants a system bus; a
network namespace path alone does not grant CAP_NET_ADMIN (nft, wireguard-go); /proc/sys is
read-only unless SYSTEMD_NSPAWN_API_VFS_WRITABLE=network. nspawn mounts the overlay in its own
mount namespace, so a killed container leaves no mount behind on the controller.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bulwark import catalogue
from bulwark.errors import BulwarkError
from bulwark.lab import cgroups, paths, processes
from bulwark.lab.plan import LabHost
from bulwark.lab.rootfs import upper_dir

_PROCESS_PREFIX = "container-"
_SSH_PORT = catalogue.service("ssh").port
# First boot generates nothing (keys are made beforehand); it takes a few seconds on 2 cores.
_BOOT_TIMEOUT = 90


def process_name(host: LabHost) -> str:
    return f"{_PROCESS_PREFIX}{host.name}"


def console_log(host: LabHost) -> Path:
    return paths.LOG_DIR / f"{host.name}.console.log"


def start(host: LabHost, base: Path) -> None:
    """Boot the host's container in the background; its console goes to a log file."""
    argv = [
        "systemd-nspawn",
        "--quiet",
        f"--directory={base}",
        f"--overlay={base}:{upper_dir(host)}:/",
        f"--machine={host.name}",
        "--register=no",
        "--keep-unit",
        "--boot",
        f"--network-namespace-path={paths.NETNS_DIR / host.netns}",
        "--capability=CAP_NET_ADMIN",
        "--console=read-only",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
    ]
    paths.LOG_DIR.mkdir(parents=True, exist_ok=True)
    procs_files = cgroups.prepare(host.name)
    with open(console_log(host), "wb") as log:
        nspawn = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=lambda: cgroups.enter(procs_files),
            env={"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network", "PATH": "/usr/sbin:/usr/bin"},
        )
    processes.record(process_name(host), nspawn.pid, f"--machine={host.name}")


def running(host: LabHost) -> int | None:
    return processes.running(process_name(host))


def init_pid(host: LabHost) -> int:
    """The container's systemd, seen from the controller: PID 1 of a pid namespace in its netns."""
    for pid in processes.in_namespaces([paths.NETNS_DIR / host.netns]):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
        if nspid.split()[-1] == "1" and len(nspid.split()) > 2:
            return pid
    raise BulwarkError(f"{host.name} is not running: `bulwark lab up` starts it")


def wait_for_sshd(hosts: Iterable[LabHost]) -> None:
    """Wait until every host's sshd sends its banner on the management address."""
    hosts = list(hosts)
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        failed = [
            host.name
            for host, ok in zip(hosts, pool.map(_wait_banner, hosts), strict=True)
            if not ok
        ]
    if failed:
        logs = ", ".join(str(console_log(host)) for host in hosts if host.name in failed)
        raise BulwarkError(f"sshd did not answer on {', '.join(failed)} (consoles: {logs})")


def _wait_banner(host: LabHost) -> bool:
    deadline = time.monotonic() + _BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if running(host) is None:
            return False
        try:
            with socket.create_connection((str(host.management.ip), _SSH_PORT), timeout=1) as conn:
                conn.settimeout(2)
                if conn.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def stop_all(grace: float = 10) -> None:
    """Halt every container the lab recorded (nspawn turns SIGTERM into a clean shutdown)."""
    names = [name for name in processes.recorded_names() if name.startswith(_PROCESS_PREFIX)]
    processes.terminate([pid for name in names if (pid := processes.running(name))], grace)
    for name in names:
        processes.forget(name)
