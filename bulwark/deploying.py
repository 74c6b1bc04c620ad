"""What roles need at deploy time: the validated topology, this host, secrets, and the shared
steps every role is made of (packages, checked files and the actions they need, units).
Each step declares what it will compare (bulwark.hoststate) as the run is planned, so that the
host's first operation reads the state of all of it in one round trip.

The topology is built once per pyinfra run from pyinfra's own inventory, so the deploy sees
exactly what `bulwark render` sees. deploy.py reads it here and hands it to each role's
`converge(topology, host, secrets)`: roles read nothing from globals.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api.operation import OperationMeta
from pyinfra.context import ctx_inventory
from pyinfra.operations import files as pyinfra_files

from bulwark import registry
from bulwark.hoststate import expect, host_state, sysctl_settings
from bulwark.inventory import check_vault, topology_from_inventory
from bulwark.operations import (
    UNIT_DIR,
    Activation,
    Check,
    directory_present,
    install_files,
    packages_present,
    run_pending,
    system_account,
    unit_masked,
    unit_state,
)
from bulwark.operations import (
    file_present as file_exists,
)
from bulwark.render import RenderedFile, render_role_files
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

HOSTS_FILE = "/etc/hosts"

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
    """The role's files for `host`, secrets revealed, by destination path (expected: their
    state is read with the host's first operation)."""
    module = registry.role_module(role)
    rendered = render_role_files(module, topology, host, secrets, reveal=True)
    expect(paths=[item.path for item in rendered])
    return {item.path: item for item in rendered}


def packages(role: str, names: Iterable[str], preseed: Iterable[str] = ()) -> OperationMeta:
    """Install Debian packages, the same way for every role: no recommends, retried, bounded;
    `preseed` answers their debconf questions first."""
    names = tuple(names)
    expect(packages=names)
    return packages_present(
        name=f"{role}: packages",
        packages=names,
        preseed=tuple(preseed),
        _retries=2,
        _timeout=600,
    )


def pending_actions() -> frozenset[str]:
    """The actions an earlier, interrupted run left pending on this host. Asked when the run
    executes: a marker is written only by the upload that needs its action."""
    return host_state().pending


def install(
    role: str,
    files: Iterable[RenderedFile],
    check: Check | None = None,
    then: Activation | None = None,
    stale: Callable[[], bool] | None = None,
    leaves_pending: Activation | None = None,
) -> OperationMeta:
    """Upload `files`, checked by `check` before they replace the live ones, then run `then`
    once: in this run if they changed, or in any later run until it has succeeded, or whenever
    `stale()` says the live state is not what the files say (asked when the run executes).
    `leaves_pending`, instead of `then`: a change marks that action pending for a later
    `install` whose `then` it is (files its check needs in place first, say)."""
    files = tuple(files)
    expect(paths=[item.path for item in files])
    action = then or leaves_pending
    upload = install_files(
        name=f"{role}: {', '.join(item.path for item in files)}",
        files=files,
        check=check,
        pending=action.name if action else None,
    )
    if then is not None:
        run_pending(
            name=f"{role}: {then.name}",
            activation=then,
            _if=lambda: (
                upload.did_change()
                or then.name in pending_actions()
                or (stale is not None and stale())
            ),
        )
    return upload


def install_sysctl(role: str, file: RenderedFile, apply: bool = True) -> OperationMeta:
    """Install a sysctl.d file and load it once it changed, or whenever a value it sets is not
    the live one (changed at runtime with `sysctl -w`, or a run cut short): the live values are
    read with the host's state. `apply` False: boot loads it, never a run (a container's
    kernel-wide parameters are its machine's)."""
    if not apply:
        return install(role, [file])
    settings = sysctl_settings(file.content)
    expect(sysctls=tuple(settings))
    return install(
        role,
        [file],
        then=sysctl_applied(file.path),
        stale=lambda: live_values_differ(settings),
    )


def live_values_differ(settings: Mapping[str, str]) -> bool:
    """Whether any of `settings` (sysctl key -> value) is not the host's live value."""
    live = host_state(sysctls=tuple(settings)).sysctls
    return any(live.get(key) != value for key, value in settings.items())


def service(
    name: str, unit: str, running: bool | None = True, enabled: bool | None = True
) -> OperationMeta:
    """Keep `unit` running and enabled at boot (None: leave that as it is)."""
    expect(units=(unit,))
    return unit_state(name=name, unit=unit, running=running, enabled=enabled)


def keep_running(role: str, unit: str) -> OperationMeta:
    """Keep `unit` enabled and running."""
    return service(f"{role}: {unit} running", unit)


def file_present(name: str, path: str, user: str, group: str, mode: str) -> OperationMeta:
    """Make `path` a file with this owner and mode; its contents are its daemon's."""
    expect(paths=(path,))
    return file_exists(name=name, path=path, user=user, group=group, mode=mode)


def masked(role: str, units: Iterable[str]) -> None:
    """Mask `units` (a link to /dev/null): a package installed afterwards never starts them on
    its own configuration, nor does a boot."""
    for unit in units:
        expect(paths=(posixpath.join(UNIT_DIR, unit),))
        unit_masked(name=f"{role}: {unit} masked", unit=unit)


def directory(name: str, path: str, user: str, group: str, mode: str) -> OperationMeta:
    """Make `path` a directory with this owner and mode."""
    expect(paths=(path,))
    return directory_present(name=name, path=path, user=user, group=group, mode=mode)


def system_user(role: str, user: str, home: str, shell: str) -> OperationMeta:
    """A system user with its own group, this home and login shell."""
    expect(users=(user,), groups=(user,))
    return system_account(name=f"{role}: system user {user}", user=user, home=home, shell=shell)


def pinned_address(role: str, name: str, address: str) -> OperationMeta:
    """`name` resolves to `address` in /etc/hosts: a peer reached through the VPN by the name
    its certificate carries, whatever public DNS says."""
    return pyinfra_files.line(
        name=f"{role}: {name} at {address}",
        path=HOSTS_FILE,
        line=r"^[0-9.]+\s+" + name.replace(".", r"\.") + "$",
        replace=f"{address} {name}",
        extended_regex=True,
    )


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
