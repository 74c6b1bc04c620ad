"""The lab's apt-cacher-ng: its own config, cache and process, separate from the packaged service.

The packaged service needs systemd as PID 1 and has an empty Debian backend list. The lab runs
the daemon itself as the apt-cacher-ng user, bound to loopback (for the base image build) and
the management bridge (for the containers), with `FreshIndexMaxAge` so that containers updating
at once share one fresh index instead of refetching it (the recipe's hang).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

from bulwark.errors import BulwarkError
from bulwark.lab import aptsources, paths, processes
from bulwark.lab.plan import LabPlan

PROCESS = "apt-cacher-ng"
USER = "apt-cacher-ng"
SUPPORT_DIR = "/usr/lib/apt-cacher-ng"
# One day: an index fetched once serves every container's `apt-get update` of the run.
FRESH_INDEX_MAX_AGE = 86400
LOG_DIR = paths.LOG_DIR / "apt-cacher-ng"


def render_config(plan: LabPlan, sources: list[aptsources.AptSource]) -> str:
    """acng.conf for the lab's daemon (read with `-c` from the lab's runtime directory)."""
    security = sorted({s.uri.rstrip("/") + "/" for s in sources if s.is_security})
    secdeb = "security.debian.org deb.debian.org/debian-security /debian-security"
    lines = [
        f"CacheDir: {paths.APT_CACHE}",
        f"LogDir: {LOG_DIR}",
        f"SupportDir: {SUPPORT_DIR}",
        f"SocketPath: {paths.APT_CACHER_RUN}/socket",
        f"Port: {plan.apt_proxy_port}",
        f"BindAddress: 127.0.0.1 {plan.bridge.ip}",
        "ForeGround: 1",
        f"FreshIndexMaxAge: {FRESH_INDEX_MAX_AGE}",
        "ExThreshold: 4",
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian",
    ]
    if security:
        lines.append(f"Remap-secdeb: {secdeb} ; {' '.join(security)}")
    return "\n".join(lines) + "\n"


def start(plan: LabPlan, sources: list[aptsources.AptSource]) -> None:
    """Start the daemon unless it already runs; wait until it answers on loopback."""
    if processes.running(PROCESS):
        return
    if _answers(plan.apt_proxy_port):
        raise BulwarkError(
            f"something else listens on 127.0.0.1:{plan.apt_proxy_port} (the packaged "
            "apt-cacher-ng?): stop it, the lab runs its own"
        )
    conf_dir = paths.APT_CACHER_RUN
    for directory in (conf_dir, paths.APT_CACHE, LOG_DIR):
        directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, USER, USER)
    (conf_dir / "acng.conf").write_text(render_config(plan, sources))
    (conf_dir / "backends_debian").write_text(aptsources.mirror_url(sources) + "\n")
    argv = [
        "setpriv",
        f"--reuid={USER}",
        f"--regid={USER}",
        "--init-groups",
        "/usr/sbin/apt-cacher-ng",
        "-c",
        str(conf_dir),
    ]
    with open(LOG_DIR / "daemon.log", "ab") as log:
        daemon = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    processes.record(PROCESS, daemon.pid, str(conf_dir))
    deadline = time.monotonic() + 15
    while not _answers(plan.apt_proxy_port):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise BulwarkError(f"apt-cacher-ng did not start: see {LOG_DIR}/daemon.log")
        time.sleep(0.1)


def stop() -> None:
    pid = processes.running(PROCESS)
    if pid:
        processes.terminate([pid], grace=5)
    processes.forget(PROCESS)
    shutil.rmtree(paths.APT_CACHER_RUN, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
