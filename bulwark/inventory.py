"""The pyinfra inventory as bulwark reads it, and the check every pyinfra run passes first.

Loading: `load_inventory` executes an inventory file and its `group_data/` once, exactly as the
pyinfra CLI does; `topology_from_inventory` turns a loaded pyinfra inventory into a validated
`Topology`. Neither ever executes the file a second time.

The guard. pyinfra 3.10 executes `group_data/*.py` beside the inventory file for every inventory,
after the file itself and before it connects, whatever the file says; `inventory/group_data/all.py`
calls `check_before_connecting()`, so no inventory in `inventory/` needs a line of its own (an
inventory may add a check: the lab's makes sure its containers are up). The check runs when pyinfra
has built the inventory (file, group data, `--data`) and before it connects: it validates the
topology, each `--limit` pattern and, for deploys, `only_roles` and the vault (key, file, every
secret). A failure prints the problem report or one line naming the field or file, and exits 2.

bulwark's own commands that connect (`bulwark status`, `bulwark drift`) load the inventory with
`load_checked_run`, which collects the checks the inventory arms (the lab's) instead of wrapping
pyinfra, and pass the same `check_run` before they connect.

How it hooks in: pyinfra's CLI has no hook between loading the inventory and connecting. Its
`State.init(inventory, config, initial_limit)` is the one call in between (and it resets the
state's callback handlers, so a `host_before_connect` callback registered earlier is lost); the
check wraps that method of the run's own `State` object. Outside the pyinfra CLI (bulwark's own
commands, tests) `check_before_connecting` does nothing.
"""

from __future__ import annotations

import functools
import sys
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import click
import pyinfra
from pyinfra.api import Inventory, State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_state

from bulwark.errors import BulwarkError, did_you_mean
from bulwark.platform_secrets import missing_secrets
from bulwark.registry import parse_only_roles
from bulwark.topology import Topology
from bulwark.validation import InventoryHost, Problem, TopologyError, build_topology
from bulwark.vault import Vault, open_vault

# Platform-wide fields: every host carries them (through its site group); they must agree.
PLATFORM_FIELDS: tuple[str, ...] = (
    "domain",
    "accounts",
    "admin_networks",
    "apt_proxy",
    "vault_file",
    "shared_addressbook",
    "files_quota",
    "content_origin",
    "caa_issuers",
    "postmaster",
    "dkim_selectors",
    "resolvers",
    "spam_test_patterns",
    "closed_account_retention_days",
)

# A check an inventory adds to the run's: called with the inventory's path as given to pyinfra
# and the loaded pyinfra inventory; raises BulwarkError to stop the run.
ConnectCheck = Callable[[str, Inventory], object]


def topology_from_inventory(inventory: Inventory, source: str = "inventory") -> Topology:
    """Build the topology from a loaded pyinfra inventory (at deploy or render time)."""
    records = [
        InventoryHost(host.name, host.data.dict(), tuple(sorted(host.groups))) for host in inventory
    ]
    problems: list[Problem] = []
    platform: dict[str, Any] = {}
    for field_name in PLATFORM_FIELDS:
        seen = {repr(record.data.get(field_name)) for record in records}
        if len(seen) > 1:
            problems.append(
                Problem(
                    "platform",
                    field_name,
                    f"hosts disagree: {', '.join(sorted(seen))}; set it once for the whole "
                    "inventory",
                )
            )
        platform[field_name] = records[0].data.get(field_name) if records else None
    for host in inventory:
        site_groups = sorted(
            {group for group in host.groups if "site" in inventory.get_group_data(group)}
        )
        if len(site_groups) > 1:
            problems.append(
                Problem(host.name, "site", f"listed in site groups {' and '.join(site_groups)}")
            )
    try:
        topology = build_topology(records, platform, source, duplicate_host_names(inventory))
    except TopologyError as error:
        raise TopologyError(source, [*error.problems, *problems]) from None
    if problems:
        raise TopologyError(source, problems)
    return topology


