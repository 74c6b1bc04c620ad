"""Secret generation: what each inventory needs, how it is made, and `bulwark secrets`."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import json
import re
import shutil
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from click.testing import CliRunner

import bulwark.pki
from bulwark import backup, tang
from bulwark.cli import main
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology
from bulwark.platform_secrets import (
    generate_secrets,
    missing_secrets,
    new_wireguard_private_key,
    required_secrets,
    wireguard_public_key,
)
from bulwark.secret_names import luks_key_name, psk_name, wireguard_key_name
from bulwark.topology import Topology
from bulwark.vault import Vault, open_vault
from bulwark.volumes import volumes_for

INVENTORIES = Path(__file__).resolve().parents[2] / "inventory"


@pytest.fixture(scope="module", params=["production", "lab"])
def topology(request) -> Topology:
    return load_topology(INVENTORIES / f"{request.param}.py")


@pytest.fixture(scope="module")
def production() -> Topology:
    return load_topology(INVENTORIES / "production.py")


@pytest.fixture
def empty_vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "test.vault", bytes(range(32)))


def _values(vault: Vault) -> dict[str, str]:
    return {name: vault.get(name).reveal() for name in vault.names()}


# --- what is required ----------------------------------------------------------------------------


@pytest.mark.usefixtures("every_role_deployed")
def test_required_names_cover_the_topology(topology: Topology) -> None:
    names = required_secrets(topology)
    wireguard = sorted(name for name in names if name.startswith("wireguard/"))
    assert wireguard == [
        "wireguard/nj-gw/private",
        "wireguard/psk/nj-sea",
        "wireguard/sea-gw/private",
    ]
    luks = {name for name in names if name.startswith("luks/")}
    assert luks == {f"luks/{h.name}/{v}" for h in topology.hosts for v in volumes_for(h)}
    recovery = {name for name in names if name.startswith("luks-recovery/")}
    assert recovery == {f"luks-recovery/{name.removeprefix('luks/')}" for name in luks}
    accounts = {name for name in names if name.startswith("account/")}
    assert accounts == {
        "account/alice/main",
        "account/alice/app/laptop",
        "account/alice/app/phone",
        "account/bob/main",
        "account/bob/app/desktop",
    }
    platform = {"mail/doveadm-password", "files/content-link-key", "dkim/ed1", "dkim/rsa1"}
    assert platform <= set(names)
    # Each data host's backup key and passphrase, each backup host's sshd key.
    backups = {name for name in names if name.startswith("backup/")}
    sources = [host.name for host in topology.hosts if backup.repository_of(topology, host)]
    keeping = [host.name for host in topology.hosts if backup.repositories_on(topology, host)]
    assert backups == {
        *(f"backup/{name}/{kind}" for name in sources for kind in ("ssh-key", "passphrase")),
        *(f"backup/{name}/host-key" for name in keeping),
    }
    assert sources and keeping
    tang_keys = {name for name in names if name.startswith("tang/")}
    assert tang_keys == {
        f"tang/{host.name}/{use}"
        for host in topology.hosts_with_role("tang")
        for use in ("signing", "exchange")
    }
    assert len(names) == (
        len(wireguard)
        + len(luks)
        + len(recovery)
        + len(accounts)
        + len(platform)
        + len(backups)
        + len(tang_keys)
    )
    assert list(names) == sorted(names) and all(names.values())


def test_entry_names_are_the_ones_roles_look_up(production: Topology) -> None:
    names = required_secrets(production)
    assert wireguard_key_name(production.host("sea-gw")) == "wireguard/sea-gw/private"
    assert psk_name("sea", "nj") == psk_name("nj", "sea") == "wireguard/psk/nj-sea"
    assert luks_key_name(production.host("nj-store"), "mail") == "luks/nj-store/mail"
    gateways = production.hosts_with_role("gateway")
    assert {wireguard_key_name(host) for host in gateways} <= set(names)
    assert psk_name(*(host.site for host in gateways)) in names


@pytest.mark.usefixtures("every_role_deployed")
def test_luks_volumes_follow_the_roles(production: Topology) -> None:
    names = required_secrets(production)
    luks = sorted(name for name in names if name.startswith("luks/"))
    assert len(luks) == 10 + 2 * 5  # logs everywhere; mail, dav, files, directory, backups x2
    assert {"luks/nj-store/mail", "luks/sea-backup/backups", "luks/nj-web/dav"} <= set(luks)
    assert "luks/nj-gw/mail" not in names and "luks/nj-mx/logs" in names
    assert volumes_for(production.host("nj-web")) == ("dav", "directory", "files", "logs")
    assert volumes_for(production.host("nj-gw")) == ("logs",)


def test_keys_are_made_for_the_volumes_a_host_mounts_and_no_other(topology: Topology) -> None:
    """A host that cannot encrypt (the lab's containers, volumes_encrypted: false) gets no
    volume, so `secrets generate` makes it no key; every other host a key for its logs."""
    names = required_secrets(topology)
    luks = {name for name in names if name.startswith("luks/")}
    assert luks == {luks_key_name(h, v) for h in topology.hosts for v in volumes_for(h)}
    encrypted = [host for host in topology.hosts if host.volumes_encrypted]
    assert {name for name in luks if name.endswith("/logs")} == {
        luks_key_name(host, "logs") for host in encrypted
    }
    assert bool(luks) == bool(encrypted)
    assert {"mail/doveadm-password", "wireguard/psk/nj-sea", "account/alice/main"} <= set(names)


def test_missing_secrets_names_each_one(production: Topology, empty_vault: Vault) -> None:
    problems = missing_secrets(production, empty_vault)
    assert [problem.field for problem in problems] == list(required_secrets(production))
    assert all(problem.where == "vault" for problem in problems)
    assert "bulwark secrets generate INVENTORY" in problems[0].message
    assert "WireGuard private key of nj-gw" in str(
        next(p for p in problems if p.field == "wireguard/nj-gw/private")
    )


# --- how secrets are made ------------------------------------------------------------------------


def test_wireguard_public_key_matches_rfc7748_vector() -> None:
    # RFC 7748 section 6.1: Alice's private and public keys.
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert (
        wireguard_public_key(base64.b64encode(private).decode())
        == base64.b64encode(public).decode()
    )


def test_new_wireguard_keys_are_fresh_32_byte_keys() -> None:
    first, second = new_wireguard_private_key(), new_wireguard_private_key()
    assert first != second and len(base64.b64decode(first)) == 32
    assert len(base64.b64decode(wireguard_public_key(first))) == 32


@pytest.mark.parametrize("bad", ["", "not-base64!", base64.b64encode(bytes(31)).decode()])
def test_wireguard_public_key_refuses_malformed_keys_without_echoing(bad) -> None:
    with pytest.raises(BulwarkError, match="not a WireGuard private key") as caught:
        wireguard_public_key(bad)
    assert not bad or bad not in str(caught.value)


@pytest.fixture
def generated(production, generated_vaults, tmp_path):
    """A production vault after one `generate_secrets` run, reopened from its file, and its
    credentials file: this test's own copy of the session's run (see conftest.py)."""
    copy = generated_vaults.copy(production, tmp_path)
    return copy.report, copy.vault, copy.credentials


def test_generate_creates_every_secret_in_its_format(
    production, every_role_deployed, generated
) -> None:
    report, vault, _ = generated
    assert report.created == tuple(required_secrets(production)) and report.kept == ()
    assert {"pki/ca/key", "pki/ca/cert"} <= set(report.pki)
    assert set(vault.names()) == {*report.created, *report.pki}
    assert missing_secrets(production, vault) == []
    values = _values(vault)
    sizes = {
        "wireguard/nj-gw/private": 32,
        "wireguard/psk/nj-sea": 32,
        "luks/nj-store/mail": 64,
        "files/content-link-key": 48,
    }
    for name, size in sizes.items():
        assert len(base64.b64decode(values[name], validate=True)) == size
    for name in ("mail/doveadm-password",):
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", values[name])
    hashes = [value for name, value in values.items() if name.startswith("account/")]
    assert len(hashes) == 5 and all(value.startswith("$argon2id$v=19$") for value in hashes)
    assert len(set(values[name] for name in report.created)) == len(report.created)


def test_credentials_verify_against_the_hashes(generated) -> None:
    _, vault, path = generated
    assert path.stat().st_mode & 0o777 == 0o600
    credentials = json.loads(path.read_text())
    assert credentials.keys() == {"alice", "bob"}
    assert credentials["alice"]["app"].keys() == {"laptop", "phone"}
    hasher = PasswordHasher()
    alice = credentials["alice"]
    for password in [alice["main"], *alice["app"].values()]:
        assert re.fullmatch(r"[a-z0-9]{4}(-[a-z0-9]{4}){3}", password)
    assert hasher.verify(vault.get("account/alice/main").reveal(), alice["main"])
    assert hasher.verify(vault.get("account/alice/app/phone").reveal(), alice["app"]["phone"])
    with pytest.raises(VerifyMismatchError):  # the main password never opens mail
        hasher.verify(vault.get("account/alice/app/phone").reveal(), alice["main"])
    with pytest.raises(VerifyMismatchError):  # nor does one device's password open another's
        hasher.verify(vault.get("account/alice/app/laptop").reveal(), alice["app"]["phone"])


def test_hashes_verify_with_libsodium_as_dovecot_does(generated) -> None:
    library = ctypes.util.find_library("sodium")
    if library is None:
        pytest.skip("libsodium is not installed")
    sodium = ctypes.CDLL(library)
    assert sodium.sodium_init() >= 0
    verify = sodium.crypto_pwhash_str_verify
    verify.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong]
    _, vault, path = generated
    password = json.loads(path.read_text())["bob"]["app"]["desktop"].encode()
    stored = vault.get("account/bob/app/desktop").reveal().encode()
    assert verify(stored, password, len(password)) == 0
    assert verify(stored, password[:-1], len(password) - 1) != 0


def test_generate_twice_keeps_everything(production, generated) -> None:
    _, vault, _ = generated
    before, raw = _values(vault), vault.path.read_bytes()
    report = generate_secrets(production, vault, None)  # nothing to hand out: no file needed
    assert report.created == () and report.pki == () and report.credentials is None
    assert report.kept == tuple(required_secrets(production))
    assert _values(vault) == before and vault.path.read_bytes() == raw


def test_generate_never_changes_an_existing_entry(production, empty_vault, tmp_path) -> None:
    empty_vault.set("mail/doveadm-password", "chosen by the operator")
    report = generate_secrets(production, empty_vault, tmp_path / "c.json")
    assert "mail/doveadm-password" in report.kept
    assert empty_vault.get("mail/doveadm-password").reveal() == "chosen by the operator"


def test_generate_refuses_user_passwords_nobody_could_see(production, empty_vault) -> None:
    with pytest.raises(BulwarkError, match="--credentials-out") as caught:
        generate_secrets(production, empty_vault, None)
    assert "account/bob/app/desktop" in str(caught.value) and "\n" not in str(caught.value)
    assert empty_vault.names() == []


def test_generate_merges_new_passwords_into_the_credentials_file(production, generated) -> None:
    _, vault, path = generated
    first = json.loads(path.read_text())
    vault.delete("account/bob/app/desktop")
    report = generate_secrets(production, vault, path)
    assert report.created == ("account/bob/app/desktop",) and report.credentials == path
    second = json.loads(path.read_text())
    assert second["alice"] == first["alice"] and second["bob"]["main"] == first["bob"]["main"]
    new = second["bob"]["app"]["desktop"]
    assert new != first["bob"]["app"]["desktop"]
    assert PasswordHasher().verify(vault.get("account/bob/app/desktop").reveal(), new)


def test_generate_refuses_a_foreign_credentials_file(production, empty_vault, tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text('["not", "ours"]')
    with pytest.raises(BulwarkError, match="not a credentials file"):
        generate_secrets(production, empty_vault, path)
    assert empty_vault.names() == []


def test_generate_reports_progress_and_runs_the_pki_last(
    production, empty_vault, tmp_path, monkeypatch
) -> None:
    calls = []
    required = list(required_secrets(production))

    def ensure_pki(topology, vault, now=None):
        assert all(name in vault for name in required)  # everything else is made first
        vault.set("pki/ca/key", "stand-in")
        return ["pki/ca/key"]

    monkeypatch.setattr(bulwark.pki, "ensure_pki", ensure_pki)
    generate_secrets(
        production, empty_vault, tmp_path / "c.json", progress=lambda *args: calls.append(args)
    )
    assert calls == [(done, len(required), name) for done, name in enumerate(required, 1)]
    assert "pki/ca/key" in Vault.open(empty_vault.path, bytes(range(32)))  # saved after the PKI


# --- `bulwark secrets` ---------------------------------------------------------------------------


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A copy of the production inventory whose vault file lands in tmp_path."""
    path = tmp_path / "production.py"
    shutil.copy(INVENTORIES / "production.py", path)
    return path


def _run(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result


def _error_line(result) -> str:
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    return result.stderr


def test_cli_generate_then_check(inventory, vault_key_env, every_role_deployed, tmp_path) -> None:
    credentials = tmp_path / "credentials.json"
    assert "--credentials-out" in _error_line(_run("secrets", "generate", str(inventory), code=2))

    first = _run("secrets", "generate", str(inventory), "--credentials-out", str(credentials))
    vault = open_vault(inventory.with_suffix(".vault"))
    required = required_secrets(load_topology(inventory))
    lines = first.stdout.splitlines()
    for name in required:
        assert f"created  {name}  sha256:{vault.get(name).digest}" in lines
    assert f"{len(required)} created, 0 kept" in first.stdout
    assert f"[{len(required)}/{len(required)}]" in first.stderr
    assert credentials.stat().st_mode & 0o777 == 0o600

    second = _run("secrets", "generate", str(inventory))
    for name in required:
        assert f"kept     {name}  sha256:{vault.get(name).digest}" in second.stdout
    assert f"0 created, {len(required)} kept, 0 PKI" in second.stdout

    check = _run("secrets", "check", str(inventory))
    assert check.stdout.startswith("ok: ") and check.stdout.count("\n") == 1

    vault.delete("luks/nj-store/mail")
    vault.delete("wireguard/psk/nj-sea")
    vault.save()
    missing = _run("secrets", "check", str(inventory), code=2)
    assert "2 secrets missing" in missing.stderr
    assert "  vault.luks/nj-store/mail: missing LUKS key file" in missing.stderr
    assert "  vault.wireguard/psk/nj-sea: missing WireGuard pre-shared key" in missing.stderr

    outputs = [first.output, second.output, check.output, missing.output]
    passwords = [
        password
        for entry in json.loads(credentials.read_text()).values()
        for password in [entry["main"], *entry["app"].values()]
    ]
    for output in outputs:
        for value in [*_values(vault).values(), *passwords]:
            assert value not in output


def test_cli_generate_creates_the_key_file_when_missing(inventory, tmp_path, monkeypatch) -> None:
    key = tmp_path / "new.key"
    monkeypatch.setenv("BULWARK_VAULT_KEY", str(key))
    result = _run("secrets", "generate", str(inventory), "--credentials-out", str(tmp_path / "c"))
    assert "with the new key" in result.stdout and key.stat().st_mode & 0o777 == 0o600


def test_cli_errors_are_one_line(inventory, vault_key_env, monkeypatch) -> None:
    assert "vault file not found" in _error_line(_run("secrets", "check", str(inventory), code=2))
    monkeypatch.delenv("BULWARK_VAULT_KEY")
    assert "BULWARK_VAULT_KEY is not set" in _error_line(
        _run("secrets", "generate", str(inventory), code=2)
    )
    # A new file name: pyinfra caches each inventory file's code by name for the process.
    no_vault = inventory.with_name("no_vault.py")
    no_vault.write_text(re.sub(r'\n\s*"vault_file":.*\n', "\n", inventory.read_text()))
    assert "sets no vault_file" in _error_line(_run("secrets", "check", str(no_vault), code=2))


@pytest.mark.parametrize("command", [[], ["generate"], ["check"]])
def test_cli_help(command) -> None:
    assert "Usage:" in _run("secrets", *command, "--help").output


def test_tang_keys_are_what_tangd_reads_and_their_thumbprints_are_joses() -> None:
    """A generated key is a P-521 JWK of Tang's algorithm; its thumbprint is RFC 7638's
    SHA-256 one (checked against the RFC's own example key, §3.1)."""
    for use, alg, operations in (
        ("signing", "ES512", ["sign", "verify"]),
        ("exchange", "ECMR", ["deriveKey"]),
    ):
        jwk = json.loads(tang.new_key(use))
        assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["key_ops"]) == (
            "EC", "P-521", alg, operations,
        )  # fmt: skip
        assert all(len(jwk[field]) == 88 for field in ("x", "y", "d"))  # 66 bytes, base64url
    rfc7638 = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
        "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert tang.thumbprint(json.dumps(rfc7638)) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
