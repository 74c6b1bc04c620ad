"""The lab accounts' passwords, as `bulwark secrets generate` left them in the credentials file.

Tests and benchmarks log in with them. They are held as `Secret`s from the moment they are
read: pytest prints the arguments of every frame of a failing test, and a benchmark may print
an account, so what they show is a placeholder, never a password.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bulwark.errors import BulwarkError
from bulwark.lab import paths
from bulwark.secret import Secret
from bulwark.topology import Topology

CREDENTIALS_FILE = paths.STATE_DIR / "credentials.json"


@dataclass(frozen=True)
class LabAccount:
    """One account as a client sees it: its address and passwords (app passwords by label)."""

    user: str
    address: str
    app_passwords: tuple[Secret, ...]
    main_password: Secret
    # Closed in the inventory: every protocol must refuse it (its passwords stay in the vault
    # until the purge, so a reopened account logs in with the same ones).
    closed: bool = False

    @property
    def password(self) -> Secret:
        """The app password clients use unless a test says otherwise (the first label's)."""
        return self.app_passwords[0]


def lab_accounts(topology: Topology, path: Path = CREDENTIALS_FILE) -> tuple[LabAccount, ...]:
    """Every topology account, in inventory order, with its passwords from `path`."""
    try:
        credentials = json.loads(path.read_text())
        accounts = []
        for account in topology.accounts:
            entry = credentials[account.user]
            accounts.append(
                LabAccount(
                    user=account.user,
                    address=account.address(topology.domain),
                    app_passwords=tuple(
                        Secret(f"{account.user}/app/{label}", entry["app"][label])
                        for label in account.app_passwords
                    ),
                    main_password=Secret(f"{account.user}/main", entry["main"]),
                    closed=account.closed is not None,
                )
            )
    except (OSError, ValueError, KeyError, TypeError) as error:
        # The message names the file and the kind of problem, never a value read from it.
        raise BulwarkError(
            f"{path}: no usable lab credentials ({type(error).__name__}); "
            "run `make lab-secrets` to write them"
        ) from None
    return tuple(accounts)
