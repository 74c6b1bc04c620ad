"""bulwark's own pyinfra facts and operations: install files checked before they go live, and
finish the actions (reload, restart, apply) they need, even after an interrupted run.

A file is never live before its daemon's checker accepted it: `install_files` stages it in a
root-only directory beside its destination, checks the staged copy, writes the pending marker
of the action the file needs, and only then moves it into place. `run_pending` performs the
action and removes the marker once it succeeded. A run cut short between the two leaves the
marker behind; the next run sees it (`PendingActions`) and completes the action, so a run that
reports no change really leaves every daemon running its files.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from io import StringIO

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.api.facts import FactBase
from pyinfra.facts.files import FileContents
from pyinfra.operations.util import files as file_utils

from bulwark.render import RenderedFile

# Markers of actions a file change asked for and that have not completed yet, one per action.
PENDING_DIR = "/var/lib/bulwark/pending"
# Beside each destination: where its new version is uploaded, owned, moded and checked. Root
# only (0700), so a secret never sits readable even before its chmod; same filesystem as the
# destination, so the final `mv` is an atomic rename. No daemon reads a dotted subdirectory.
STAGING_DIR = ".bulwark-staged"
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


def marker_path(action: str) -> str:
    """The pending marker of `action`."""
    return posixpath.join(PENDING_DIR, action)


class PendingActions(FactBase):
    """Names of the actions whose marker is on the host: changed files a daemon has not taken
    yet (one round trip for all of them)."""

    def command(self) -> StringCommand:
        return StringCommand("ls", "-1", PENDING_DIR, "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


@dataclass(frozen=True)
class FileState:
    """What a file on the host is: owner, group, permission bits (octal digits) and sha256."""

    user: str
    group: str
    mode: str
    sha256: str


class FileStates(FactBase):
    """Owner, group, mode and sha256 of each of `paths` (None: no such file), in one round trip."""

    def command(self, paths: tuple[str, ...]) -> StringCommand:
        return StringCommand(
            "for", "path", "in", *(QuoteString(path) for path in paths), ";", "do",
            'if [ -f "$path" ]; then',
            """printf '%s %s\\n' "$(stat -c '%U %G %a' "$path")" """
            """"$(sha256sum "$path" | cut -d' ' -f1)";""",
            "else", "echo", "missing;", "fi;", "done",
        )  # fmt: skip

    @staticmethod
    def default() -> list[FileState | None]:
        return []

    def process(self, output: list[str]) -> list[FileState | None]:
        return [None if line == "missing" else FileState(*line.split()) for line in output]


def _differs(rendered: RenderedFile, found: FileState | None) -> bool:
    return found is None or found.sha256 != rendered.sha256


def _owned(rendered: RenderedFile, found: FileState) -> bool:
    wanted = (rendered.user, rendered.group, int(rendered.mode, 8))
    return (found.user, found.group, int(found.mode, 8)) == wanted


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
    found = dict(
        zip(
            (item.path for item in files),
            host.get_fact(FileStates, paths=tuple(item.path for item in files)),
            strict=True,
        )
    )
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
