"""Run one read-only shell script per host over OpenSSH, every host at once.

bulwark's own commands that read hosts (`status`, `drift`) connect as pyinfra would, with the
inventory's SSH settings (pyinfra host data: `ssh_hostname`, `ssh_port`, `ssh_user`, `ssh_key`,
`ssh_config_file`, `ssh_known_hosts_file`, `ssh_strict_host_key_checking`), but through the
`ssh` client: one session per host, all in parallel, the script on the remote shell's stdin.
Key authentication only (BatchMode): a password prompt would hang a monitoring run. Host keys
are checked as the inventory says (the inventories pin them: StrictHostKeyChecking=yes). An
OpenSSH ssh_config with ControlMaster (the lab's) makes a second run reuse the connection.

A host that cannot be reached, or does not answer within SESSION_TIMEOUT, is a `Session` with
an `error` (ssh's own message), never an exception.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

# Seconds ssh may take to connect (unless the inventory's ssh_config says otherwise), and a
# whole session may take before it is killed.
CONNECT_TIMEOUT = 10
SESSION_TIMEOUT = 60
# Sessions at once: every host of an inventory of ordinary size.
MAX_PARALLEL = 32


@dataclass(frozen=True)
class Session:
    """One host's run: its output, when it started and ended (epoch seconds, this machine's
    clock), and why it failed (None: the script ran to its end)."""

    host: str
    output: str
    started: float
    finished: float
    error: str | None = None


def ssh_argv(name: str, data: Mapping[str, Any]) -> list[str]:
    """The `ssh` command line reaching inventory host `name` with its pyinfra data, running
    `sh -s` (the script comes on stdin)."""
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    if config := data.get("ssh_config_file"):
        argv += ["-F", str(config)]
    strict = data.get("ssh_strict_host_key_checking")
    argv += ["-o", f"StrictHostKeyChecking={strict or 'accept-new'}"]
    if known_hosts := data.get("ssh_known_hosts_file"):
        argv += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if key := data.get("ssh_key"):
        argv += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    if user := data.get("ssh_user"):
        argv += ["-l", str(user)]
    if port := data.get("ssh_port"):
        argv += ["-p", str(port)]
    argv += ["--", str(data.get("ssh_hostname") or name), "sh", "-s"]
    return argv


def run_script(name: str, argv: Sequence[str], script: str, timeout: float) -> Session:
    """Run `argv` with `script` on stdin. Output goes to files, not pipes: an ssh that leaves a
    ControlPersist master behind keeps pipes open long after the session ended."""
    started = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=out, stderr=err)
        except OSError as error:
            return Session(name, "", started, time.time(), f"cannot run ssh: {error.strerror}")
        try:
            process.communicate(script.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return Session(
                name, _read(out), started, time.time(), f"no answer within {timeout:g} s"
            )
        finished = time.time()
        output, errors = _read(out), _read(err)
    if process.returncode == 255:
        lines = [line for line in errors.splitlines() if line.strip()]
        return Session(name, output, started, finished, lines[-1] if lines else "ssh failed")
    return Session(name, output, started, finished)


def _read(handle) -> str:
    handle.seek(0)
    return handle.read().decode(errors="replace")


def run_everywhere(
    jobs: Mapping[str, tuple[Sequence[str], str]],
    timeout: float = SESSION_TIMEOUT,
    done: Callable[[Session], None] | None = None,
) -> dict[str, Session]:
    """Run each host's (argv, script) at once; `done` is called as each one ends."""
    sessions: dict[str, Session] = {}
    if not jobs:
        return sessions
    workers = min(MAX_PARALLEL, len(jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(run_script, name, argv, script, timeout): name
            for name, (argv, script) in jobs.items()
        }
        for future in as_completed(futures):
            session = future.result()
            sessions[session.host] = session
            if done is not None:
                done(session)
    return sessions
