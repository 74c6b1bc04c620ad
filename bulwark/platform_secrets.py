"""The secrets the platform needs, and how each is made.

Above the vault and the PKI: `required_secrets` names every secret a topology needs (besides the
PKI's), `missing_secrets` reports the ones the vault lacks, and `generate_secrets` creates them,
then lets the PKI issue what it lacks: it only ever adds, so running it again is safe. Users'
passwords are stored as Argon2id hashes only; their plaintext goes to a credentials file for the
operator to hand out, never to the terminal.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, Type
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bulwark import backup, mailtrust, registry, tang
from bulwark.errors import BulwarkError
from bulwark.pki import ensure_pki
from bulwark.secret import write_private_file
from bulwark.secret_names import (
    CONTENT_LINK_KEY,
    DOVEADM_PASSWORD,
    account_password,
    app_password_name,
    luks_key_name,
    luks_recovery_name,
    main_password_name,
    psk_name,
    tang_key_name,
    wireguard_key_name,
)
from bulwark.topology import Topology
from bulwark.validation import Problem
from bulwark.vault import Vault
from bulwark.volumes import volumes_for

# Users' passwords: 4 groups of 4 lower-case letters and digits (82 bits), easy to type on a phone.
_PASSWORD_ALPHABET = string.ascii_lowercase + string.digits
# argon2-cffi's defaults are RFC 9106's low-memory profile (64 MiB, t=3, p=4); Dovecot verifies
# these PHC strings through libsodium (reference/hardening.md §2).
_HASHER = PasswordHasher(type=Type.ID)


def _random_base64(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def new_wireguard_private_key() -> str:
    """A WireGuard private key: X25519 raw private bytes, base64, exactly as `wg genkey` prints."""
    raw = X25519PrivateKey.generate().private_bytes_raw()
    return base64.b64encode(raw).decode()


def wireguard_public_key(private_b64: str) -> str:
    """The public key for a base64 WireGuard private key, exactly as `wg pubkey` prints it."""
    try:
        raw = base64.b64decode(private_b64, validate=True)
        key = X25519PrivateKey.from_private_bytes(raw)
    except ValueError:  # bad base64 (binascii.Error) or not 32 bytes
        raise BulwarkError("not a WireGuard private key: expected base64 of 32 bytes") from None
    return base64.b64encode(key.public_key().public_bytes_raw()).decode()


def new_ssh_key() -> str:
    """An Ed25519 SSH private key in OpenSSH's own PEM format (what `ssh-keygen` writes)."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


def ssh_public_key(private_pem: str) -> str:
    """The `ssh-ed25519 AAAA...` line of an OpenSSH private key, as `ssh-keygen -y` prints it."""
    try:
        key = serialization.load_ssh_private_key(private_pem.encode(), password=None)
    except ValueError:
        raise BulwarkError("not an OpenSSH private key") from None
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


# A volume's key file: random bytes, as many as the volume key has (aes-xts-plain64, 512 bits).
LUKS_KEY_BYTES = 64
# Groups of a volume's recovery passphrase, typed by hand at the console.
RECOVERY_GROUPS = 8
_GROUP_LENGTH = 4


def new_luks_key() -> str:
    """A volume key: LUKS_KEY_BYTES random bytes, base64 (cryptsetup reads the decoded bytes)."""
    return _random_base64(LUKS_KEY_BYTES)


def _user_password(groups: int = 4) -> str:
    """Groups of 4 lower-case letters and digits, dash-separated (20.7 bits a group)."""
    return "-".join(
        "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(_GROUP_LENGTH))
        for _ in range(groups)
    )


def password_bits(groups: int) -> int:
    """The random bits of a `_user_password` of `groups` groups, rounded down."""
    return int(groups * _GROUP_LENGTH * math.log2(len(_PASSWORD_ALPHABET)))


