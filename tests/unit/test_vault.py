"""The vault: encryption, file format, errors that name the problem, and `bulwark vault`."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bulwark.cli import main
from bulwark.errors import BulwarkError
from bulwark.secret import Secret, write_private_file
from bulwark.vault import (
    CorruptVaultError,
    KeyFileError,
    UnknownSecretError,
    Vault,
    VaultError,
    WrongKeyError,
    ensure_key,
    init_vault,
    load_key,
    open_vault,
)

VALUES = {
    "wireguard/nj-gw/private": "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
    "mail/doveadm-password": "correct horse battery staple",
    "account/alice/app/phone": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
    "unicode@example.com": "pässwörd ✓",
}


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return tmp_path / "test.vault"


@pytest.fixture
def filled(vault_path: Path, key: bytes) -> Vault:
    vault = Vault.create(vault_path, key)
    for name, value in VALUES.items():
        vault.set(name, value)
    vault.save()
    return vault


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_round_trip(filled: Vault, vault_path: Path, key: bytes) -> None:
    opened = Vault.open(vault_path, key)
    assert opened.names() == sorted(VALUES)
    assert {name: opened.get(name).reveal() for name in opened.names()} == VALUES
    assert "mail/doveadm-password" in opened and "mail/other" not in opened


def test_file_holds_no_value_or_name_in_clear(filled: Vault, vault_path: Path) -> None:
    raw = vault_path.read_bytes()
    for name, value in VALUES.items():
        for needle in (value.encode(), base64.b64encode(value.encode()), name.encode()):
            assert needle not in raw


def test_file_format_is_header_plus_authenticated_sorted_json(
    filled: Vault, vault_path: Path, key: bytes
) -> None:
    header_line, ciphertext, end = vault_path.read_bytes().split(b"\n")
    header = json.loads(header_line)
    assert end == b"" and set(header) == {"format", "key_id", "nonce"}
    assert header["format"] == 1 and header["key_id"] == filled.key_id
    plaintext = AESGCM(key).decrypt(
        base64.b64decode(header["nonce"]), base64.b64decode(ciphertext), header_line
    )
    assert plaintext == json.dumps(VALUES, sort_keys=True, separators=(",", ":")).encode()
    assert vault_path.stat().st_mode & 0o777 == 0o600


def test_every_save_draws_a_fresh_nonce_and_leaves_no_temporary_file(
    filled: Vault, vault_path: Path
) -> None:
    nonces = set()
    for _ in range(3):
        filled.save()
        nonces.add(json.loads(vault_path.read_bytes().split(b"\n")[0])["nonce"])
    assert len(nonces) == 3
    assert [path.name for path in vault_path.parent.iterdir()] == [vault_path.name]


def test_content_order_does_not_depend_on_insertion_order(tmp_path: Path, key: bytes) -> None:
    plaintexts = []
    for order in (sorted(VALUES), sorted(VALUES, reverse=True)):
        vault = Vault.create(tmp_path / f"{len(plaintexts)}.vault", key)
        for name in order:
            vault.set(name, VALUES[name])
        vault.save()
        header_line, ciphertext, _ = vault.path.read_bytes().split(b"\n")
        nonce = base64.b64decode(json.loads(header_line)["nonce"])
        plaintexts.append(AESGCM(key).decrypt(nonce, base64.b64decode(ciphertext), header_line))
    assert plaintexts[0] == plaintexts[1]


def test_wrong_key_names_both_key_ids(filled: Vault, vault_path: Path) -> None:
    other = secrets.token_bytes(32)
    with pytest.raises(WrongKeyError) as caught:
        Vault.open(vault_path, other)
    message = _one_line(caught.value)
    assert filled.key_id in message and Vault(vault_path, other, {}).key_id in message


def _rewrite(path: Path, header_change=None, ciphertext_change=None) -> None:
    header_line, ciphertext, _ = path.read_bytes().split(b"\n")
    header = json.loads(header_line)
    if header_change:
        header_change(header)
        header_line = json.dumps(header).encode()
    if ciphertext_change:
        ciphertext = base64.b64encode(ciphertext_change(base64.b64decode(ciphertext)))
    path.write_bytes(header_line + b"\n" + ciphertext + b"\n")


def _flip_first_byte(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def test_tampered_ciphertext_fails_authentication(filled, vault_path, key) -> None:
    _rewrite(vault_path, ciphertext_change=_flip_first_byte)
    with pytest.raises(CorruptVaultError, match="altered or damaged") as caught:
        Vault.open(vault_path, key)
    assert filled.key_id in _one_line(caught.value)


def test_truncated_ciphertext_fails_authentication(filled, vault_path, key) -> None:
    _rewrite(vault_path, ciphertext_change=lambda data: data[:-1])
    with pytest.raises(CorruptVaultError, match="altered or damaged"):
        Vault.open(vault_path, key)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda h: h.update(nonce=base64.b64encode(bytes(12)).decode()), "altered or damaged"),
        (lambda h: h.update(format=2), "vault format 2"),
        (lambda h: h.update(format="2", cipher="new"), "vault format '2'"),
        (lambda h: h.update(key_id="nj\nsea"), "not a bulwark vault"),
        (lambda h: h.update(extra="x"), "not a bulwark vault"),
        (lambda h: h.pop("nonce"), "not a bulwark vault"),
        (lambda h: h.update(nonce="short"), "not a bulwark vault"),
    ],
)
def test_tampered_header_is_refused(filled, vault_path, key, change, match) -> None:
    _rewrite(vault_path, header_change=change)
    with pytest.raises(CorruptVaultError, match=match) as caught:
        Vault.open(vault_path, key)
    _one_line(caught.value)


@pytest.mark.parametrize("content", [b"", b"hello\n", b"{}\n\n", b"[1]\nAAAA\n"])
def test_garbage_is_not_a_vault(vault_path, key, content) -> None:
    vault_path.write_bytes(content)
    with pytest.raises(CorruptVaultError, match="not a bulwark vault"):
        Vault.open(vault_path, key)


def test_missing_vault_file(vault_path, key) -> None:
    with pytest.raises(VaultError, match="vault file not found") as caught:
        Vault.open(vault_path, key)
    assert str(vault_path) in _one_line(caught.value)


def test_missing_key_environment(monkeypatch, vault_path) -> None:
    monkeypatch.delenv("BULWARK_VAULT_KEY", raising=False)
    with pytest.raises(KeyFileError, match="BULWARK_VAULT_KEY is not set"):
        open_vault(vault_path)


def test_missing_key_file(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="vault key file not found") as caught:
        load_key(tmp_path / "absent.key")
    assert "absent.key" in _one_line(caught.value)


def test_unreadable_key_file(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="cannot read vault key file"):
        load_key(tmp_path)  # a directory: unreadable as a file, even for root


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not base64 at all!\n",
        base64.b64encode(bytes(16)) + b"\n",
        base64.b64encode(bytes(32)) + b"\n" + base64.b64encode(bytes(32)) + b"\n",
    ],
)
def test_malformed_key_file(tmp_path, content) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="malformed vault key file") as caught:
        load_key(path)
    _one_line(caught.value)


def test_key_file_with_and_without_trailing_newline(tmp_path, key) -> None:
    for ending in (b"", b"\n"):
        path = tmp_path / f"key{len(ending)}"
        path.write_bytes(base64.b64encode(key) + ending)
        path.chmod(0o600)
        assert load_key(path) == key


def test_unknown_name_suggests_close_names(filled) -> None:
    with pytest.raises(UnknownSecretError) as caught:
        filled.get("wireguard/nj-gw/privat")
    message = _one_line(caught.value)
    assert "'wireguard/nj-gw/privat'" in message and "wireguard/nj-gw/private?" in message
    with pytest.raises(UnknownSecretError, match="no secret 'nothing-like-it'") as caught:
        filled.delete("nothing-like-it")
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "Upper", "/abs", "-dash", "with space", "tab\t", "é"])
def test_invalid_names_are_refused(filled, name) -> None:
    with pytest.raises(VaultError, match="invalid secret name"):
        filled.set(name, "value-that-must-not-leak")


def test_empty_values_are_refused(filled) -> None:
    with pytest.raises(VaultError, match="non-empty string"):
        filled.set("ok/name", "")


def test_delete_then_save(filled, vault_path, key) -> None:
    filled.delete("unicode@example.com")
    filled.save()
    assert "unicode@example.com" not in Vault.open(vault_path, key)


def test_values_never_show_in_text(filled, caplog) -> None:
    secret = filled.get("mail/doveadm-password")
    value = secret.reveal()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("using %s", secret)
    texts = [str(secret), repr(secret), f"{secret}", f"{secret!r}", f"{secret:>60}", repr(filled)]
    texts += [caplog.text, repr([secret]), repr({"k": secret})]
    with pytest.raises(TypeError) as caught:
        pickle.dumps(secret)
    texts.append(str(caught.value))
    for bad in ("Bad Name", ""):
        with pytest.raises(VaultError) as caught:
            filled.set(bad, value)
        texts.append(str(caught.value))
    for text in texts:
        assert value not in text
    assert secret.placeholder == f"<secret:mail/doveadm-password sha256:{secret.digest}>"


def test_rotate_key(filled, vault_path, key) -> None:
    new_key = secrets.token_bytes(32)
    filled.rotate_key(new_key)
    with pytest.raises(WrongKeyError):
        Vault.open(vault_path, key)
    opened = Vault.open(vault_path, new_key)
    assert {name: opened.get(name).reveal() for name in opened.names()} == VALUES
    with pytest.raises(KeyFileError, match="nothing to rotate"):
        opened.rotate_key(new_key)
    with pytest.raises(KeyFileError, match="32 bytes"):
        opened.rotate_key(b"short")


def test_create_never_replaces_a_vault(filled, vault_path, key) -> None:
    with pytest.raises(VaultError, match="already exists"):
        Vault.create(vault_path, key)
    assert Vault.open(vault_path, key).names() == sorted(VALUES)


def test_ensure_key_creates_0600_then_reuses(tmp_path) -> None:
    path = tmp_path / "new.key"
    key, created = ensure_key(path)
    assert created and path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == base64.b64encode(key) + b"\n"
    assert ensure_key(path) == (key, False)


def test_init_vault_uses_the_environment_key(vault_key_env, vault_path) -> None:
    vault, created = init_vault(vault_path)
    assert not created and vault.names() == []
    assert open_vault(vault_path).key_id == vault.key_id
    with pytest.raises(VaultError, match="already exists"):
        init_vault(vault_path)


def test_write_private_file_without_replace_refuses_existing(tmp_path) -> None:
    path = tmp_path / "file"
    write_private_file(path, b"first", replace=False)
    with pytest.raises(BulwarkError, match="already exists"):
        write_private_file(path, b"second", replace=False)
    assert path.read_bytes() == b"first"
    with pytest.raises(BulwarkError, match="cannot write"):
        write_private_file(tmp_path / "no-such-dir" / "file", b"x")


# --- `bulwark vault` -----------------------------------------------------------------------------


class _Cli:
    """Runs `bulwark` and keeps every output, to check afterwards that no value leaked."""

    def __init__(self, env: dict[str, str | None]):
        self.runner = CliRunner()
        self.env = env
        self.outputs: list[str] = []

    def __call__(self, *args: str, input: str | None = None, code: int = 0, keep: bool = True):
        result = self.runner.invoke(main, list(args), input=input, env=self.env)
        assert result.exit_code == code, result.output
        if keep:
            self.outputs.append(result.output)
        return result


@pytest.fixture
def cli(tmp_path) -> _Cli:
    return _Cli(
        {"BULWARK_VAULT_KEY": str(tmp_path / "keys" / "k"), "BULWARK_VAULT": str(tmp_path / "v")}
    )


def _error_line(result) -> str:
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    return result.stderr


def test_cli_vault_session(cli, tmp_path) -> None:
    (tmp_path / "keys").mkdir()
    assert "with the new key" in cli("vault", "init").output
    assert (tmp_path / "keys" / "k").stat().st_mode & 0o777 == 0o600
    assert "already exists" in _error_line(cli("vault", "init", code=2))

    for name, value in VALUES.items():
        cli("vault", "set", name, input=value + "\n")
    for name, value in VALUES.items():
        assert cli("vault", "get", name, keep=False).stdout == value + "\n"

    assert "--replace" in _error_line(
        cli("vault", "set", "mail/doveadm-password", input="x", code=2)
    )
    value_file = tmp_path / "value"
    value_file.write_text("from a file\n")
    cli("vault", "set", "from/file", "--from-file", str(value_file))
    cli("vault", "set", "mail/doveadm-password", "--replace", input="changed\r\n")
    assert cli("vault", "get", "from/file", keep=False).stdout == "from a file\n"
    assert cli("vault", "get", "mail/doveadm-password", keep=False).stdout == "changed\n"

    listing = cli("vault", "list").stdout.splitlines()
    assert [line.split()[0] for line in listing] == sorted([*VALUES, "from/file"])
    digest = Secret("from/file", "from a file").digest
    assert any(line.split() == ["from/file", f"sha256:{digest}"] for line in listing)

    error = _error_line(cli("vault", "get", "mail/doveadm-pasword", code=2))
    assert "did you mean mail/doveadm-password?" in error
    cli("vault", "delete", "from/file", input="n\n", code=1)  # declined: nothing deleted
    cli("vault", "delete", "from/file", "--yes")
    assert "from/file" not in cli("vault", "list").stdout

    new_key = tmp_path / "keys" / "new"
    assert (
        f"BULWARK_VAULT_KEY={new_key}"
        in cli("vault", "rotate-key", "--new-key", str(new_key)).stdout
    )
    assert "wrong key" in _error_line(cli("vault", "list", code=2))
    cli.env["BULWARK_VAULT_KEY"] = str(new_key)
    assert cli("vault", "get", "unicode@example.com", keep=False).stdout == "pässwörd ✓\n"

    every_value = [*VALUES.values(), "from a file", "changed"]
    for output in cli.outputs:
        for value in every_value:
            assert value not in output


def test_cli_refuses_without_key_environment(cli, tmp_path) -> None:
    cli.env["BULWARK_VAULT_KEY"] = None
    assert "BULWARK_VAULT_KEY is not set" in _error_line(cli("vault", "init", code=2))
    assert not (tmp_path / "v").exists()


def test_cli_reports_missing_files_on_one_line(cli, tmp_path) -> None:
    assert "vault key file not found" in _error_line(cli("vault", "list", code=2))
    (tmp_path / "keys").mkdir()
    ensure_key(tmp_path / "keys" / "k")
    assert "vault file not found" in _error_line(cli("vault", "list", code=2))


def test_cli_needs_a_vault_path(cli) -> None:
    cli.env["BULWARK_VAULT"] = None
    assert "--vault" in cli("vault", "list", code=2).output


@pytest.mark.parametrize(
    "command", [[], ["init"], ["get"], ["set"], ["list"], ["rotate-key"], ["delete"]]
)
def test_cli_help(cli, command) -> None:
    assert "Usage:" in cli("vault", *command, "--help").output
