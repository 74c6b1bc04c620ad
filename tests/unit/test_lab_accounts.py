"""The lab accounts' passwords, read for tests and benchmarks, never show in what they print."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bulwark.errors import BulwarkError
from bulwark.lab.accounts import lab_accounts
from bulwark.topology import Account

_TOPOLOGY = SimpleNamespace(
    domain="example.com",
    accounts=(Account("alice", "Alice", ("laptop", "phone")), Account("bob", "Bob", ("desktop",))),
)
_CREDENTIALS = {
    "alice": {"main": "main-password-a", "app": {"laptop": "app-laptop-a", "phone": "app-phone-a"}},
    "bob": {"main": "main-password-b", "app": {"desktop": "app-desktop-b"}},
}


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(content)
    return path


def test_accounts_come_in_inventory_order_with_their_app_passwords_by_label(tmp_path):
    alice, bob = lab_accounts(_TOPOLOGY, _write(tmp_path, json.dumps(_CREDENTIALS)))
    assert (alice.user, alice.address, bob.address) == (
        "alice",
        "alice@example.com",
        "bob@example.com",
    )
    assert [secret.reveal() for secret in alice.app_passwords] == ["app-laptop-a", "app-phone-a"]
    assert alice.password.reveal() == "app-laptop-a"
    assert alice.main_password.reveal() == "main-password-a"


def test_printing_an_account_shows_no_password(tmp_path):
    accounts = lab_accounts(_TOPOLOGY, _write(tmp_path, json.dumps(_CREDENTIALS)))
    printed = repr(accounts) + str(accounts) + "".join(f"{account}" for account in accounts)
    passwords = [
        value
        for entry in _CREDENTIALS.values()
        for value in (entry["main"], *entry["app"].values())
    ]
    assert passwords and not [password for password in passwords if password in printed]
    assert "<secret:alice/app/laptop sha256:" in printed


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        json.dumps({"alice": _CREDENTIALS["alice"]}),
        json.dumps({**_CREDENTIALS, "alice": {"main": "main-password-a", "app": {}}}),
        json.dumps(["app-laptop-a"]),
    ],
    ids=["empty", "truncated", "account-missing", "label-missing", "not-a-mapping"],
)
def test_an_unusable_credentials_file_names_the_file_and_no_value(tmp_path, content):
    path = _write(tmp_path, content)
    with pytest.raises(BulwarkError) as raised:
        lab_accounts(_TOPOLOGY, path)
    assert str(path) in str(raised.value)
    assert "app-laptop-a" not in str(raised.value)


def test_a_missing_credentials_file_says_how_to_write_it(tmp_path):
    with pytest.raises(BulwarkError, match="make lab-secrets"):
        lab_accounts(_TOPOLOGY, tmp_path / "absent.json")


def test_a_closed_account_keeps_its_passwords_and_says_it_is_closed(tmp_path):
    """The lab's closure tests log in as the closed account with its own passwords (and must
    be refused), and as it again once reopened."""
    topology = SimpleNamespace(
        domain="example.com",
        accounts=(
            _TOPOLOGY.accounts[0],
            Account("bob", "Bob", ("desktop",), closed=datetime.date(2026, 11, 30)),
        ),
    )
    alice, bob = lab_accounts(topology, _write(tmp_path, json.dumps(_CREDENTIALS)))
    assert (alice.closed, bob.closed) == (False, True)
    assert bob.password.reveal() == "app-desktop-b"
