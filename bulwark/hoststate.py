"""What bulwark compares on a host, read in one round trip per host and shared by the whole run.

pyinfra 3.10 caches no fact: every `host.get_fact` is one SSH round trip, and a no-op run that
asked one fact per file, package and unit cost five times the engine's floor. Instead the
deploy helpers declare what they will compare (`expect`: paths, packages, units) while the run
is planned, and the first operation that needs any of it reads all of it with `HostState`:
files and directories (owner, group, mode, sha256), the pending markers, the packages dpkg has
installed, the units' states and the live values of kernel parameters. Every later operation
of the host reads that copy.

The copy describes the host as it was when read. It stays valid while no operation of this run
has changed the host; once one has, the next reader reads it again (`host_state`), so a run
that changes things sees what each operation left, as if it had asked the fact itself.
"""

from __future__ import annotations

import posixpath
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyinfra import host as current_host
from pyinfra.api import QuoteString, State, StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

# Markers of actions a file change asked for and that have not completed yet, one per action.
PENDING_DIR = "/var/lib/bulwark/pending"
# dpkg's want and status letters of an installed package (installed, or held and installed):
# what pyinfra's DebPackages counts as installed.
_INSTALLED = ("ii", "hi")
_SECTIONS = ("pending", "files", "packages", "units", "users", "groups", "sysctls")
# `USER GROUP MODE` of "$path", as one word of a printf.
_OWNER = """"$(stat -c '%U %G %a' "$path")\""""


def marker_path(action: str) -> str:
    """The pending marker of `action`."""
    return posixpath.join(PENDING_DIR, action)


@dataclass(frozen=True)
class FileState:
    """What a path on the host is: owner, group, permission bits (octal digits), and for a
    regular file its sha256 (None for a directory or any other kind of file)."""

    user: str
    group: str
    mode: str
    sha256: str | None = None
    directory: bool = False


@dataclass(frozen=True)
class UnitState:
    """Whether a systemd unit is active and enabled, as pyinfra's SystemdStatus and
    SystemdEnabled say it (a unit that does not exist is neither)."""

    running: bool
    enabled: bool


@dataclass(frozen=True)
class Account:
    """A system user as /etc/passwd has it: primary group id, home and shell."""

    gid: str
    home: str
    shell: str


@dataclass(frozen=True)
class Found:
    """What `HostState` read: each asked path (None: nothing there), package (installed or
    not), unit, system user and group (None: no such one; a group as its id), kernel parameter
    (its live value, blanks collapsed; None: unreadable), and the pending markers."""

    pending: frozenset[str] = frozenset()
    files: Mapping[str, FileState | None] = field(default_factory=dict)
    packages: Mapping[str, bool] = field(default_factory=dict)
    units: Mapping[str, UnitState] = field(default_factory=dict)
    users: Mapping[str, Account | None] = field(default_factory=dict)
    groups: Mapping[str, str | None] = field(default_factory=dict)
    sysctls: Mapping[str, str | None] = field(default_factory=dict)

    def covers(self, wants: Wants) -> bool:
        return (
            all(path in self.files for path in wants.paths)
            and all(name in self.packages for name in wants.packages)
            and all(unit in self.units for unit in wants.units)
            and all(user in self.users for user in wants.users)
            and all(group in self.groups for group in wants.groups)
            and all(key in self.sysctls for key in wants.sysctls)
        )

    def answering(self, wants: Wants) -> Found:
        """This, with an answer for each asked item the host said nothing of: no such path,
        package not installed, unit neither running nor enabled, no such user or group."""
        return Found(
            pending=self.pending,
            files={path: self.files.get(path) for path in wants.paths},
            packages={name: self.packages.get(name, False) for name in wants.packages},
            units={unit: self.units.get(unit, UnitState(False, False)) for unit in wants.units},
            users={user: self.users.get(user) for user in wants.users},
            groups={group: self.groups.get(group) for group in wants.groups},
            sysctls={key: self.sysctls.get(key) for key in wants.sysctls},
        )


@dataclass(frozen=True)
class Wants:
    """What the operations of one host compare, in declaration order."""

    paths: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    sysctls: tuple[str, ...] = ()


def _section(name: str) -> str:
    return f"## {name}"


