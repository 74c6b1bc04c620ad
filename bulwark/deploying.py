"""What roles need at deploy time: the validated topology, this host, secrets, and the shared
steps every role is made of (packages, checked files and the actions they need, units).

The topology is built once per pyinfra run from pyinfra's own inventory, so the deploy sees
exactly what `bulwark render` sees. deploy.py reads it here and hands it to each role's
`converge(topology, host, secrets)`: roles read nothing from globals.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api import State
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_inventory, ctx_state
from pyinfra.operations import apt, systemd

from bulwark import registry
from bulwark.inventory import check_vault, topology_from_inventory
from bulwark.operations import Activation, Check, PendingActions, install_files, run_pending
from bulwark.render import RenderedFile, render_role_files
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

_TOPOLOGIES: dict[int, Topology] = {}


def deploy_topology() -> Topology:
    """The topology of the running pyinfra inventory (validated once, then cached)."""
    inventory = ctx_inventory.get()
    key = id(inventory)
    if key not in _TOPOLOGIES:
        _TOPOLOGIES[key] = topology_from_inventory(inventory)
    return _TOPOLOGIES[key]


def deploy_host() -> Host:
    """The topology's view of the host pyinfra is preparing operations for."""
    return deploy_topology().host(current_host.name)


_SECRETS: dict[int, SecretStore] = {}


def deploy_secrets() -> SecretStore:
    """The inventory's vault, opened once per run; every secret the topology needs must be in it.

    The run's check (bulwark.inventory) has already refused a bad vault before connecting.
    """
    topology = deploy_topology()
    key = id(topology)
    if key not in _SECRETS:
        _SECRETS[key] = check_vault(topology)
    return _SECRETS[key]


_ANNOUNCED: set[int] = set()


def announce_not_deployed(topology: Topology) -> None:
    """Name the roles the inventory asks for that have no module yet, once per run."""
    if id(topology) in _ANNOUNCED:
        return
    _ANNOUNCED.add(id(topology))
    if waiting := registry.describe_not_deployed(topology):
        logger.warning(waiting)


def render_for_deploy(
    role: str, topology: Topology, host: Host, secrets: SecretStore
) -> dict[str, RenderedFile]:
    """The role's files for `host`, secrets revealed, by destination path."""
    module = registry.role_module(role)
    rendered = render_role_files(module, topology, host, secrets, reveal=True)
    return {item.path: item for item in rendered}


def packages(role: str, names: Iterable[str]) -> OperationMeta:
    """Install Debian packages, the same way for every role: no recommends, retried, bounded."""
    return apt.packages(
        name=f"{role}: packages",
        packages=list(names),
        no_recommends=True,
        _retries=2,
        _timeout=600,
    )


# Pending actions found on each host when this run planned it: state -> host name -> names.
_PENDING: weakref.WeakKeyDictionary[State, dict[str, frozenset[str]]] = weakref.WeakKeyDictionary()


def pending_actions() -> frozenset[str]:
    """The actions an earlier, interrupted run left pending on this host (one fact per run)."""
    found = _PENDING.setdefault(ctx_state.get(), {})
    if current_host.name not in found:
        found[current_host.name] = frozenset(current_host.get_fact(PendingActions))
    return found[current_host.name]


def install(
    role: str,
    files: Iterable[RenderedFile],
    check: Check | None = None,
    then: Activation | None = None,
) -> OperationMeta:
    """Upload `files`, checked by `check` before they replace the live ones, then run `then`
    once: in this run if they changed, or in any later run until it has succeeded."""
    files = tuple(files)
    upload = install_files(
        name=f"{role}: {', '.join(item.path for item in files)}",
        files=files,
        check=check,
        pending=then.name if then else None,
    )
    if then is not None:
        pending = pending_actions()
        run_pending(
            name=f"{role}: {then.name}",
            activation=then,
            _if=lambda: then.name in pending or upload.did_change(),
        )
    return upload


def keep_running(role: str, unit: str) -> OperationMeta:
    """Keep `unit` enabled and running."""
    return systemd.service(name=f"{role}: {unit} running", service=unit, running=True, enabled=True)


def reloaded(unit: str) -> Activation:
    """Reload `unit` (start it if it is not running)."""
    return Activation(f"{unit}-reload", (("systemctl", "reload-or-restart", unit),))


def restarted(unit: str, unit_files_changed: bool = False) -> Activation:
    """Restart `unit`; first make systemd reread unit files when those are what changed."""
    reread = (("systemctl", "daemon-reload"),) if unit_files_changed else ()
    return Activation(f"{unit}-restart", (*reread, ("systemctl", "restart", unit)))


def units_reread() -> Activation:
    """Make systemd reread unit files (a drop-in that changes no running process)."""
    return Activation("systemd-daemon-reload", (("systemctl", "daemon-reload"),))


def sysctl_applied(path: str) -> Activation:
    """Load a sysctl file now (boot loads it through systemd-sysctl)."""
    name = path.rsplit("/", 1)[-1]
    return Activation(f"sysctl-{name}", (("sysctl", "-q", "-p", path),))
