"""`lab up`, `down`, `status` and the check every harness makes before it connects.

`up` on a healthy lab changes nothing; on anything less (a killed container, leftovers of an
unclean stop) it removes every remnant and builds the lab afresh. `down` works from what it
finds on the machine, not from the inventory, so it cleans up whatever a crash left.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyinfra.api import Inventory

from bulwark.errors import BulwarkError
from bulwark.inventory import load_inventory, topology_from_inventory
from bulwark.lab import (
    access,
    aptcache,
    aptsources,
    cgroups,
    containers,
    guard,
    hostpkgs,
    network,
    paths,
    processes,
    rootfs,
)
from bulwark.lab.hostsfile import render_hosts_file
from bulwark.lab.plan import MANAGEMENT_BRIDGE, NETNS_PREFIX, LabPlan, build_plan
from bulwark.lab.system import require_root, run, say, step
from bulwark.topology import Topology


@dataclass(frozen=True)
class Lab:
    """The inventory's topology and the lab plan made from it."""

    inventory: Path
    topology: Topology
    plan: LabPlan


def load(inventory: str | Path, loaded: Inventory | None = None) -> Lab:
    """The lab of the inventory file at `inventory`; `loaded` is that file already loaded by
    pyinfra (it is executed once, never again)."""
    path = Path(inventory).resolve()
    if loaded is None:
        loaded = load_inventory(path)
    topology = topology_from_inventory(loaded, str(path))
    return Lab(path, topology, build_plan(topology, next(iter(loaded)).data.dict()))


def problems(lab: Lab) -> list[str]:
    """What is missing for the lab to count as up; empty when it is."""
    found = []
    state = _read_state()
    if state is None:
        return [f"no state file {paths.STATE_FILE}"]
    if state.get("inventory") != str(lab.inventory):
        found.append(f"the lab was built from {state.get('inventory')}, not {lab.inventory}")
    if not processes.running(aptcache.PROCESS):
        found.append("apt-cacher-ng is not running")
    namespaces = set(network.lab_namespaces())
    found += [f"namespace {ns} is missing" for ns in lab.plan.namespaces if ns not in namespaces]
    if MANAGEMENT_BRIDGE not in network.lab_links():
        found.append(f"bridge {MANAGEMENT_BRIDGE} is missing")
    if not guard.present():
        found.append(f"nft table {guard.TABLE} is missing")
    routes = network.lab_routes()
    found += [
        f"blackhole {lab_range} is missing"
        for lab_range in lab.plan.ranges
        if not any(route.startswith(f"blackhole {lab_range} ") for route in routes)
    ]
    found += [
        f"{host.name} is not running" for host in lab.plan.hosts if containers.running(host) is None
    ]
    return found


def require_up(inventory: str | Path, loaded: Inventory | None = None) -> Lab:
    """What every harness calls first: refuse to connect anywhere unless the lab is whole.

    Also the lab inventory's check before pyinfra connects (`loaded`: see `load`).
    """
    lab = load(inventory, loaded)
    missing = problems(lab)
    if missing:
        raise BulwarkError(f"the lab is not up ({'; '.join(missing)}): run `bulwark lab up`")
    return lab


