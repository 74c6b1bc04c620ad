"""bulwark's own pyinfra facts and operations: install files checked before they go live, and
finish the actions (reload, restart, apply) they need, even after an interrupted run.

A file is never live before its daemon's checker accepted it: `install_files` stages it in a
root-only directory beside its destination, checks the staged copy, writes the pending marker
of the action the file needs, and only then moves it into place. `run_pending` performs the
action and removes the marker once it succeeded. A run cut short between the two leaves the
marker behind; the next run sees it (bulwark.hoststate) and completes the action, so a run that
reports no change really leaves every daemon running its files.

Every state they compare (files, markers, packages, units) comes from bulwark.hoststate: one
round trip per host, not one per file. The operations that wrap pyinfra's own
(`packages_present`, `unit_state`, `unit_masked`, `directory_present`) leave the change work
to it, and call
it only when that state differs: pyinfra's operations ask their own facts even when nothing is
to be done.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from io import StringIO

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, server, systemd
from pyinfra.operations import files as pyinfra_files
from pyinfra.operations.util import files as file_utils

from bulwark.hoststate import PENDING_DIR, FileState, host_state, marker_path
from bulwark.render import RenderedFile

# Beside each destination: where its new version is uploaded, owned, moded and checked. Root
# only (0700), so a secret never sits readable even before its chmod; same filesystem as the
# destination, so the final `mv` is an atomic rename. No daemon reads a dotted subdirectory.
STAGING_DIR = ".bulwark-staged"
# Where the administrator's units are, and a masked unit's link.
UNIT_DIR = "/etc/systemd/system"
# Stand-ins in a `Check`'s argv: the staged copy of the checked file, and its directory.
STAGED = "{staged}"
STAGED_DIR = "{staged_dir}"


@dataclass(frozen=True)
class Check:
    """A daemon's own check of a staged file: `argv` with STAGED or STAGED_DIR standing for the
    staged copy of `path` (or its directory, for checkers that read a configuration directory)."""

    path: str
    argv: tuple[str, ...]

    def command(self) -> StringCommand:
        staged = staged_path(self.path)
        values = {STAGED: staged, STAGED_DIR: posixpath.dirname(staged)}
        return StringCommand(
            *(QuoteString(values[arg]) if arg in values else arg for arg in self.argv)
        )


@dataclass(frozen=True)
class Activation:
    """What makes a daemon take its new files: commands (argv each) run once, in order, after
    any of them changed. `name` is its pending marker's file name in PENDING_DIR."""

    name: str
    commands: tuple[tuple[str, ...], ...]


