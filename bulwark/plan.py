"""Which roles run on a host, in which order, and what each role declares.

A role is a module `roles/<name>.py` exposing `ROLE` (its name), `managed_files(topology, host)`
and `template_context(topology, host, secrets)` — pure functions, so the renderer needs no
connection — plus one `@deploy` function, `converge(secrets)`. Roles never import each other;
this module finds them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bulwark import catalogue
from bulwark.errors import BulwarkError
from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology

# Base, pki, storage, vpn, firewall, then the services (DESIGN.md): each step relies on the
# previous ones (packages and sshd, certificates, volumes, the tunnel, the ruleset).
ROLE_ORDER: tuple[str, ...] = (
    "base",
    "pki",
    "storage",
    "vpn",
    "firewall",
    "proxy",
    "mx",
    "mailstore",
    "dav",
    "files",
    "directory",
    "backup",
)
# The vpn role runs everywhere: gateways (inventory role "vpn") get the tunnel, every other host
# its route to the other sites' LANs through its gateway.
_EVERY_HOST = ("base", "pki", "storage", "vpn", "firewall")
assert set(ROLE_ORDER) == {*catalogue.INFRASTRUCTURE_ROLES, *catalogue.SERVICE_ROLES}


@dataclass(frozen=True)
class ManagedFile:
    """A file a role writes: destination, template under templates/<role>/, owner and mode.

    `checker` names the daemon's own syntax check (see bulwark.checks) run on the rendered file.
    """

    path: str
    template: str
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    checker: str | None = None


def host_roles(host: Host) -> tuple[str, ...]:
    """Every role that applies to `host`, in deploy order."""
    wanted = {*_EVERY_HOST, *host.roles}
    return tuple(role for role in ROLE_ORDER if role in wanted)


def parse_only_roles(value: str | None) -> frozenset[str] | None:
    """`--data only_roles=a,b`: the roles a run is narrowed to (None: all of them)."""
    if value is None:
        return None
    roles = frozenset(role.strip() for role in str(value).split(",") if role.strip())
    unknown = sorted(roles - set(ROLE_ORDER))
    if unknown or not roles:
        raise BulwarkError(
            f"only_roles: unknown role(s) {', '.join(unknown) or '(none given)'}; "
            f"roles are {', '.join(ROLE_ORDER)}"
        )
    return roles


def role_module(role: str) -> ModuleType | None:
    """The role's module, or None while the role is not implemented yet."""
    try:
        return importlib.import_module(f"roles.{role}")
    except ModuleNotFoundError as error:
        if error.name == f"roles.{role}":
            return None
        raise


def implemented_roles(host: Host) -> tuple[ModuleType, ...]:
    return tuple(module for role in host_roles(host) if (module := role_module(role)) is not None)


def missing_roles(host: Host) -> tuple[str, ...]:
    """Roles the host needs that have no module yet (reported, never silently skipped)."""
    return tuple(role for role in host_roles(host) if role_module(role) is None)


ContextFunction = Callable[[Topology, Host, SecretStore], Mapping[str, Any]]