@contextmanager
def _exclusive() -> Iterator[None]:
    """One `up` or `down` at a time: both rearrange the same namespaces and routes."""
    paths.STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = os.open(paths.STATE_DIR, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise BulwarkError("another `bulwark lab up` or `down` is running") from None
    try:
        yield
    finally:
        os.close(lock)


def up(inventory: str | Path) -> Lab:
    require_root()
    lab = load(inventory)
    with _exclusive():
        return _up(lab)


def _up(lab: Lab) -> Lab:
    if not problems(lab):
        say("lab: already up, nothing to do")
        return lab
    if _leftovers():
        with step("removing what an earlier lab left behind"):
            _teardown()
    started = time.monotonic()
    hostpkgs.ensure()
    plan = lab.plan
    network.check_no_overlap(plan)
    sources = aptsources.controller_sources()
    with step("blackhole routes, management bridge, apt-cacher-ng"):
        network.add_blackholes(plan)
        guard.apply(plan)
        network.add_management_bridge(plan)
        aptcache.start(plan, sources)
    base = rootfs.ensure_base(plan, sources)
    with step("site LANs, WAN, internet namespace"):
        network.add_segments(plan)
        network.write_hosts_file(render_hosts_file(lab.topology))
    with step("host identities (machine-id, SSH host keys)"):
        _prepare_hosts(lab)
    _write_state(lab, base)
    with step(f"booting {len(plan.hosts)} containers until sshd answers"):
        for host in plan.hosts:
            containers.start(host, base)
        containers.wait_for_sshd(plan.hosts)
        access.verify(plan)
    say(f"lab: up in {time.monotonic() - started:.1f} s")
    return lab


def _prepare_hosts(lab: Lab) -> None:
    plan = lab.plan
    public_key = access.ensure_client_key(plan)
    jobs = [rootfs.prepare_upper(host, lab.topology.apt_proxy, public_key) for host in plan.hosts]
    for host, job in zip(plan.hosts, jobs, strict=True):
        _, error = job.communicate()
        if job.returncode != 0:
            raise BulwarkError(f"ssh-keygen for {host.name} failed: {error.decode().strip()}")
    access.write_client_files(plan)


def down() -> None:
    require_root()
    with _exclusive(), step("stopping the lab"):
        _teardown()


def _teardown() -> None:
    """Everything the lab made, found on the machine; caches under /var/cache stay."""
    state = _read_state() or {}
    containers.stop_all()
    netns_files = [paths.NETNS_DIR / name for name in network.lab_namespaces()]
    processes.terminate(processes.in_namespaces(netns_files), grace=2)
    cgroups.remove_all()
    access.close_masters()
    aptcache.stop()
    network.remove_all()
    guard.remove()
    for mountpoint in _lab_mounts():
        run(["umount", "--lazy", mountpoint], check=False)
    ssh_files = [Path(file) for file in state.get("ssh_files", [])]
    for file in ssh_files:
        file.unlink(missing_ok=True)
    for directory in {file.parent for file in ssh_files}:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    shutil.rmtree(paths.HOSTS_DIR, ignore_errors=True)
    shutil.rmtree(paths.RUN_DIR, ignore_errors=True)
    paths.STATE_FILE.unlink(missing_ok=True)


def _leftovers() -> list[str]:
    """Anything of a lab on the machine: state, processes, namespaces, links or routes."""
    found = [str(paths.STATE_FILE)] if paths.STATE_FILE.exists() else []
    found += processes.recorded_names() if paths.PID_DIR.exists() else []
    found += network.lab_namespaces() + network.lab_links() + network.lab_routes()
    found += [f"nft table {guard.TABLE}"] if guard.present() else []
    found += cgroups.present()
    return found + _lab_mounts()


def _lab_mounts() -> list[str]:
    """Mounts under the lab's directories (none while nspawn owns the overlays), deepest first."""
    roots = (
        str(paths.RUN_DIR),
        str(paths.STATE_DIR),
        str(paths.CACHE_DIR),
        str(paths.NETNS_DIR / NETNS_PREFIX),
    )
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    points = {line.split()[4] for line in mountinfo}
    return sorted((point for point in points if point.startswith(roots)), reverse=True)


def _write_state(lab: Lab, base: Path) -> None:
    ssh = lab.plan.ssh
    state = {
        "inventory": str(lab.inventory),
        "base": str(base),
        "ssh_files": [ssh.config_file, ssh.known_hosts_file, ssh.key, f"{ssh.key}.pub"],
    }
    paths.STATE_DIR.mkdir(parents=True, exist_ok=True)
    paths.STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")


def _read_state() -> dict | None:
    try:
        return json.loads(paths.STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def status(inventory: str | Path) -> list[tuple[str, str]]:
    """(component, what it is doing) for the operator's `lab status`."""
    lab = load(inventory)
    state = _read_state() or {}
    rows = [("base image", state.get("base", "none (the lab is down)"))]
    rows.append(("apt-cacher-ng", _pid_text(processes.running(aptcache.PROCESS))))
    namespaces = set(network.lab_namespaces())
    rows += [(ns, "present" if ns in namespaces else "missing") for ns in lab.plan.namespaces]
    rows.append(("routes", f"{len(network.lab_routes())} lab routes (blackholes, management)"))
    for host in lab.plan.hosts:
        pid = containers.running(host)
        where = f"mgmt {host.management.ip}, lan {host.lan.ip}"
        if host.public:
            where += f", public {host.public.ip}"
        roles = ", ".join(lab.topology.host(host.name).roles)
        rows.append((host.name, f"{_pid_text(pid)}; roles {roles}; {where}"))
    missing = problems(lab)
    rows.append(("lab", "up" if not missing else "; ".join(missing)))
    return rows


def _pid_text(pid: int | None) -> str:
    return f"running (pid {pid})" if pid else "not running"
