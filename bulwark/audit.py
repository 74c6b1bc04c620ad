"""Where an audit gets its secrets: the vault if the auditor holds its key, else sealed names.

Either way templates only ever see placeholders (the audit environment never reveals); with the
vault the placeholders carry each value's short digest, so auditors can see that a secret
changed between two renders without seeing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from bulwark.plan import SecretStore
from bulwark.secret import Secret
from bulwark.topology import Topology


class SealedSecret(Secret):
    """A secret whose value the auditor cannot see: only its name is known."""

    __slots__ = ()

    def __init__(self, name: str):
        super().__init__(name, "")

    @property
    def digest(self) -> str:
        return "sealed"

    def reveal(self) -> str:
        raise PermissionError(f"{self.name} is sealed: the audit has no vault key")


class SealedSecrets:
    """Stands in for the vault when the auditor has no key."""

    def get(self, name: str) -> Secret:
        return SealedSecret(name)

    def __contains__(self, name: object) -> bool:
        return True  # every name the roles ask for is rendered as its sealed placeholder


def audit_secrets(topology: Topology) -> SecretStore:
    """The vault when BULWARK_VAULT_KEY and the vault file are both there, else sealed names."""
    from bulwark.vault import open_vault

    vault_file = topology.vault_file
    if os.environ.get("BULWARK_VAULT_KEY") and vault_file and Path(vault_file).is_file():
        return open_vault(Path(vault_file))
    click.echo(
        "note: vault not opened (no BULWARK_VAULT_KEY or no vault file): "
        "secrets render as <secret:NAME sha256:sealed>",
        err=True,
    )
    return SealedSecrets()