class HostState(FactBase):
    """The pending markers, and the state of each of `paths`, `packages` and `units`, in one
    round trip. Whatever cannot be read (no dpkg, no systemd) reads as absent, so the operation
    that wants it acts, or defers to pyinfra's own."""

    def command(
        self,
        paths: tuple[str, ...],
        packages: tuple[str, ...],
        units: tuple[str, ...],
        users: tuple[str, ...] = (),
        groups: tuple[str, ...] = (),
        sysctls: tuple[str, ...] = (),
    ) -> StringCommand:
        parts: list = ["echo", QuoteString(_section("pending")), ";"]
        parts += ["ls", "-1", PENDING_DIR, "2>/dev/null", ";"]
        parts += ["echo", QuoteString(_section("files")), ";"]
        parts += [
            "for", "path", "in", *(QuoteString(path) for path in paths), ";", "do",
            'if [ -f "$path" ]; then', "printf", QuoteString("file %s %s\\t%s\\n"), _OWNER,
            """"$(sha256sum "$path" | cut -d' ' -f1)" "$path";""",
            'elif [ -d "$path" ]; then', "printf", QuoteString("dir %s\\t%s\\n"), _OWNER,
            '"$path";',
            'elif [ -e "$path" ]; then', "printf", QuoteString("other %s\\t%s\\n"), _OWNER,
            '"$path";',
            "else", "printf", QuoteString("missing\\t%s\\n"), '"$path";', "fi;", "done;",
        ]  # fmt: skip
        parts += ["echo", QuoteString(_section("packages")), ";"]
        if packages:
            parts += [
                "dpkg-query", "-W", "-f", QuoteString("${Package} ${db:Status-Abbrev}\\n"),
                *(QuoteString(name) for name in packages), "2>/dev/null", ";",
            ]  # fmt: skip
        parts += ["echo", QuoteString(_section("units")), ";"]
        if units:
            parts += [
                "systemctl", "show", "--all", "--property", "Id", "--property",
                SystemdStatus.state_key, "--property", SystemdEnabled.state_key,
                *(QuoteString(unit) for unit in units), "2>/dev/null", ";",
            ]  # fmt: skip
        for section, database, names in (("users", "passwd", users), ("groups", "group", groups)):
            if names:
                parts += ["echo", QuoteString(_section(section)), ";"]
                parts += ["getent", database, *(QuoteString(name) for name in names), ";"]
        if sysctls:
            parts += ["echo", QuoteString(_section("sysctls")), ";"]
            parts += [
                "for", "key", "in", *(QuoteString(key) for key in sysctls), ";", "do",
                "printf", QuoteString("%s\\t%s\\n"), '"$key"',
                """"$(sysctl -n "$key" 2>/dev/null | tr '\\t\\n' '  ')";""", "done;",
            ]  # fmt: skip
        parts.append("true")
        return StringCommand(*parts)

    @staticmethod
    def default() -> Found:
        return Found()

    def process(self, output: list[str]) -> Found:
        sections = _split(output)
        files = dict(_file(line) for line in sections["files"])
        packages = (line.split(maxsplit=1) for line in sections["packages"])
        return Found(
            pending=frozenset(sections["pending"]),
            files=files,
            packages={name: True for name, status in packages if status.strip() in _INSTALLED},
            units=_units(sections["units"]),
            users={
                name: Account(gid, home, shell)
                for name, _, _, gid, _, home, shell in _entries(sections["users"], 7)
            },
            groups={name: gid for name, _, gid, _ in _entries(sections["groups"], 4)},
            sysctls=dict(_sysctl(line) for line in sections["sysctls"]),
        )


def _split(output: list[str]) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {name: [] for name in _SECTIONS}
    current = None
    for line in output:
        line = line.strip()
        if line.startswith("## ") and line[3:] in sections:
            current = line[3:]
        elif line and current is not None:
            sections[current].append(line)
    return sections


def _entries(lines: list[str], fields: int) -> list[list[str]]:
    """getent's `a:b:c` lines with exactly `fields` fields."""
    return [entry for line in lines if len(entry := line.split(":")) == fields]


def _file(line: str) -> tuple[str, FileState | None]:
    """`KIND [USER GROUP MODE [SHA256]]<tab>PATH`."""
    described, _, path = line.partition("\t")
    kind, *fields = described.split()
    if kind == "missing":
        return path, None
    if kind == "file":
        return path, FileState(*fields)
    return path, FileState(*fields, directory=kind == "dir")


