"""`bulwark vault`: create the vault and read, write, list and delete its entries by hand.

Values enter through stdin or a file, never the command line (shell history, `ps`), and leave
only through `vault get`. Every other command shows names and short digests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import click

from bulwark.errors import BulwarkError
from bulwark.vault import KEY_ENV, Vault, ensure_key, init_vault, open_vault

_vault_option = click.option(
    "--vault",
    "vault_path",
    envvar="BULWARK_VAULT",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The vault file (or set BULWARK_VAULT).",
)


@click.group("vault")
def vault() -> None:
    """Manage the encrypted vault; its key file is the one BULWARK_VAULT_KEY names."""


def create_vault(path: Path) -> Vault:
    """Create the vault (see `init`) and say which key it uses; `secrets generate` shares it."""
    new_vault, key_created = init_vault(path)
    key_state = "new" if key_created else "existing"
    click.echo(f"created vault {path} with the {key_state} key (id {new_vault.key_id})")
    return new_vault


@vault.command()
@_vault_option
def init(vault_path: Path) -> None:
    """Create an empty vault, and its key file at BULWARK_VAULT_KEY if that does not exist.

    Never replaces an existing vault or key file. Keep the key file out of the repository.
    """
    create_vault(vault_path)


@vault.command()
@_vault_option
@click.argument("name")
def get(vault_path: Path, name: str) -> None:
    """Print the value of secret NAME on stdout: the one command that shows a value."""
    click.echo(open_vault(vault_path).get(name).reveal())


@vault.command("set")
@_vault_option
@click.argument("name")
@click.option(
    "--from-file",
    "source",
    type=click.File("r", encoding="utf-8"),
    default="-",
    help="Read the value from this file instead of stdin.",
)
@click.option("--replace", is_flag=True, help="Replace the value if NAME already exists.")
def set_(vault_path: Path, name: str, source: TextIO, replace: bool) -> None:
    """Store secret NAME, read from stdin (or --from-file), never from the command line.

    One trailing newline is dropped, so `bulwark vault get A | bulwark vault set B` copies A
    exactly. On a terminal the value is prompted for without echo.
    """
    opened = open_vault(vault_path)
    if name in opened and not replace:
        raise BulwarkError(f"secret {name} already exists: pass --replace to change it")
    if source.isatty():
        value = click.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = source.read().removesuffix("\n").removesuffix("\r")
    opened.set(name, value)
    opened.save()
    click.echo(f"stored {opened.get(name)}")


@vault.command("list")
@_vault_option
def list_(vault_path: Path) -> None:
    """List every secret's name with the first 8 hex digits of its value's SHA-256."""
    opened = open_vault(vault_path)
    names = opened.names()
    width = max(map(len, names), default=0)
    for name in names:
        click.echo(f"{name:<{width}}  sha256:{opened.get(name).digest}")


@vault.command("rotate-key")
@_vault_option
@click.option(
    "--new-key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new key file; created (0600) if it does not exist.",
)
def rotate_key(vault_path: Path, new_key: Path) -> None:
    """Re-encrypt the vault with the key in --new-key (a fresh one if the file is new).

    Afterwards only the new key opens the vault: point BULWARK_VAULT_KEY at it.
    """
    opened = open_vault(vault_path)
    old_id = opened.key_id
    opened.rotate_key(ensure_key(new_key)[0])
    click.echo(
        f"re-encrypted {vault_path} with key {opened.key_id} (was {old_id}): "
        f"set {KEY_ENV}={new_key}"
    )


@vault.command()
@_vault_option
@click.argument("name")
@click.confirmation_option(prompt="Delete this secret? Data it protects may become unreadable")
def delete(vault_path: Path, name: str) -> None:
    """Remove secret NAME from the vault (asks first; --yes skips the question)."""
    opened = open_vault(vault_path)
    opened.delete(name)
    opened.save()
    click.echo(f"deleted {name}")
