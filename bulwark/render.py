"""Render every file every role writes, for one host or the whole topology, with no connection.

The roles call `render_role_files` at deploy time (secrets revealed); `bulwark render` calls
`render_topology` for auditors (secrets as placeholders). Same context functions, same
templates, so what an auditor reads is what a host gets.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
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


def write_audit_tree(
    files: Iterable[RenderedFile], out: Path, progress: Callable[[], None] | None = None
) -> dict:
    """Write `out/HOST/<path>` for every file and `out/manifest.json`; return the manifest.

    The manifest lists path, mode, owner and sha256 per host, sorted, so two renders of the same
    inventory and vault give byte-identical manifests.
    """
    _prepare_output_dir(out)
    hosts: dict[str, list[dict]] = {}
    made: set[Path] = set()  # directories made so far: a thousand hosts share a few dozen paths
    for rendered in files:
        target = out / rendered.host / rendered.path.lstrip("/")
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        target.write_text(rendered.content)
        target.chmod(0o600 if int(rendered.mode, 8) & 0o077 == 0 else 0o644)
        hosts.setdefault(rendered.host, []).append(
            {
                "path": rendered.path,
                "role": rendered.role,
                "mode": rendered.mode,
                "owner": f"{rendered.user}:{rendered.group}",
                "sha256": rendered.sha256,
            }
        )
        if progress:
            progress()
    manifest = {
        "format": 1,
        "hosts": {
            name: sorted(entries, key=lambda entry: entry["path"])
            for name, entries in sorted(hosts.items())
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


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


def _prepare_output_dir(out: Path) -> None:
    """Replace a previous render in `out` (see `check_output_dir`)."""
    check_output_dir(out)
    try:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    except OSError as error:
        raise BulwarkError(f"--out {out}: cannot create it: {error.strerror}") from None


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