def sysctl_settings(content: str) -> dict[str, str]:
    """`key = value` lines of a sysctl.d file (comments and blank lines skipped; a leading `-`,
    "ignore if missing", dropped)."""
    settings = {}
    for line in content.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        settings[key.lstrip("-")] = " ".join(value.split())
    return settings


def _sysctl(line: str) -> tuple[str, str | None]:
    """`KEY<tab>VALUE` (VALUE empty: unreadable)."""
    key, _, value = line.partition("\t")
    return key.strip(), " ".join(value.split()) or None


def _units(lines: list[str]) -> dict[str, UnitState]:
    """`systemctl show` blocks, each starting with Id=, as pyinfra's SystemdStatus reads them."""
    values: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition("=")
        if key == "Id":
            current = values.setdefault(value, {})
        else:
            current[key] = value
    return {
        unit: UnitState(
            running=found.get(SystemdStatus.state_key) in SystemdStatus.state_values,
            enabled=found.get(SystemdEnabled.state_key) in SystemdEnabled.state_values,
        )
        for unit, found in values.items()
    }


@dataclass
class _Survey:
    """One host's wants in this run, and the last `Found` read with the number of changed
    operations at that time."""

    paths: dict[str, None] = field(default_factory=dict)
    packages: dict[str, None] = field(default_factory=dict)
    units: dict[str, None] = field(default_factory=dict)
    users: dict[str, None] = field(default_factory=dict)
    groups: dict[str, None] = field(default_factory=dict)
    sysctls: dict[str, None] = field(default_factory=dict)
    found: Found | None = None

    def wants(self) -> Wants:
        return Wants(
            tuple(self.paths),
            tuple(self.packages),
            tuple(self.units),
            tuple(self.users),
            tuple(self.groups),
            tuple(self.sysctls),
        )

    changes: int = -1


_SURVEYS: weakref.WeakKeyDictionary[State, dict[str, _Survey]] = weakref.WeakKeyDictionary()


def _survey() -> _Survey:
    return _SURVEYS.setdefault(ctx_state.get(), {}).setdefault(current_host.name, _Survey())


def expect(
    paths: Iterable[str] = (),
    packages: Iterable[str] = (),
    units: Iterable[str] = (),
    users: Iterable[str] = (),
    groups: Iterable[str] = (),
    sysctls: Iterable[str] = (),
) -> None:
    """Declare, while the run is planned, what an operation of this host will compare: the
    first `host_state` reads it with everything else."""
    survey = _survey()
    survey.paths.update(dict.fromkeys(paths))
    survey.packages.update(dict.fromkeys(packages))
    survey.units.update(dict.fromkeys(units))
    survey.users.update(dict.fromkeys(users))
    survey.groups.update(dict.fromkeys(groups))
    survey.sysctls.update(dict.fromkeys(sysctls))


def host_state(
    paths: Iterable[str] = (),
    packages: Iterable[str] = (),
    units: Iterable[str] = (),
    users: Iterable[str] = (),
    groups: Iterable[str] = (),
    sysctls: Iterable[str] = (),
) -> Found:
    """The state of everything this host's roles expect, the given items included: read once,
    and again only after an operation of this run changed the host."""
    asked = Wants(
        tuple(paths), tuple(packages), tuple(units), tuple(users), tuple(groups), tuple(sysctls)
    )
    expect(asked.paths, asked.packages, asked.units, asked.users, asked.groups, asked.sysctls)
    survey = _survey()
    changes = _changed_operations()
    if survey.found is None or survey.changes != changes or not survey.found.covers(asked):
        wanted = survey.wants()
        # Kernel parameters only when some are wanted: the command stays as it was without.
        extra = {"sysctls": wanted.sysctls} if wanted.sysctls else {}
        found = current_host.get_fact(
            HostState,
            paths=wanted.paths,
            packages=wanted.packages,
            units=wanted.units,
            users=wanted.users,
            groups=wanted.groups,
            **extra,
        )
        survey.found = found.answering(wanted)
        survey.changes = changes
    return survey.found


def _changed_operations() -> int:
    """How many operations of this run have executed commands on the current host."""
    operations = ctx_state.get().ops.get(ctx_host.get(), {})
    return sum(1 for data in operations.values() if data.operation_meta.executed)
