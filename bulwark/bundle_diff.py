"""`bulwark audit diff OLD NEW`: what changed between two audit bundles, promises first.

First the semantic changes (bulwark.bundle_facts: ports opened or closed per host, sources and
exposure, TLS modes, VPN peers, volumes, retention, hosts and roles), then the files added,
removed and changed, then a unified diff of each changed text file. A line holding a secret's
placeholder is shown with the placeholder stripped of its digest (`<secret:NAME>`), and a secret
whose digest changed is one line, `changed digest: NAME`: the diff never shows more of a secret
than that it changed. The output is sorted and depends only on the two bundles' contents.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bulwark.bundle import ManifestError, bundle_files, manifest_entries, read_manifest
from bulwark.bundle_facts import semantic_changes
from bulwark.errors import BulwarkError
from bulwark.render import FACTS, PORTS_REPORT

# A secret as every rendered file shows it (bulwark.secret.Secret.placeholder).
PLACEHOLDER = re.compile(r"<secret:([^ >]+) sha256:([0-9a-f]{8}|sealed)>")
CONTEXT_LINES = 3


@dataclass
class Bundle:
    """One side of a diff, read once."""

    label: str  # OLD or NEW
    directory: Path
    entries: dict[str, dict]  # manifest entries by bundle-relative path
    files: dict[str, str]  # bundle_files: path -> kind
    ports: list[dict] | None
    facts: dict | None

    @classmethod
    def read(cls, directory: Path, label: str) -> Bundle:
        try:
            entries = manifest_entries(read_manifest(directory, label))
        except ManifestError as error:
            raise BulwarkError(f"{label} {directory}: {error}") from None
        return cls(
            label,
            directory,
            entries,
            bundle_files(directory),
            _json(directory, PORTS_REPORT, label, list),
            _json(directory, FACTS, label, dict),
        )

    def content(self, path: str) -> bytes:
        target = self.directory / path
        kind = self.files.get(path)
        if kind == "symlink":
            return f"(symbolic link to {target.readlink()})\n".encode()
        if kind != "file":
            return b"(not a regular file)\n"
        try:
            return target.read_bytes()
        except OSError as error:
            raise BulwarkError(
                f"{self.label} {self.directory}: cannot read {path}: {error}"
            ) from None


def _json(directory: Path, name: str, label: str, kind: type) -> list | dict | None:
    path = directory / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BulwarkError(f"{label} {directory}: cannot read {name}: {error}") from None
    if not isinstance(data, kind):
        raise BulwarkError(f"{label} {directory}: {name} is not what bulwark writes there")
    return data


@dataclass
class BundleDiff:
    """The differences between two bundles, as `bulwark audit diff` prints them."""

    semantic: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # added / removed / changed, with details
    diffs: list[str] = field(default_factory=list)  # unified diffs of the changed text files

    @property
    def changed(self) -> bool:
        return bool(self.semantic or self.files)

    def lines(self) -> list[str]:
        if not self.changed:
            return [*self.notes, "no differences"]
        semantic = [f"  {line}" for line in self.semantic] or ["  none"]
        counts = {
            kind: sum(line.startswith(f"{kind}:") for line in self.files)
            for kind in ("added", "removed", "changed")
        }
        summary = ", ".join(f"{count} {kind}" for kind, count in counts.items())
        return [
            f"semantic changes: {len(self.semantic)}",
            *semantic,
            *self.notes,
            f"files: {summary}",
            *self.files,
            *([""] if self.diffs else []),
            *self.diffs,
        ]


def diff_bundles(old_directory: Path, new_directory: Path) -> BundleDiff:
    """Compare two bundles (BulwarkError when either is not one)."""
    old = Bundle.read(old_directory, "OLD")
    new = Bundle.read(new_directory, "NEW")
    result = BundleDiff()
    result.semantic = semantic_changes(old.ports, new.ports, old.facts, new.facts)
    for name, what in ((PORTS_REPORT, "ports"), (FACTS, "TLS, VPN peers, volumes, retention")):
        missing = [side.label for side in (old, new) if not (side.directory / name).is_file()]
        if missing:
            result.notes.append(f"note: no {name} in {' and '.join(missing)}: {what} not compared")
    for path in sorted(old.files.keys() | new.files.keys()):
        if path not in old.files:
            result.files.append(f"added: {path}")
            continue
        if path not in new.files:
            result.files.append(f"removed: {path}")
            continue
        details = _meta_changes(old.entries.get(path), new.entries.get(path))
        before, after = old.content(path), new.content(path)
        if before != after:
            text_details, diff = _content_diff(path, before, after)
            details += text_details
            result.diffs += diff
        if details or before != after:
            result.files.append(f"changed: {path}")
            result.files += [f"  {detail}" for detail in details]
    return result


def _meta_changes(old: dict | None, new: dict | None) -> list[str]:
    """Mode, owner or role a host file gets, from the two manifests."""
    if old is None or new is None:
        return []
    return [
        f"{key} {old.get(key)} -> {new.get(key)}"
        for key in ("mode", "owner", "role")
        if old.get(key) != new.get(key)
    ]


def _content_diff(path: str, before: bytes, after: bytes) -> tuple[list[str], list[str]]:
    """(details for the file list, unified diff lines) of one changed file."""
    try:
        old_text, new_text = before.decode(), after.decode()
    except UnicodeDecodeError:
        return ["binary: contents differ"], []
    old_digests = dict(PLACEHOLDER.findall(old_text))
    new_digests = dict(PLACEHOLDER.findall(new_text))
    details = [
        f"changed digest: {name}"
        for name in sorted(old_digests.keys() & new_digests.keys())
        if old_digests[name] != new_digests[name]
    ]
    diff = list(
        difflib.unified_diff(
            _masked(old_text),
            _masked(new_text),
            fromfile=f"old/{path}",
            tofile=f"new/{path}",
            n=CONTEXT_LINES,
            lineterm="",
        )
    )
    return details, diff


def _masked(text: str) -> list[str]:
    """The lines of `text`, each placeholder without its digest."""
    return PLACEHOLDER.sub(r"<secret:\1>", text).splitlines()