def duplicate_host_names(inventory: Inventory) -> list[str]:
    """Hosts listed twice within one group. pyinfra silently merges them, but records the group
    once per listing in the host's groups, which is how they are found (no second execution)."""
    return sorted(host.name for host in inventory if len(host.groups) != len(set(host.groups)))


def load_inventory(path: str | Path) -> Inventory:
    """Load a pyinfra inventory file with its `group_data/`, exactly as the pyinfra CLI does.

    An inventory that does not compile or raises is a `BulwarkError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"inventory file not found: {path}")
    make_inventory, external_error = _pyinfra_inventory_loader()
    with ctx_state.use(State()):
        try:
            return make_inventory(str(path), cwd=str(path.parent.resolve()))
        except SyntaxError as error:
            raise BulwarkError(
                f"{error.filename}, line {error.lineno}: {error.msg}: the inventory cannot load"
            ) from None
        except external_error as error:
            raise BulwarkError(_load_failure(error.filename, error.exception)) from None
        except PyinfraError as error:
            raise BulwarkError(f"{path}: the inventory cannot load: {error}") from None


def _load_failure(filename: str, cause: BaseException) -> str:
    """`FILE, line N: ValueError: ...` for an exception raised by an inventory's own code."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(cause.__traceback__)
        if frame.filename == filename
    ]
    where = f"{filename}, line {lines[-1]}" if lines else filename
    return f"{where}: {type(cause).__name__}: {cause}: the inventory cannot load"


def _pyinfra_inventory_loader() -> tuple[Callable[..., Inventory], type[Exception]]:
    """pyinfra's own inventory loader and the error it wraps user code's exceptions in, without
    letting `pyinfra_cli` monkey-patch this process.

    Importing `pyinfra_cli` runs gevent's `monkey.patch_all()`, which bulwark's own commands do
    not want (it makes `shutil.rmtree` leak a descriptor per directory after a subprocess). Under
    the pyinfra CLI the patch has already happened and this changes nothing.
    """
    if "pyinfra_cli" not in sys.modules:
        from gevent import monkey

        patch_all = monkey.patch_all
        monkey.patch_all = lambda *args, **kwargs: None
        try:
            import pyinfra_cli  # noqa: F401
        finally:
            monkey.patch_all = patch_all
    from pyinfra_cli.exceptions import UnexpectedExternalError
    from pyinfra_cli.inventory import make_inventory

    return make_inventory, UnexpectedExternalError


def load_topology(path: str | Path) -> Topology:
    """Load and validate the inventory at `path`; raise `TopologyError` listing every problem."""
    return topology_from_inventory(load_inventory(path), str(path))


# --- the check before pyinfra connects --------------------------------------------------------


@dataclass(frozen=True)
class PyinfraRun:
    """What the operator asked pyinfra for, as far as bulwark checks it."""

    source: str  # the inventory as given on the command line
    limit: tuple[str, ...] = ()  # --limit patterns: host names, globs or group names
    deploying: bool = False  # running deploy files, not facts, exec or debug-inventory

    @classmethod
    def from_cli(cls, params: dict[str, Any]) -> PyinfraRun:
        """From the pyinfra command's parsed parameters (`click.Context.params`)."""
        operations = params.get("operations") or ()
        return cls(
            source=str(params.get("inventory")),
            limit=tuple(params.get("limit") or ()),
            deploying=bool(operations) and all(op.endswith(".py") for op in operations),
        )


def check_run(
    run: PyinfraRun, inventory: Inventory, extra_checks: Iterable[ConnectCheck] = ()
) -> Topology:
    """Everything bulwark refuses before pyinfra connects; raises TopologyError or BulwarkError.

    The topology, then each `--limit` pattern (one that names no host is a typo, not an empty
    run), then the inventory's own checks, then for deploys `only_roles` and the vault.
    """
    topology = topology_from_inventory(inventory, run.source)
    names = [host.name for host in inventory]
    for pattern in run.limit:
        if not inventory.groups.get(pattern) and not any(fnmatch(n, pattern) for n in names):
            hint = did_you_mean(pattern, [*names, *inventory.groups])
            raise BulwarkError(f"--limit {pattern!r}: no host or group of the inventory{hint}")
    for check in extra_checks:
        check(run.source, inventory)
    if run.deploying:
        only_roles = {
            repr(value): value
            for host in inventory
            if (value := host.data.get("only_roles")) is not None
        }
        for value in only_roles.values():
            parse_only_roles(value)
        check_vault(topology)
    return topology