def staged_path(path: str) -> str:
    """Where the new version of `path` is staged and checked."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, STAGING_DIR, name)


def _differs(rendered: RenderedFile, found: FileState | None) -> bool:
    return found is None or found.sha256 != rendered.sha256


def _owned(rendered: RenderedFile, found: FileState) -> bool:
    return _owner_and_mode(found, rendered.user, rendered.group, rendered.mode)


def _owner_and_mode(found: FileState, user: str, group: str, mode: str) -> bool:
    return (found.user, found.group, int(found.mode, 8)) == (user, group, int(mode, 8))


def _show(rendered: RenderedFile, found: FileState | None) -> None:
    """What `--diff` shows of a change: the diff, or only the path of a file holding secrets
    (pyinfra's own diff would print the remote file, secrets and all)."""
    if rendered.holds_secrets:
        host.log(f"{rendered.path}: contents hidden, the file holds secrets")
        return
    if not state.config.DIFF:
        return
    current = host.get_fact(FileContents, path=rendered.path) if found else None
    host.log(f"Will {'modify' if found else 'create'} {rendered.path}", logger.info)
    lines = [line + "\n" for line in current or []]
    for line in file_utils.generate_color_diff(lines, rendered.content.splitlines(True)):
        logger.info("  %s", line)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@operation()
def install_files(
    files: tuple[RenderedFile, ...], check: Check | None = None, pending: str | None = None
):
    """Put `files` in place with their owner and mode, each new version checked before it is live.

    + files: rendered files (bulwark.render.RenderedFile) that go live together
    + check: the daemon's own checker, run on the staged copies before any of them is moved
    + pending: the `Activation` name the new files need; its marker is written before the
      first file goes live and stays until `run_pending` completed the action

    When a content differs, every file of the group is staged (a checker sees the whole new
    configuration), checked, the marker written, and the staged copies moved into place. When
    only owner or mode differ, they are fixed in place. Otherwise nothing happens.

    **Example:**

    .. code:: python

        install_files(
            name="base: sshd",
            files=(rendered_sshd_config,),
            check=Check(SSHD_CONFIG, ("sshd", "-t", "-f", STAGED)),
            pending="ssh-reload",
        )
    """
    if not files:
        host.noop("no files")
        return
    found = host_state(paths=[item.path for item in files]).files
    changed = [item for item in files if _differs(item, found[item.path])]
    if not changed:
        misowned = [item for item in files if not _owned(item, found[item.path])]
        if not misowned:
            host.noop(f"{', '.join(item.path for item in files)} up to date")
        for item in misowned:
            yield file_utils.chown(item.path, item.user, item.group)
            yield file_utils.chmod(item.path, item.mode)
        return
    staged = files if check is not None else tuple(changed)
    staging_dirs = _unique(posixpath.dirname(staged_path(item.path)) for item in staged)
    for directory in staging_dirs:
        yield StringCommand("install", "-d", "-m", "0700", QuoteString(directory))
    for item in staged:
        _show(item, found[item.path])
        copy = staged_path(item.path)
        yield FileUploadCommand(StringIO(item.content), copy, remote_temp_filename=copy)
        yield file_utils.chown(copy, item.user, item.group)
        yield file_utils.chmod(copy, item.mode)
    if check is not None:
        yield check.command()
    if pending is not None:
        yield StringCommand("install", "-d", "-m", "0700", PENDING_DIR)
        yield StringCommand("touch", QuoteString(marker_path(pending)))
    for item in staged:
        yield StringCommand("mv", "-f", QuoteString(staged_path(item.path)), QuoteString(item.path))
    for directory in staging_dirs:  # another group's copies, left by an interrupted run, stay
        yield StringCommand("rmdir", "--ignore-fail-on-non-empty", QuoteString(directory))


@operation(is_idempotent=False)
def run_pending(activation: Activation):
    """Run `activation`'s commands, then remove its pending marker. A failing command stops the
    operation with the marker still there, so the next run tries again.

    + activation: the commands (reload, restart, apply) and the marker's name

    Gate it with `_if` (see bulwark.deploying.install): it always acts when it runs.
    """
    for argv in activation.commands:
        yield StringCommand(*map(QuoteString, argv))
    yield StringCommand("rm", "-f", QuoteString(marker_path(activation.name)))


@operation()
def packages_present(packages: tuple[str, ...], preseed: tuple[str, ...] = ()):
    """Install `packages` with apt, without recommends, unless dpkg has every one already.

    + packages: Debian package names
    + preseed: debconf answers (`debconf-set-selections` lines) given before installing, so
      that a package's scripts never act on their defaults

    **Example:**

    .. code:: python

        packages_present(name="mx: packages", packages=("postfix",))
    """
    found = host_state(packages=packages).packages
    if all(found[name] for name in packages):
        host.noop(f"{', '.join(packages)} installed")
        return
    for answer in preseed:
        yield StringCommand("printf", "'%s\\n'", QuoteString(answer), "|", "debconf-set-selections")
    yield from apt.packages._inner(packages=list(packages), no_recommends=True)


@operation()
def unit_state(unit: str, running: bool | None = True, enabled: bool | None = True):
    """Keep a systemd unit running (or stopped) and enabled (or disabled) at boot.

    + unit: the unit's full name (`ssh.service`, `x.timer`)
    + running: whether it should be active; None: leave it as it is
    + enabled: whether it should start at boot; None: leave it as it is

    **Example:**

    .. code:: python

        unit_state(name="base: ssh running", unit="ssh.service")
    """
    found = host_state(units=(unit,)).units[unit]
    if running in (None, found.running) and enabled in (None, found.enabled):
        host.noop(f"{unit} as wanted")
        return
    yield from systemd.service._inner(service=unit, running=running, enabled=enabled)


@operation()
def unit_masked(unit: str):
    """Mask a systemd unit: `/etc/systemd/system/<unit>` a link to /dev/null, so that neither a
    package's installation nor a boot starts it. What is there already reads as masked when it
    is neither a regular file nor a directory (bulwark.hoststate follows no link: a link to
    /dev/null is such a thing).

    + unit: the unit's full name (`apache2.service`)

    **Example:**

    .. code:: python

        unit_masked(name="files: apache2.service masked", unit="apache2.service")
    """
    path = posixpath.join(UNIT_DIR, unit)
    found = host_state(paths=(path,)).files[path]
    if found is not None and not found.directory and found.sha256 is None:
        host.noop(f"{unit} masked")
        return
    yield from pyinfra_files.link._inner(path=path, target="/dev/null")


@operation()
def directory_present(path: str, user: str, group: str, mode: str):
    """Make `path` a directory with this owner and mode.

    + path: the directory
    + user, group: its owner
    + mode: its permission bits, octal digits

    **Example:**

    .. code:: python

        directory_present(
            name="mailstore: mail home", path="/var/vmail", user="vmail", group="vmail",
            mode="0700",
        )
    """
    found = host_state(paths=(path,)).files[path]
    if found is not None and found.directory and _owner_and_mode(found, user, group, mode):
        host.noop(f"{path} as wanted")
        return
    yield from pyinfra_files.directory._inner(path=path, user=user, group=group, mode=mode)


@operation()
def file_present(path: str, user: str, group: str, mode: str):
    """Make `path` a regular file with this owner and mode, created empty if it is missing; a
    file that exists keeps its contents (its daemon writes them).

    + path: the file
    + user, group: its owner
    + mode: its permission bits, octal digits

    **Example:**

    .. code:: python

        file_present(
            name="files: usage file", path="/var/lib/bulwark/files/a.example.net/.ftpquota",
            user="bulwark-files", group="bulwark-files", mode="0600",
        )
    """
    found = host_state(paths=(path,)).files[path]
    if found is not None and not found.directory and _owner_and_mode(found, user, group, mode):
        host.noop(f"{path} as wanted")
        return
    yield from pyinfra_files.file._inner(
        path=path,
        user=user,
        group=group,
        mode=mode,
        touch=False,
        present=True,
        create_remote_dir=False,
    )


@operation()
def system_account(user: str, home: str, shell: str):
    """A system user with a group of its own name, this home and login shell.

    + user: the user's and its group's name
    + home: its home directory (not created here)
    + shell: its login shell

    **Example:**

    .. code:: python

        system_account(name="mailstore: vmail", user="vmail", home="/var/vmail",
                       shell="/usr/sbin/nologin")
    """
    found = host_state(users=(user,), groups=(user,))
    account, gid = found.users[user], found.groups[user]
    if (
        gid is not None
        and account is not None
        and (account.gid, account.home, account.shell)
        == (
            gid,
            home,
            shell,
        )
    ):
        host.noop(f"system user {user} as wanted")
        return
    yield from server.group._inner(group=user, system=True)
    yield from server.user._inner(user=user, group=user, home=home, shell=shell, system=True)
