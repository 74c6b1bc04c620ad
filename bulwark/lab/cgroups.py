"""A cgroup subtree per container, made by the lab because no systemd on the controller does.

With `--keep-unit` and no systemd as PID 1, nspawn leaves its container in the caller's cgroup:
six containers' systemds then share one tree and remove each other's unit cgroups (seen as
`status=219/CGROUP`, "Failed to attach to cgroup /system.slice/X.service: No such file or
directory"). Each nspawn therefore starts inside `bulwark-lab/HOST` of every hierarchy systemd
uses: cgroup2 and the v1 `name=systemd` one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LAB_CGROUP = "bulwark-lab"


def _hierarchies() -> list[Path]:
    return systemd_hierarchies(Path("/proc/self/mountinfo").read_text())


def systemd_hierarchies(mountinfo: str) -> list[Path]:
    """Mount points of cgroup2 and of the v1 hierarchy named systemd, from /proc/PID/mountinfo."""
    found = []
    for line in mountinfo.splitlines():
        mount, _, filesystem = line.partition(" - ")
        fstype, _source, options = filesystem.split()[:3]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            found.append(Path(mount.split()[4]))
    return found


def prepare(name: str) -> list[Path]:
    """Create the host's cgroups; returns their `cgroup.procs` files for `enter`."""
    groups = [hierarchy / LAB_CGROUP / name for hierarchy in _hierarchies()]
    for group in groups:
        group.mkdir(parents=True, exist_ok=True)
    return [group / "cgroup.procs" for group in groups]


def enter(procs_files: list[Path]) -> None:
    """Move the calling process into the prepared cgroups (run in the child before exec)."""
    for procs in procs_files:
        procs.write_text(str(os.getpid()))


def present() -> list[str]:
    return [str(root) for h in _hierarchies() if (root := h / LAB_CGROUP).exists()]


def remove_all() -> None:
    """Remove the lab's cgroups bottom-up; each is empty once its processes are gone."""
    for root in present():
        for directory, _, _ in os.walk(root, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