def check_vault(topology: Topology) -> Vault:
    """The inventory's vault, opened, holding every secret the topology needs.

    Raises BulwarkError naming the key or vault file (unset, unreadable, wrong key, damaged) or
    TopologyError naming each missing secret; never a secret's value.
    """
    if topology.vault_file is None:
        raise BulwarkError("vault_file: the inventory sets none")
    vault = open_vault(Path(topology.vault_file))
    problems = missing_secrets(topology, vault)
    if problems:
        raise TopologyError(topology.vault_file, problems)
    return vault


_RUN_CHECKS: weakref.WeakKeyDictionary[State, list[ConnectCheck]] = weakref.WeakKeyDictionary()
# While `load_checked_run` loads an inventory: the checks it arms, in the order it arms them.
_COLLECTED: ContextVar[list[ConnectCheck] | None] = ContextVar(
    "bulwark_connect_checks", default=None
)


@contextmanager
def _collecting_checks() -> Iterator[list[ConnectCheck]]:
    checks: list[ConnectCheck] = []
    token = _COLLECTED.set(checks)
    try:
        yield checks
    finally:
        _COLLECTED.reset(token)


def load_checked_run(run: PyinfraRun) -> tuple[Inventory, Topology]:
    """Load `run.source` as bulwark's own connecting commands do, and pass `check_run` with the
    checks the inventory arms (the lab's: its containers are up) before anything connects."""
    with _collecting_checks() as checks:
        inventory = load_inventory(run.source)
    return inventory, check_run(run, inventory, tuple(checks))


def limited_hosts(inventory: Inventory, limit: Sequence[str]) -> tuple[str, ...]:
    """The inventory's host names a `--limit` selects (host names, globs, group names; none:
    every host), in inventory order. `check_run` has refused a pattern that selects nothing."""
    names = [host.name for host in inventory]
    if not limit:
        return tuple(names)
    chosen: set[str] = set()
    for pattern in limit:
        group = inventory.groups.get(pattern)
        if group:
            chosen.update(host.name for host in group)
        chosen.update(name for name in names if fnmatch(name, pattern))
    return tuple(name for name in names if name in chosen)


def check_before_connecting(extra_check: ConnectCheck | None = None) -> None:
    """Have this pyinfra run checked (`check_run`) before it connects to any host.

    Called from `inventory/group_data/all.py` for every inventory; an inventory may call it with
    a check of its own. While `load_checked_run` loads the inventory, the check is collected for
    bulwark's own command instead; otherwise, outside the pyinfra CLI, it does nothing.
    """
    collected = _COLLECTED.get()
    if collected is not None:
        if extra_check is not None and extra_check not in collected:
            collected.append(extra_check)
        return
    context = click.get_current_context(silent=True)
    if not pyinfra.is_cli or context is None or not ctx_state.isset():
        return
    state = ctx_state.get()
    checks = _RUN_CHECKS.get(state)
    if checks is None:
        checks = _RUN_CHECKS[state] = []
        run = PyinfraRun.from_cli(context.params)
        state.init = functools.partial(_init_after_check, state.init, run, checks)
    if extra_check is not None and extra_check not in checks:
        checks.append(extra_check)


def _init_after_check(
    initialise: Callable[..., None],
    run: PyinfraRun,
    checks: Sequence[ConnectCheck],
    inventory: Inventory,
    *args: Any,
    **kwargs: Any,
) -> None:
    """`State.init` of a checked run: the check first; exit 2 before anything connects."""
    try:
        check_run(run, inventory, checks)
    except TopologyError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    except BulwarkError as error:
        print(f"{run.source}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    initialise(inventory, *args, **kwargs)