# How each kind of secret is made. "account" entries are Argon2id hashes of a new user password,
# made in `generate_secrets` because their plaintext must also reach the credentials file.
_GENERATORS: dict[str, Callable[[], str]] = {
    "wireguard": new_wireguard_private_key,
    "psk": lambda: _random_base64(32),  # WireGuard pre-shared key: a post-quantum hedge
    "luks": new_luks_key,
    # A volume's second key slot, typed by hand when the vault's key cannot reach the host
    # (8 groups: 165 bits).
    "luks-recovery": lambda: _user_password(groups=RECOVERY_GROUPS),
    "password": lambda: secrets.token_urlsafe(24),  # 32 URL-safe characters
    "key": lambda: _random_base64(48),  # 64 characters, 384 random bits: an HMAC key
    "dkim-ed25519": lambda: mailtrust.new_dkim_key("ed25519"),
    "dkim-rsa": lambda: mailtrust.new_dkim_key("rsa"),
    "ssh-ed25519": new_ssh_key,
    **{f"tang-{use}": lambda use=use: tang.new_key(use) for use in (tang.SIGNING, tang.EXCHANGE)},
}


# What a topology needs of the vault: entry name -> (kind, description).
_Required = dict[str, tuple[str, str]]


def _wireguard_keys(topology: Topology) -> _Required:
    return {
        wireguard_key_name(host): (
            "wireguard",
            f"WireGuard private key of {host.name}, site {host.site}'s gateway",
        )
        for host in topology.hosts_with_role("gateway")
    }


def _wireguard_psks(topology: Topology) -> _Required:
    return {
        psk_name(site_a, site_b): (
            "psk",
            f"WireGuard pre-shared key of the tunnel between sites {site_a} and {site_b}",
        )
        for site_a, site_b in itertools.combinations(sorted(s.name for s in topology.sites), 2)
    }


def _account_passwords(topology: Topology) -> _Required:
    required: _Required = {}
    for account in topology.accounts:
        user = account.user
        required[main_password_name(user)] = (
            "account",
            f"Argon2id hash of {user}'s main (web) password, which mail protocols refuse",
        )
        for label in account.app_passwords:
            required[app_password_name(user, label)] = (
                "account",
                f"Argon2id hash of {user}'s app password {label!r}",
            )
    return required


# Secret kinds a role declares in bulwark.registry -> every vault entry of that kind a
# topology needs: name -> (how it is made, see _GENERATORS; what it is).
_KINDS: dict[str, Callable[[Topology], _Required]] = {
    "wireguard-key": _wireguard_keys,
    "wireguard-psk": _wireguard_psks,
    "account-passwords": _account_passwords,
    "doveadm-password": lambda topology: {
        DOVEADM_PASSWORD: ("password", "doveadm password the mail stores replicate with")
    },
    "content-link-key": lambda topology: {
        CONTENT_LINK_KEY: ("key", "HMAC key of the expiring links to users' files")
    },
    "dkim-keys": lambda topology: {
        name: (f"dkim-{algorithm}", f"DKIM {algorithm} key of selector {selector!r}")
        for algorithm, selector, name in mailtrust.dkim_keys(topology)
    },
    "backup-keys": backup.secret_names,
    "tang-keys": lambda topology: {
        tang_key_name(host, use): (f"tang-{use}", f"Tang {use} key of {host.name}")
        for host in topology.hosts_with_role(tang.ROLE)
        for use in (tang.SIGNING, tang.EXCHANGE)
    },
}


def _required(topology: Topology) -> _Required:
    """Every secret `topology` needs, sorted by name: those of the roles it deploys (see
    bulwark.registry; a role without a module needs none yet) and its hosts' volumes' keys."""
    required: _Required = {}
    deployed = registry.deployed_role_names(topology)
    for role in registry.ROLES:
        if role.name in deployed:
            for kind in role.secrets:
                required.update(_KINDS[kind](topology))
    for host in topology.hosts:
        for volume in volumes_for(host):
            required[luks_key_name(host, volume)] = (
                "luks",
                f"LUKS key file of {host.name}'s {volume} volume",
            )
            required[luks_recovery_name(host, volume)] = (
                "luks-recovery",
                f"recovery passphrase of {host.name}'s {volume} volume",
            )
    return dict(sorted(required.items()))


