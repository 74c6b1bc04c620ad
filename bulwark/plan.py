"""The shape every role module has (bulwark.registry says which roles exist and where).

A role is a module `roles/<name>.py` with, in this order: `ROLE` (its name, which is also its
templates' folder), its documented constants, any fact, operation or live-check kind of its
own, `managed_files(topology, host)` and `template_context(topology, host, secrets)` (pure
functions, so the renderer needs no connection), `live_checks(topology, host)` (what
`bulwark status` and `bulwark drift` check on the host: bulwark.livecheck), then one
`@deploy` function `converge(topology, host, secrets)`, then private helpers. Every input is an
argument; roles never import each other and share what they share through `bulwark/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bulwark.secret import SecretStore
from bulwark.topology import Host, Topology


@dataclass(frozen=True)
class ManagedFile:
    """A file a role writes: destination, template under templates/<role>/, owner and mode.

    `checker` names the daemon's own syntax check (see bulwark.checks) run on the rendered file.
    `item` is added to the role's context as `item`: one template renders a file per volume,
    unit or instance, each told which one it is.
    """

    path: str
    template: str
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    checker: str | None = None
    item: str | None = None


class RoleModule(Protocol):
    """What deploy.py, the renderer and the tests use of a role module."""

    ROLE: str

    def managed_files(self, topology: Topology, host: Host) -> tuple[ManagedFile, ...]: ...

    def template_context(
        self, topology: Topology, host: Host, secrets: SecretStore
    ) -> Mapping[str, Any]: ...

    def live_checks(self, topology: Topology, host: Host) -> tuple[Any, ...]: ...

    def converge(self, topology: Topology, host: Host, secrets: SecretStore) -> None: ...
