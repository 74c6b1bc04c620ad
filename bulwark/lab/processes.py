"""The processes the lab starts: pid files checked against the command line, never by name alone.

A pid file only counts while /proc/PID/cmdline still holds the marker recorded with it, so a
recycled pid is never signalled. Processes left inside the lab's namespaces after an unclean
stop (a container's init whose nspawn was killed) are found by their network namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from bulwark.lab import paths


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def record(name: str, pid: int, marker: str) -> None:
    """Remember that `pid` runs the lab's `name`; `marker` must appear in its argv."""
    paths.PID_DIR.mkdir(parents=True, exist_ok=True)
    (paths.PID_DIR / f"{name}.json").write_text(json.dumps({"pid": pid, "marker": marker}))


def running(name: str) -> int | None:
    """The pid recorded for `name` if that process still runs what was recorded."""
    try:
        entry = json.loads((paths.PID_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    pid = int(entry["pid"])
    return pid if entry["marker"] in _cmdline(pid) else None


def forget(name: str) -> None:
    (paths.PID_DIR / f"{name}.json").unlink(missing_ok=True)


def recorded_names() -> list[str]:
    return sorted(path.stem for path in paths.PID_DIR.glob("*.json"))


def in_namespaces(netns_files: Iterable[Path]) -> list[int]:
    """Pids whose network namespace is one of `netns_files` (`ip netns` bind mounts)."""
    wanted = set()
    for path in netns_files:
        try:
            stat = path.stat()
        except OSError:
            continue
        wanted.add((stat.st_dev, stat.st_ino))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "ns" / "net").stat()
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in wanted:
            found.append(int(entry.name))
    return found


def terminate(pids: Iterable[int], grace: float) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL whatever is left."""
    remaining = set(pids)
    _signal(remaining, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = {pid for pid in remaining if _alive(pid)}
    _signal(remaining, signal.SIGKILL)


def _signal(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie has no cmdline left to signal)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