def required_secrets(topology: Topology) -> dict[str, str]:
    """Every vault entry `topology` needs besides the PKI's, sorted: name -> what it is."""
    return {name: description for name, (_, description) in _required(topology).items()}


def missing_secrets(topology: Topology, vault: Vault) -> list[Problem]:
    """One problem per required secret the vault lacks, so validation can report them all."""
    return [
        Problem("vault", name, f"missing {description}: run `bulwark secrets generate INVENTORY`")
        for name, description in required_secrets(topology).items()
        if name not in vault
    ]


@dataclass(frozen=True)
class GenerateReport:
    """What `generate_secrets` did, by name: nothing in it is a secret value."""

    created: tuple[str, ...]
    kept: tuple[str, ...]  # already in the vault, left untouched
    pki: tuple[str, ...]  # created or renewed by `bulwark.pki.ensure_pki`
    credentials: Path | None  # the file that received new passwords, if any


# Called after each secret is made with (done, total, name): Argon2id hashing takes a while.
Progress = Callable[[int, int, str], None]


def generate_secrets(
    topology: Topology,
    vault: Vault,
    credentials_out: Path | None,
    progress: Progress | None = None,
) -> GenerateReport:
    """Create every missing secret, never touching an existing one, then save the vault.

    New users' passwords are written to `credentials_out` (merged into it if it exists) before
    the vault is saved, so a hash is never stored for a password nobody received. Without
    `credentials_out`, refuses to make any: nobody could ever use them.
    """
    required = _required(topology)
    missing = [name for name in required if name not in vault]
    accounts = [name for name in missing if required[name][0] == "account"]
    if accounts and credentials_out is None:
        raise BulwarkError(
            f"{len(accounts)} user passwords to generate ({', '.join(accounts)}) and no "
            "credentials file to hand them out with: pass --credentials-out FILE"
        )
    credentials = _read_credentials(credentials_out) if accounts else {}
    for done, name in enumerate(missing, 1):
        kind = required[name][0]
        if kind == "account":
            password = _user_password()
            vault.set(name, _HASHER.hash(password))
            _record_credential(credentials, name, password)
        else:
            vault.set(name, _GENERATORS[kind]())
        if progress is not None:
            progress(done, len(missing), name)
    if accounts:
        text = json.dumps(credentials, indent=2, sort_keys=True) + "\n"
        write_private_file(credentials_out, text.encode())
    if missing:
        vault.save()
    pki = ensure_pki(topology, vault)
    if pki:
        vault.save()
    return GenerateReport(
        created=tuple(missing),
        kept=tuple(name for name in required if name not in missing),
        pki=tuple(pki),
        credentials=credentials_out if accounts else None,
    )


def _read_credentials(path: Path) -> dict[str, dict]:
    """The credentials file's users, or nothing if it does not exist yet."""
    if not path.exists():
        return {}
    try:
        credentials = json.loads(path.read_text())
    except (OSError, ValueError):
        credentials = None
    if not isinstance(credentials, dict) or not all(
        isinstance(entry, dict) for entry in credentials.values()
    ):
        raise BulwarkError(f"{path} is not a credentials file written by `bulwark secrets`")
    return credentials


def _record_credential(credentials: dict[str, dict], name: str, password: str) -> None:
    """File `password` under its user: {user: {"main": ..., "app": {label: ...}}}."""
    user, label = account_password(name)
    entry = credentials.setdefault(user, {})
    if label is None:
        entry["main"] = password
    else:
        entry.setdefault("app", {})[label] = password
