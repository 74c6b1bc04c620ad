"""The audit bundle as one signed whole: its manifest hashes every file, an SSH signature covers
the manifest, and `bulwark audit verify` checks both.

A render's last step is `finish_bundle`: it writes `facts.json` (bulwark.bundle_facts), lists
every file outside the host trees in the manifest (`files`: ports.json, report.md, facts.json and
whatever else the render wrote), and with `render --sign KEY` signs the manifest with OpenSSH's
file signatures (`ssh-keygen -Y sign`, namespace `bulwark-audit`, as git signs commits). The
signature goes to `manifest.json.sig` and the signer's public key to `allowed_signers`, so an
auditor without bulwark can check it:

    ssh-keygen -Y verify -f allowed_signers -I NAME -n bulwark-audit \\
        -s manifest.json.sig < manifest.json

The `allowed_signers` shipped in the bundle only says which key signed, not whose it is: an
auditor compares its fingerprint with the operator's, or verifies against a file of their own
(`bulwark audit verify DIR --allowed-signers FILE`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bulwark.bundle_facts import bundle_facts
from bulwark.errors import BulwarkError
from bulwark.render import (
    ALLOWED_SIGNERS,
    FACTS,
    MANIFEST,
    SIGNATURE,
    RenderedFile,
    sha256_once,
)
from bulwark.topology import Topology

# The signature namespace: a signature made for anything else (a git commit, a file signed by
# hand) never verifies as a bulwark bundle, and ours never as anything else.
NAMESPACE = "bulwark-audit"
# A principal as allowed_signers reads it: no spaces, commas, quotes or wildcards.
PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
# The bundle's own files that the manifest cannot list: itself and what signs it.
UNLISTED = frozenset({MANIFEST, SIGNATURE, ALLOWED_SIGNERS})
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")


@dataclass(frozen=True)
class SigningKey:
    """The operator's key, checked before anything is rendered."""

    path: Path
    principal: str  # the signer's name in allowed_signers
    fingerprint: str  # SHA256:...
    key_type: str  # ED25519, RSA ...


def _ssh_keygen() -> str:
    tool = shutil.which("ssh-keygen")
    if tool is None:
        raise BulwarkError("ssh-keygen not found: install openssh-client")
    return tool


