"""Render every file every role writes, for one host or the whole topology, with no connection.

The roles call `render_role_files` at deploy time (secrets revealed); `bulwark render` calls
`render_topology` for auditors (secrets as placeholders). Same context functions, same
templates, so what an auditor reads is what a host gets.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bulwark import plan, registry
from bulwark.errors import BulwarkError
from bulwark.secret import SecretStore
from bulwark.templating import render_template
from bulwark.topology import Host, Topology

MANIFEST = "manifest.json"
# The audit report written beside the trees (bulwark.audit): the port matrix and the report.
PORTS_REPORT = "ports.json"
REPORT = "report.md"
REPORT_HTML = "report.html"  # the same and more, for a browser (bulwark.htmlreport)
DNS_ZONE = "dns.zone"  # the records the operator publishes, as `bulwark dns` prints them
# Written by bulwark.bundle once every other file is: the facts `bulwark audit diff` compares,
# and with `render --sign` the manifest's SSH signature and the key that made it.
FACTS = "facts.json"
SIGNATURE = MANIFEST + ".sig"
ALLOWED_SIGNERS = "allowed_signers"


@dataclass(frozen=True)
class RenderedFile:
    """A managed file with its content, ready to upload or to write into an audit tree."""

    host: str
    role: str
    path: str
    content: str
    mode: str
    user: str
    group: str
    checker: str | None
    holds_secrets: bool = False  # revealed content differs from sealed: never diff or log it

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


def render_role_files(
    role: plan.RoleModule | ModuleType,
    topology: Topology,
    host: Host,
    secrets: SecretStore,
    reveal: bool,
) -> list[RenderedFile]:
    """Render the files `role` manages on `host`.

    When revealing, each file is also rendered sealed: if the two differ the file holds secrets,
    and `holds_secrets` makes the deploy upload it without ever showing its contents.
    """
    context = {
        "managed_notice": f"Managed by bulwark (role {role.ROLE}): local changes are overwritten.",
        **role.template_context(topology, host, secrets),
    }
    rendered = []
    for managed in role.managed_files(topology, host):
        own = {**context, "item": managed.item}
        content = render_template(role.ROLE, managed.template, own, reveal)
        sealed = render_template(role.ROLE, managed.template, own, False) if reveal else content
        rendered.append(
            RenderedFile(
                host=host.name,
                role=role.ROLE,
                path=managed.path,
                content=content,
                mode=managed.mode,
                user=managed.user,
                group=managed.group,
                checker=managed.checker,
                holds_secrets=content != sealed,
            )
        )
    return rendered


def render_host_configs(
    topology: Topology, host: Host, secrets: SecretStore, reveal: bool = False
) -> list[RenderedFile]:
    """Every file of every deployed role on `host`, in deploy order (bulwark.registry)."""
    files = [
        rendered
        for role in registry.host_modules(host)
        for rendered in render_role_files(role, topology, host, secrets, reveal)
    ]
    paths = [rendered.path for rendered in files]
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        raise BulwarkError(f"{host.name}: more than one role writes {', '.join(duplicates)}")
    return files


def write_audit_tree(files: Iterable[RenderedFile], out: Path) -> dict:
    """Write `out/HOST/<path>` for every file and `out/manifest.json`, replacing a previous
    render in `out` (see `check_output_dir`); return the manifest."""
    files = list(files)
    with replaced_output_dir(out) as previous:
        write_files(files, out, previous.tree)
        previous.discard()
        return write_manifest(files, out)


def write_files(files: Iterable[RenderedFile], out: Path, previous: Path | None = None) -> None:
    """Write `out/HOST/<path>` for every file, into an `out` that holds none of these hosts.

    A thousand hosts make 45,000 files in 30,000 directories, but only 7,000 distinct contents
    (every host's apt and sshd settings are the same):
    - a host whose tree in the `previous` render (moved aside, see `replaced_output_dir`) holds
      exactly its files, byte for byte and mode for mode, has that tree moved in, whole: a
      re-render writes only the hosts that changed;
    - a file whose content and mode this call wrote already is a hard link to that first copy
      (so `audit verify` names every link of a changed file: `bulwark.bundle.verify_bundle`);
      where the file system refuses a link, the file is written.
    A new file or directory costs this machine's disk up to a millisecond (ext4 without a
    journal steps over every inode freed in the last minutes), a link or a move a twentieth.
    """
    made = {str(out)}  # directories made so far: a thousand hosts share a few dozen paths
    first: dict[tuple[str, int], str] = {}  # content and mode -> the first file holding it
    digests: dict[tuple[int, int], str] = {}  # the previous render's files, by inode
    by_host: dict[str, list[RenderedFile]] = {}
    for rendered in files:
        by_host.setdefault(rendered.host, []).append(rendered)
    for host, host_files in by_host.items():
        if previous is not None and _moved_unchanged(previous, out, host, host_files, digests):
            for rendered in host_files:
                first.setdefault(_content_and_mode(rendered), _tree_path(out, rendered))
        else:
            for rendered in host_files:
                target = _tree_path(out, rendered)
                _make_directories(os.path.dirname(target), made)
                same = _content_and_mode(rendered)
                if same not in first or not _linked(first[same], target):
                    _write_new_file(target, rendered.content.encode(), same[1])
                    first[same] = target


def _moved_unchanged(
    previous: Path,
    out: Path,
    host: str,
    files: list[RenderedFile],
    digests: dict[tuple[int, int], str],
) -> bool:
    """Move `previous/host` to `out/host` if it holds exactly `files` and nothing else: regular
    files with their content and mode, owned by whoever renders, in no directory they do not
    need. Checked against the new render itself, not against any manifest; a file linked from
    many hosts is read once (`digests`, see `sha256_once`)."""
    expected = {rendered.path.lstrip("/"): _content_and_mode(rendered) for rendered in files}
    directories = {
        os.path.join(*parts[:depth])
        for parts in (path.split("/") for path in expected)
        for depth in range(1, len(parts))
    }
    tree = os.path.join(previous, host)
    if os.path.islink(tree):
        return False  # the host's tree must be a directory, not lead to one
    found = 0
    pending = [tree]
    try:
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    relative = os.path.relpath(entry.path, tree)
                    if entry.is_dir(follow_symlinks=False):
                        if relative not in directories:
                            return False
                        pending.append(entry.path)
                    elif not (
                        entry.is_file(follow_symlinks=False)
                        and _holds(entry, expected.get(relative), digests)
                    ):
                        return False
                    else:
                        found += 1
        if found != len(expected):
            return False
        os.rename(tree, os.path.join(out, host))
    except OSError:
        return False  # no previous tree of this host, or one it cannot read: written anew
    return True


def _holds(
    entry: os.DirEntry,
    content_and_mode: tuple[str, int] | None,
    digests: dict[tuple[int, int], str],
) -> bool:
    """The file is ours, with that mode and that content."""
    if content_and_mode is None:
        return False
    sha256, mode = content_and_mode
    status = entry.stat(follow_symlinks=False)
    if status.st_uid != os.getuid() or status.st_mode & 0o7777 != mode:
        return False
    return sha256_once(entry.path, digests)[1] == sha256


def sha256_once(
    path: str | os.PathLike[str], digests: dict[tuple[int, int], str]
) -> tuple[tuple[int, int], str]:
    """The file's identity (device, inode) and its sha256, read once for all its hard links:
    `digests` holds what was read so far."""
    status = os.stat(path)
    file_id = (status.st_dev, status.st_ino)
    if file_id not in digests:
        with open(path, "rb") as data:
            digests[file_id] = hashlib.file_digest(data, "sha256").hexdigest()
    return file_id, digests[file_id]


def _tree_path(out: Path, rendered: RenderedFile) -> str:
    """Where the audit tree holds a file: `out/HOST/<path>`."""
    return os.path.join(out, rendered.host, rendered.path.lstrip("/"))


def _content_and_mode(rendered: RenderedFile) -> tuple[str, int]:
    """What files must share to be one file: their sha256 and the mode the tree gives them
    (private files 0600, all others 0644)."""
    return rendered.sha256, 0o600 if int(rendered.mode, 8) & 0o077 == 0 else 0o644


def _linked(existing: str, target: str) -> bool:
    """Make `target` a hard link of `existing`; False where the file system will not: too many
    links to that file (ext4 allows 65,000), or no hard links at all."""
    try:
        os.link(existing, target)
    except OSError as error:
        if error.errno in (errno.EMLINK, errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP):
            return False
        raise
    return True


def write_manifest(files: Iterable[RenderedFile], out: Path) -> dict:
    """Write `out/manifest.json` and return it: path, mode, owner and sha256 of every file per
    host, sorted, so two renders of the same inventory and vault give byte-identical manifests."""
    hosts: dict[str, list[dict]] = {}
    for rendered in files:
        hosts.setdefault(rendered.host, []).append(
            {
                "path": rendered.path,
                "role": rendered.role,
                "mode": rendered.mode,
                "owner": f"{rendered.user}:{rendered.group}",
                "sha256": rendered.sha256,
            }
        )
    manifest = {
        "format": 1,
        "hosts": {
            name: sorted(entries, key=lambda entry: entry["path"])
            for name, entries in sorted(hosts.items())
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _make_directories(directory: str, made: set[str]) -> None:
    """`mkdir -p directory`, knowing which directories `made` holds already: no directory is
    asked for twice, and none is tried before its parent exists."""
    if directory in made:
        return
    _make_directories(os.path.dirname(directory), made)
    os.mkdir(directory)
    made.add(directory)


def _write_new_file(path: str, data: bytes, mode: int) -> None:
    """Write `data` to `path` with exactly `mode`: changed after the fact only when the umask
    took bits away (a change of mode is one more journal entry per file)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if os.fstat(descriptor).st_mode & 0o777 != mode:
            os.fchmod(descriptor, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


@dataclass
class PreviousRender:
    """What `replaced_output_dir` gives the block: the previous render's host trees (`tree`,
    moved aside; None if there was none) and `discard()`, to call once the new render is sure
    to be written and no longer moves host trees out of `tree`."""

    tree: Path | None
    discard: Callable[[], None]


@contextmanager
def replaced_output_dir(out: Path) -> Iterator[PreviousRender]:
    """`out`, empty, for a new render while the block runs (see `check_output_dir`).

    A previous render is moved aside (a sibling directory, renamed in one step), where
    `write_files` takes the host trees it can keep. If the block fails before calling
    `discard()`, the previous render is put back as it was, those host trees with it; once
    called, `rm -rf` deletes what is left of it while the block goes on. It is gone when the
    block ends.
    """
    check_output_dir(out)
    aside = None
    try:
        if out.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
            out.rename(aside / out.name)
        out.mkdir(parents=True)
    except OSError as error:
        raise BulwarkError(f"--out {out}: cannot create it: {error.strerror}") from None
    deleting: list[subprocess.Popen] = []

    def discard() -> None:
        if aside is not None and not deleting:
            deleting.append(
                subprocess.Popen(["rm", "-rf", "--", str(aside)], stderr=subprocess.PIPE)
            )

    try:
        yield PreviousRender(aside / out.name if aside is not None else None, discard)
        discard()
    except BaseException:
        if aside is not None and not deleting:
            _return_moved_hosts(out, aside / out.name)
            shutil.rmtree(out, ignore_errors=True)
            (aside / out.name).rename(out)
            aside.rmdir()
        raise
    finally:
        complaints = [process.communicate()[1] for process in deleting]
    if deleting and deleting[0].returncode != 0:
        raise BulwarkError(
            f"--out {out}: the previous render, moved to {aside}, cannot be deleted: "
            f"{complaints[0].decode(errors='replace').strip()}"
        )


def _return_moved_hosts(out: Path, previous: Path) -> None:
    """Put back into the previous render the host trees `write_files` moved from it to `out`:
    those its manifest lists that are in `out` and no longer in it."""
    try:
        hosts = json.loads((previous / MANIFEST).read_text())["hosts"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # it was an empty directory: nothing was taken from it
    for tree in out.iterdir():
        if tree.name in hosts and not (previous / tree.name).exists():
            tree.rename(previous / tree.name)


@contextmanager
def host_trees_written_aside(
    out: Path, previous: Path | None = None
) -> Iterator[Callable[[list[RenderedFile]], None]]:
    """A `write(files)` that has a forked child write those files (`write_files`, keeping
    unchanged host trees of the `previous` render) while the caller goes on; every child is
    done, and manifest.json written, when the block ends.

    A thousand hosts' trees are 45,000 files, mostly waiting on the disk, while rendering the
    next hosts, the reports and the checks are CPU work: child processes (forked, so they have
    the files already) let the two overlap on two cores. A thread would not: it would wait for
    the GIL after every system call. Each call's hosts must be hosts no other call writes.
    Copies are linked within a call only (no child waits for another's files): which copies
    are links of which then depends on the inventory and the previous render, never on timing.
    """
    children: list[multiprocessing.process.BaseProcess] = []
    written: list[RenderedFile] = []

    def write(files: list[RenderedFile]) -> None:
        child = multiprocessing.get_context("fork").Process(
            target=write_files,
            args=(files, out, previous),
            name="bulwark-write-files",
        )
        child.start()
        children.append(child)
        written.extend(files)

    try:
        yield write
    finally:
        for child in children:
            child.join()
    if any(child.exitcode != 0 for child in children):
        raise BulwarkError(f"--out {out}: writing the host trees failed (see above)")
    write_manifest(written, out)


def check_output_dir(out: Path) -> None:
    """Refuse an `--out` the render cannot use, before any work is done.

    It may be missing (it is created), empty, or a previous render (it is replaced). A symbolic
    link is refused rather than followed: the render would land, and the previous one be
    deleted, wherever it points.
    """
    if out.is_symlink():
        raise BulwarkError(f"--out {out}: is a symbolic link; give a real directory")
    if out.exists():
        if not out.is_dir():
            raise BulwarkError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()) and not _is_previous_render(out):
            raise BulwarkError(
                f"--out {out}: not empty and not a previous bulwark render; "
                "refusing to overwrite it"
            )
        return
    existing = next(parent for parent in out.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise BulwarkError(f"--out {out}: cannot create it: {existing} is not a directory")


def _is_previous_render(out: Path) -> bool:
    """Our manifest, and nothing in the directory but it and the host folders it lists."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        return False
    hosts = manifest.get("hosts")
    if not isinstance(hosts, dict):
        return False
    ours = {MANIFEST, PORTS_REPORT, REPORT, REPORT_HTML, *hosts}
    ours |= {FACTS, SIGNATURE, ALLOWED_SIGNERS, *_listed_files(manifest)}
    return all(entry.name in ours for entry in out.iterdir())


def _listed_files(manifest: dict) -> set[str]:
    """The top-level names of the files a manifest lists outside the host trees."""
    entries = manifest.get("files")
    if not isinstance(entries, list):
        return set()
    return {
        entry["path"].split("/")[0]
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("path"), str)
    }


def render_topology(topology: Topology, secrets: SecretStore) -> list[RenderedFile]:
    """All files of all hosts, sealed (placeholders instead of secrets)."""
    return [
        rendered
        for host in topology.hosts
        for rendered in render_host_configs(topology, host, secrets, reveal=False)
    ]
