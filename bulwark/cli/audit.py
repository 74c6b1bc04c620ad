"""`bulwark audit verify|diff`, and `render --sign`: the auditor's checks on a rendered bundle.

The bundle is what `bulwark render --out DIR` writes; `--sign KEY` signs its manifest with the
operator's SSH key (bulwark.bundle). Neither command needs the inventory, the vault or a host.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bulwark.bundle import MANIFEST, NAMESPACE, SigningKey, signing_key, verify_bundle
from bulwark.bundle_diff import diff_bundles

_BUNDLE = click.Path(exists=True, file_okay=False, path_type=Path)


def signing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--sign KEY` and `--signer NAME` for `bulwark render`, checked before anything is
    rendered: the command receives `sign`, a SigningKey or None."""

    @functools.wraps(command)
    def checked(*args: Any, sign: Path | None, signer: str | None, **kwargs: Any) -> Any:
        if sign is None and signer is not None:
            raise click.UsageError("--signer NAME names the signer of --sign KEY: give both")
        key: SigningKey | None = None if sign is None else signing_key(sign, signer)
        return command(*args, sign=key, **kwargs)

    checked = click.option(
        "--signer",
        metavar="NAME",
        help="The signer's name in allowed_signers (default: the key's comment).",
    )(checked)
    return click.option(
        "--sign",
        metavar="KEY",
        type=click.Path(dir_okay=False, path_type=Path),
        help=(
            f"Sign {MANIFEST} with this SSH key (ssh-keygen -Y sign, namespace {NAMESPACE}): "
            "a private key file, or KEY.pub when ssh-agent holds the key. Writes "
            f"{MANIFEST}.sig and allowed_signers."
        ),
    )(checked)


@click.group("audit")
def audit() -> None:
    """Check a bundle written by `bulwark render`: its signature and hashes, or what changed."""


@audit.command("verify")
@click.argument("directory", metavar="DIR", type=_BUNDLE)
@click.option(
    "--allowed-signers",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your own allowed_signers file (ssh-keygen's format) holding the operator's key; "
    "without it the key shipped in the bundle is used and its fingerprint printed.",
)
@click.option(
    "--signer",
    metavar="NAME",
    help="The principal to check the signature for (default: whoever the file lists for the key).",
)
@click.option(
    "--unsigned-ok", is_flag=True, help="A bundle without a signature passes on its hashes alone."
)
def verify(
    directory: Path, allowed_signers: Path | None, signer: str | None, unsigned_ok: bool
) -> None:
    """Check DIR's signature and every file's hash against its manifest.

    Prints each problem on a line of its own: `signature: ...`, `changed: PATH`, `missing:
    PATH`, `added: PATH` (a file the manifest does not list). Exit code 0 when the signature
    and every hash are good, 1 otherwise, 2 when DIR is not a bundle.

    Without bulwark, check the signature with OpenSSH, then each file's sha256 against
    manifest.json (README, "The auditor's path"):

    \b
      ssh-keygen -Y verify -f allowed_signers -I NAME -n bulwark-audit \\
          -s manifest.json.sig < manifest.json
    """
    result = verify_bundle(directory, allowed_signers, signer, unsigned_ok)
    for line in (*result.notes, *result.problems):
        click.echo(line)
    if result.problems:
        count = len(result.problems)
        click.echo(f"FAILED: {count} problem{'s' if count > 1 else ''} in {directory}", err=True)
        sys.exit(1)
    click.echo(f"verified: {result.checked} files match {MANIFEST}")


@audit.command("diff")
@click.argument("old", type=_BUNDLE)
@click.argument("new", type=_BUNDLE)
def diff(old: Path, new: Path) -> None:
    """Compare bundle OLD with bundle NEW, the platform's promises first.

    First the semantic changes: ports opened or closed per host, firewall sources and
    exposure, TLS modes, VPN peers, volumes, log retention, hosts and roles. Then the files
    added, removed and changed, and a unified diff of each; a secret shows only as `changed
    digest: NAME`. Exit code 0: no difference; 1: differences (so a CI job can ask for a
    review); 2: OLD or NEW is not a bundle.
    """
    result = diff_bundles(old, new)
    click.echo("\n".join(result.lines()))
    sys.exit(1 if result.changed else 0)