def _run(*args: str, stdin_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    if stdin_path is None:
        return subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    with stdin_path.open("rb") as data:
        return subprocess.run(args, stdin=data, capture_output=True, check=False, text=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def signing_key(path: Path, signer: str | None = None) -> SigningKey:
    """Check `render --sign KEY [--signer NAME]` before rendering: KEY is an SSH key ssh-keygen
    can sign with (a private key file, or a public key whose private half ssh-agent holds), and
    the signer has a name allowed_signers can hold (NAME, else the key's comment)."""
    tool = _ssh_keygen()
    if not path.is_file():
        raise BulwarkError(f"--sign {path}: no such file")
    if not os.access(path, os.R_OK):
        raise BulwarkError(f"--sign {path}: not readable")
    with path.open("rb") as key_file:
        private = key_file.read(64).lstrip().startswith(b"-----BEGIN")
    info = path.stat()
    if private and info.st_uid == os.getuid() and info.st_mode & 0o077:
        raise BulwarkError(
            f"--sign {path}: a private key others can read (mode {info.st_mode & 0o777:04o}); "
            f"ssh-keygen refuses it: chmod 600 {path}"
        )
    listed = _run(tool, "-l", "-f", str(path))
    match = re.fullmatch(r"\d+ (SHA256:\S+) ?(.*) \((\S+)\)", listed.stdout.strip())
    if listed.returncode != 0 or match is None:
        raise BulwarkError(f"--sign {path}: not an SSH key ({_last_line(listed.stderr)})")
    if not private and not os.environ.get("SSH_AUTH_SOCK"):
        raise BulwarkError(
            f"--sign {path}: a public key signs only through ssh-agent, and SSH_AUTH_SOCK is not "
            "set; give the private key file, or load it with ssh-add"
        )
    fingerprint, comment, key_type = match.groups()
    if signer is not None:
        if not PRINCIPAL.fullmatch(signer):
            raise BulwarkError(
                f"--signer {signer!r}: letters, digits and . _ @ + - only (no spaces or "
                "wildcards: it is a principal in allowed_signers)"
            )
        principal = signer
    elif comment and comment != "no comment" and PRINCIPAL.fullmatch(comment):
        principal = comment
    else:
        raise BulwarkError(
            f"--sign {path}: the key's comment {comment!r} cannot name the signer in "
            "allowed_signers; give --signer NAME"
        )
    return SigningKey(path, principal, fingerprint, key_type)


def finish_bundle(
    topology: Topology, files: list[RenderedFile], out: Path, sign: SigningKey | None = None
) -> str | None:
    """The render's last step: facts.json, every top-level file in the manifest, and the
    signature when `sign` is given (then a line saying who signed, for the operator)."""
    facts = bundle_facts(topology, files)
    (out / FACTS).write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    complete_manifest(out)
    if sign is None:
        return None
    return sign_manifest(out, sign)


def complete_manifest(out: Path) -> dict:
    """Add `files` to out/manifest.json: path and sha256 of every file outside the host trees
    (ports.json, report.md, facts.json ...), sorted. Host entries are left as they are."""
    manifest = json.loads((out / MANIFEST).read_text())
    hosts = set(manifest["hosts"])
    others = [entry for entry in out.iterdir() if entry.name not in hosts | UNLISTED]
    listed = [
        {"path": path, "sha256": _sha256(out / path)}
        for path, kind in sorted(bundle_files(out, others).items())
        if kind == "file"
    ]
    manifest["files"] = listed
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def sign_manifest(out: Path, key: SigningKey) -> str:
    """out/manifest.json.sig and out/allowed_signers, with ssh-keygen -Y sign."""
    for name in (SIGNATURE, ALLOWED_SIGNERS):
        (out / name).unlink(missing_ok=True)
    # Data on stdin, signature on stdout: ssh-keygen never asks whether to overwrite a file,
    # and asks for a passphrase (if the agent lacks the key) on the terminal.
    result = _run(
        _ssh_keygen(), "-Y", "sign", "-f", str(key.path), "-n", NAMESPACE, stdin_path=out / MANIFEST
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise BulwarkError(
            f"--sign {key.path}: ssh-keygen could not sign {out / MANIFEST}: "
            f"{_last_line(result.stderr)} (a key with a passphrase needs a terminal, or "
            "ssh-add it first); the bundle is written but not signed"
        )
    try:
        public_key, fingerprint = signature_key(result.stdout)
    except ValueError as error:
        raise BulwarkError(
            f"--sign {key.path}: ssh-keygen wrote no SSH signature ({error})"
        ) from None
    if fingerprint != key.fingerprint:
        raise BulwarkError(
            f"--sign {key.path}: ssh-keygen signed with {fingerprint}, not the key's own "
            f"{key.fingerprint}; the bundle is written but not signed"
        )
    (out / SIGNATURE).write_text(result.stdout)
    (out / ALLOWED_SIGNERS).write_text(
        f"# The key that signed {MANIFEST}: {key.key_type} {fingerprint}.\n"
        "# It proves who signed only once this fingerprint matches the one the operator gave.\n"
        f'{key.principal} namespaces="{NAMESPACE}" {public_key}\n'
    )
    return f"signed {MANIFEST} as {key.principal} with {key.key_type} key {fingerprint}"


def signature_key(armored: str) -> tuple[str, str]:
    """The public key inside an SSH signature: (`TYPE BASE64`, `SHA256:...` fingerprint)."""
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or (lines[0], lines[-1]) != _ARMOR:
        raise ValueError("not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise ValueError("not an armored SSH signature") from None
    if blob[:6] != b"SSHSIG":
        raise ValueError("not an SSH signature (no SSHSIG magic)")
    key, _ = _ssh_string(blob, 10)  # magic, then a uint32 version
    key_type, _ = _ssh_string(key, 0)
    digest = base64.b64encode(hashlib.sha256(key).digest()).decode().rstrip("=")
    return f"{key_type.decode()} {base64.b64encode(key).decode()}", f"SHA256:{digest}"


def _ssh_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated SSH signature")
    length = int.from_bytes(blob[offset : offset + 4], "big")
    end = offset + 4 + length
    if end > len(blob):
        raise ValueError("truncated SSH signature")
    return blob[offset + 4 : end], end


# --- reading a bundle ---------------------------------------------------------------------


class ManifestError(ValueError):
    """manifest.json is there but is not a bulwark manifest (damaged or foreign)."""


def read_manifest(directory: Path, label: str = "DIR") -> dict:
    """The bundle's manifest; a BulwarkError (exit 2) when `directory` holds none."""
    if not directory.is_dir():
        raise BulwarkError(f"{label} {directory}: not a directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise BulwarkError(f"{label} {directory}: not a bulwark bundle (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ManifestError(f"{MANIFEST} cannot be read: {error}") from None


def manifest_entries(manifest: object) -> dict[str, dict]:
    """Bundle-relative path -> its manifest entry (sha256; host files also path, role, mode,
    owner). A ManifestError if the manifest is not a bulwark one or names a path outside."""
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise ManifestError(f"{MANIFEST} is not a bulwark manifest (format 1)")
    hosts, files = manifest.get("hosts"), manifest.get("files", [])
    if not isinstance(hosts, dict) or not isinstance(files, list):
        raise ManifestError(f"{MANIFEST} is not a bulwark manifest (hosts, files)")
    entries: dict[str, dict] = {}
    listed = [
        (f"{host}/{entry.get('path', '').lstrip('/')}" if isinstance(entry, dict) else "", entry)
        for host, host_entries in sorted(hosts.items())
        for entry in (host_entries if isinstance(host_entries, list) else [None])
    ]
    listed += [(entry.get("path", "") if isinstance(entry, dict) else "", entry) for entry in files]
    for path, entry in listed:
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ManifestError(f"{MANIFEST}: an entry without a sha256: {entry!r:.80}")
        parts = path.split("/")
        if not path or any(part in ("", ".", "..") for part in parts) or path in UNLISTED:
            raise ManifestError(f"{MANIFEST} lists a path outside the bundle: {path!r}")
        entries[path] = entry
    return entries


def bundle_files(directory: Path, only: Iterable[Path] | None = None) -> dict[str, str]:
    """Every entry under `directory` (or under those of its entries in `only`) but the manifest,
    its signature and allowed_signers: bundle-relative path -> `file`, `symlink` or `other`.
    Symbolic links are not followed."""
    prefix = os.path.join(directory, "")
    found: dict[str, str] = {}
    pending = [prefix] if only is None else []
    for path in only or ():
        if path.is_dir() and not path.is_symlink():
            pending.append(os.fspath(path))
        else:
            found[os.fspath(path)[len(prefix) :]] = _kind(path)
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                relative = entry.path[len(prefix) :]
                if relative not in UNLISTED:
                    found[relative] = _kind(entry)
    return dict(sorted(found.items()))


def _kind(entry: Path | os.DirEntry) -> str:
    if entry.is_symlink():
        return "symlink"
    return "file" if entry.is_file() else "other"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


# --- verifying a bundle -------------------------------------------------------------------


@dataclass
class Verification:
    """What `bulwark audit verify` found: problems (any is a failure) and notes."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0


def verify_bundle(
    directory: Path,
    allowed_signers: Path | None = None,
    signer: str | None = None,
    unsigned_ok: bool = False,
) -> Verification:
    """Check the signature of the manifest and every file's hash against it.

    The signature is checked against the auditor's `allowed_signers` when given, else against
    the one in the bundle (which proves only that the manifest is intact since the holder of
    that key signed it: a note says to compare the fingerprint). Every file the manifest lists
    must be there with its hash; any other file is reported added.
    """
    result = Verification()
    expected: dict[str, dict] | None = None
    try:
        expected = manifest_entries(read_manifest(directory))
    except ManifestError as error:
        if not (directory / SIGNATURE).exists():
            raise BulwarkError(f"DIR {directory}: not a bulwark bundle ({error})") from None
        damaged = f"changed: {MANIFEST} ({error})"
    _verify_signature(directory, allowed_signers, signer, unsigned_ok, result)
    if expected is None:
        result.problems.append(damaged)
        return result
    present = bundle_files(directory)
    problems = []
    digests: dict[tuple[int, int], str] = {}  # (device, inode) -> sha256: links hashed once
    changed: dict[tuple[int, int], list[str]] = {}  # (device, inode) -> its changed names
    for path, entry in expected.items():
        kind = present.get(path)
        if kind is None:
            problems.append((path, f"missing: {path}"))
        elif kind != "file":
            problems.append((path, f"changed: {path} (a {kind}, not a regular file)"))
        else:
            try:
                file_id, digest = sha256_once(directory / path, digests)
            except OSError as error:
                problems.append((path, f"changed: {path} (cannot read it: {error.strerror})"))
            else:
                if digest != entry["sha256"]:
                    problems.append((path, f"changed: {path}"))
                    changed.setdefault(file_id, []).append(path)
        result.checked += 1
    problems += [(path, f"added: {path}") for path in present if path not in expected]
    result.problems += [problem for _, problem in sorted(problems)]
    result.notes += [
        f"{names[0]} and {len(names) - 1} more of the changed files are one file (hard links): "
        "bulwark render writes each content once and links its copies, so a change to one "
        "is a change to all"
        for names in sorted(sorted(names) for names in changed.values() if len(names) > 1)
    ]
    return result


def _verify_signature(
    directory: Path,
    allowed_signers: Path | None,
    signer: str | None,
    unsigned_ok: bool,
    result: Verification,
) -> None:
    signature = directory / SIGNATURE
    if not signature.exists():
        if allowed_signers is not None or not unsigned_ok:
            result.problems.append(f"signature: not signed (no {SIGNATURE})")
        else:
            result.notes.append(f"not signed (no {SIGNATURE}): only the hashes were checked")
        return
    try:
        _, fingerprint = signature_key(signature.read_text())
    except (OSError, ValueError) as error:
        result.problems.append(f"signature: {SIGNATURE} is damaged ({error})")
        return
    own = allowed_signers is None
    signers = directory / ALLOWED_SIGNERS if own else allowed_signers
    assert signers is not None
    if not signers.is_file():
        where = f"no {ALLOWED_SIGNERS} in the bundle" if own else f"{signers} is not a file"
        result.problems.append(
            f"signature: {where}; cannot check the key {fingerprint} (give --allowed-signers FILE)"
        )
        return
    tool = _ssh_keygen()
    if signer is not None:
        principals = [signer]
    else:
        found = _run(tool, "-Y", "find-principals", "-s", str(signature), "-f", str(signers))
        principals = found.stdout.split() if found.returncode == 0 else []
        if not principals:
            result.problems.append(f"signature: the key {fingerprint} is not in {signers}")
            return
    checked = _run(
        tool,
        "-Y",
        "verify",
        "-f",
        str(signers),
        "-I",
        principals[0],
        "-n",
        NAMESPACE,
        "-s",
        str(signature),
        stdin_path=directory / MANIFEST,
    )
    if checked.returncode != 0:
        result.problems.append(
            f"signature: {MANIFEST} does not match {SIGNATURE} by {principals[0]} "
            f"({fingerprint}) in {signers}: {_last_line(checked.stderr + checked.stdout)}"
        )
        return
    result.notes.append(f"signature: good, by {principals[0]} with key {fingerprint}")
    if own:
        result.notes.append(
            f"checked only against the key in the bundle's own {ALLOWED_SIGNERS}: compare its "
            f"fingerprint {fingerprint} with the operator's, or verify with --allowed-signers FILE"
        )
    else:
        result.notes.append(f"the key is {principals[0]}'s in {signers}")
