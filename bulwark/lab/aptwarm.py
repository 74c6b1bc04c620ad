"""Refresh every host's package lists one host at a time, before a parallel deploy.

apt-cacher-ng 3.7 refetches InRelease for each client; when several clients ask within the same
second, two downloads collide on one temporary file and one apt hangs for good (the recipe's
hang, reproduced here). Updating one host after another avoids the collision, and touching
pyinfra's update stamp lets the deploy's `apt.packages(update=True, cache_time=...)` reuse the
fresh lists instead of updating all hosts at once.
"""

from __future__ import annotations

from bulwark.errors import BulwarkError
from bulwark.lab import access
from bulwark.lab.plan import LabPlan
from bulwark.lab.system import step, succeeds

# pyinfra's apt operations read this file's mtime for `cache_time`.
PYINFRA_UPDATE_STAMP = "/var/lib/apt/periodic/update-success-stamp"
_ATTEMPTS = 3
_UPDATE_TIMEOUT = "120"


def refresh_package_lists(plan: LabPlan) -> None:
    with step(f"apt-get update on {len(plan.hosts)} hosts, one at a time"):
        for host in plan.hosts:
            command = [
                "timeout",
                _UPDATE_TIMEOUT,
                "apt-get",
                "update",
                "-qq",
                "&&",
                "touch",
                PYINFRA_UPDATE_STAMP,
            ]
            argv = access.ssh_argv(plan, host, command, "-o", "ControlMaster=no")
            if not any(succeeds(argv) for _ in range(_ATTEMPTS)):
                raise BulwarkError(f"apt-get update failed {_ATTEMPTS} times on {host.name}")
