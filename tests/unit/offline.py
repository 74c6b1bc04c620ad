"""Run pyinfra operations, facts and whole role deploys offline: facts in, commands out.

As pyinfra tests its own operations (tests/operations/*.json, tests/test_operations.py): a real
`State` and `Host` of a one-host inventory, whose `get_fact` answers from a table instead of a
connection. `run_deploy` then plays the execution stage: in order, each operation's `_if` is
evaluated, its commands generated and it is marked complete, so later `_if`s see it changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_host, ctx_state

# Fact class name -> its value, or a function of the fact's arguments returning it. Facts not
# in the table answer with their class's default (a fact without one must be in the table).
Facts = Mapping[str, Any]


def command_text(command: Any) -> str:
    """A command as the tables spell it: the shell line, `upload DEST` or `call FUNCTION`."""
    if isinstance(command, str):  # pyinfra's own operations yield plain shell lines too
        return command
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        return f"upload {command.dest}"
    if isinstance(command, FunctionCommand):
        return f"call {command.function.__name__}"
    raise TypeError(f"unexpected command {command!r}")


@dataclass
class OfflineHost:
    """One pyinfra host whose facts come from `facts`; records the facts asked and noops."""

    facts: Facts
    name: str = "offline-host"
    yes: bool = False  # as `pyinfra -y`: operations run their facts once, when executed
    asked: list[str] = field(default_factory=list)
    noops: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.inventory = Inventory(([self.name], {}))
        self.state = State(self.inventory, Config(), check_for_changes=not self.yes)
        self.host = self.inventory.get_host(self.name)
        self.host.get_fact = self._fact
        self.host.noop = self.noops.append

    def _fact(self, fact: type, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(fact.__name__)
        if fact.__name__ not in self.facts:
            return fact.default()
        value = self.facts[fact.__name__]
        return value(**kwargs) if callable(value) else value

    @contextmanager
    def context(self) -> Iterator[None]:
        with ctx_state.use(self.state), ctx_host.use(self.host):
            yield


def run_operation(
    operation: Callable, facts: Facts, diff: bool = False, **arguments: Any
) -> OfflineHost:
    """The commands `operation` yields for `arguments` on a host with `facts` (in `.commands`),
    as under `--diff` if `diff`."""
    offline = OfflineHost(facts)
    offline.state.config.DIFF = diff
    with offline.context():
        offline.commands = [command_text(c) for c in operation._inner(**arguments)]
    return offline


@dataclass(frozen=True)
class Step:
    """One operation of a deploy, as executed offline: its name and the commands it ran."""

    name: str
    commands: tuple[str, ...]


def run_deploys(
    deploys: Iterable[tuple[Callable, tuple]], facts: Facts, host_name: str, yes: bool = False
) -> tuple[list[Step], OfflineHost]:
    """Prepare each `(deploy, arguments)` in order for a host named `host_name`, in one run as
    deploy.py does (as `pyinfra -y` if `yes`), then execute them offline: the steps, and the
    host (facts asked)."""
    offline = OfflineHost(facts, name=host_name, yes=yes)
    for deploy, arguments in deploys:
        add_deploy(offline.state, deploy, *arguments, host=offline.host)
    steps = []
    offline.state.is_executing = True
    with offline.context():
        for op_hash in offline.state.get_op_order():
            data = offline.state.get_op_data_for_host(offline.host, op_hash)
            commands = [command_text(command) for command in data.command_generator()]
            data.operation_meta.set_complete(True, commands, CommandOutput([]))
            (name,) = offline.state.get_op_meta(op_hash).names
            steps.append(Step(name.split(" | ", 1)[-1], tuple(commands)))
    return steps, offline


def run_deploy(deploy: Callable, facts: Facts, *arguments: Any, host_name: str) -> list[Step]:
    """Prepare `deploy(*arguments)` for a host named `host_name`, then execute it offline."""
    return run_deploys([(deploy, arguments)], facts, host_name)[0]
