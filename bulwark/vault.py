"""The vault: every secret of an inventory in one encrypted file, opened with a key kept elsewhere.

The vault file lives in the repository; its key file never does (`BULWARK_VAULT_KEY` points at
it). The file is two lines: a JSON header `{"format", "key_id", "nonce"}` and the base64
AES-256-GCM ciphertext of a JSON object {name: value}. The header is the cipher's associated
data, so changing any of its fields makes authentication fail. The key id (first 16 hex digits
of the key's SHA-256) tells a wrong key from a damaged file. Content is serialised with sorted
names, and every save draws a fresh nonce and replaces the file atomically with mode 0600.

No value ever appears in an exception, a repr or a log: `get` hands out `Secret` objects.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bulwark.errors import BulwarkError
from bulwark.secret import Secret, write_private_file

KEY_ENV = "BULWARK_VAULT_KEY"
FORMAT = 1
_KEY_SIZE = 32  # AES-256
_NONCE_SIZE = 12  # GCM's standard nonce; random is safe for far more saves than a vault sees
_HEADER_FIELDS = {"format", "key_id", "nonce"}
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._/@+-]*$")


class VaultError(BulwarkError):
    """The vault cannot do what was asked; the message names the file or the secret."""


class KeyFileError(VaultError):
    """The key is not available: BULWARK_VAULT_KEY unset, or its file missing or malformed."""


class WrongKeyError(VaultError):
    """The key opens some vault, but not this one (the key ids differ)."""


class CorruptVaultError(VaultError):
    """The vault file was altered or damaged: the right key does not authenticate it."""


class UnknownSecretError(VaultError):
    """No secret by that name; the message suggests close names."""


def _key_id(key: bytes) -> str:
    """A key's public fingerprint: enough to tell keys apart, useless to an attacker."""
    return hashlib.sha256(key).hexdigest()[:16]


def key_path_from_env() -> Path:
    """The key file named by BULWARK_VAULT_KEY, which must be set: there is no default location."""
    value = os.environ.get(KEY_ENV)
    if not value:
        raise KeyFileError(f"{KEY_ENV} is not set: point it at the vault key file")
    return Path(value).expanduser()


def load_key(path: Path) -> bytes:
    """Read a key file: one line of base64 encoding 32 random bytes, readable by its owner only.

    Like ssh with a private key, a key file that grants group or others any access is refused.
    """
    try:
        with open(path, "rb") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            text = file.read()
    except FileNotFoundError:
        raise KeyFileError(f"vault key file not found: {path}") from None
    except OSError as error:
        raise KeyFileError(f"cannot read vault key file {path}: {error.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"vault key file {path} is open to group or others (mode {mode:04o}): "
            f"run `chmod 600 {path}`"
        )
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != _KEY_SIZE:
        raise KeyFileError(
            f"malformed vault key file {path}: expected one line of base64 encoding 32 bytes"
        )
    return key


def ensure_key(path: Path) -> tuple[bytes, bool]:
    """The key at `path`, created (0600) if the file does not exist; True if it was created.

    An existing key file is used, never replaced: one key may guard several vaults.
    """
    if Path(path).exists():
        return load_key(path), False
    key = secrets.token_bytes(_KEY_SIZE)
    write_private_file(path, base64.b64encode(key) + b"\n", replace=False)
    return key, True


def init_vault(path: Path) -> tuple[Vault, bool]:
    """Create an empty vault at `path`, keyed by BULWARK_VAULT_KEY's file (made if missing).

    Returns the vault and whether the key file was created. Never replaces a vault or a key.
    """
    path = Path(path)
    if path.exists():
        raise VaultError(f"vault already exists: {path}")
    key, created = ensure_key(key_path_from_env())
    return Vault.create(path, key), created


def open_vault(path: Path) -> Vault:
    """Open the vault at `path` with the key file BULWARK_VAULT_KEY names."""
    return Vault.open(path, load_key(key_path_from_env()))


def _check_name(name: str) -> str:
    """Return `name` if it is a valid secret name; names are paths like `luks/nj-store/mail`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise VaultError(
            f"invalid secret name {name!r}: use lower-case letters, digits and . _ / @ + -, "
            "starting with a letter or digit"
        )
    return name


def _canonical(header: dict) -> bytes:
    """The header's one serialisation: written to the file and authenticated as associated data."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


class Vault:
    """An open vault: its secrets in memory, saved to `path` on `save()`."""

    def __init__(self, path: Path, key: bytes, values: dict[str, str]):
        """Use `Vault.create` or `Vault.open`."""
        self.path = Path(path)
        self._key = key
        self._values = values

    @classmethod
    def create(cls, path: Path, key: bytes) -> Vault:
        """Write a new, empty vault; refuses to replace an existing file."""
        if Path(path).exists():
            raise VaultError(f"vault already exists: {path}")
        vault = cls(path, key, {})
        vault.save()
        return vault

    @classmethod
    def open(cls, path: Path, key: bytes) -> Vault:
        """Read and authenticate the vault at `path`, telling a wrong key from a damaged file."""
        path = Path(path)
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:
            raise VaultError(
                f"vault file not found: {path} (create it with `bulwark vault init` or "
                "`bulwark secrets generate INVENTORY`)"
            ) from None
        except OSError as error:
            raise VaultError(f"cannot read vault file {path}: {error.strerror}") from None
        header = None
        try:
            header = json.loads(lines[0])
            file_key_id = header["key_id"]
            nonce = base64.b64decode(header["nonce"], validate=True)
            ciphertext = base64.b64decode(lines[1], validate=True)
            well_formed = (
                set(header) == _HEADER_FIELDS
                and _KEY_ID.fullmatch(file_key_id) is not None
                and len(nonce) == _NONCE_SIZE
                and lines[2:] == [b""]
            )
        except (ValueError, TypeError, KeyError, IndexError):
            well_formed = False
        if isinstance(header, dict) and header.get("format", FORMAT) != FORMAT:
            raise CorruptVaultError(
                f"{path} has vault format {header['format']!r}; this bulwark reads {FORMAT}"
            )
        if not well_formed:
            raise CorruptVaultError(f"{path} is not a bulwark vault file, or it is damaged")
        if file_key_id != _key_id(key):
            raise WrongKeyError(
                f"wrong key for vault {path}: it needs key id {file_key_id}, "
                f"the key given has id {_key_id(key)}"
            )
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, _canonical(header))
            values = json.loads(plaintext)
        except (InvalidTag, ValueError):
            values = None
        if not isinstance(values, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in values.items()
        ):
            raise CorruptVaultError(
                f"vault {path} fails authentication with its own key (id {file_key_id}): "
                "the file was altered or damaged; restore it from version control"
            )
        return cls(path, key, values)

    @property
    def key_id(self) -> str:
        """The id of the key the vault is (or will be) saved with."""
        return _key_id(self._key)

    def __repr__(self) -> str:
        return f"<Vault {self.path} key {self.key_id}: {len(self._values)} secrets>"

    def names(self) -> list[str]:
        """Every secret's name, sorted."""
        return sorted(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def get(self, name: str) -> Secret:
        """The secret `name`, wrapped so that printing it shows a placeholder only."""
        return Secret(name, self._values[self._known(name)])

    def set(self, name: str, value: str) -> None:
        """Add or replace a secret (in memory until `save()`)."""
        name = _check_name(name)
        if not isinstance(value, str) or not value:
            raise VaultError(f"secret {name}: the value must be a non-empty string")
        self._values[name] = value

    def delete(self, name: str) -> None:
        """Remove a secret (in memory until `save()`)."""
        del self._values[self._known(name)]

    def save(self) -> None:
        """Encrypt with a fresh nonce and atomically replace the file (mode 0600)."""
        nonce = secrets.token_bytes(_NONCE_SIZE)
        header = {
            "format": FORMAT,
            "key_id": self.key_id,
            "nonce": base64.b64encode(nonce).decode(),
        }
        plaintext = json.dumps(self._values, sort_keys=True, separators=(",", ":")).encode()
        ciphertext = AESGCM(self._key).encrypt(nonce, plaintext, _canonical(header))
        write_private_file(
            self.path, _canonical(header) + b"\n" + base64.b64encode(ciphertext) + b"\n"
        )

    def rotate_key(self, new_key: bytes) -> None:
        """Re-encrypt under `new_key` and save: from then on only `new_key` opens the file."""
        if len(new_key) != _KEY_SIZE:
            raise KeyFileError(f"a vault key is {_KEY_SIZE} bytes, not {len(new_key)}")
        if new_key == self._key:
            raise KeyFileError(f"the new key is the current key of {self.path}: nothing to rotate")
        self._key = new_key
        self.save()

    def _known(self, name: str) -> str:
        """Return `name` if the vault holds it; otherwise say so and suggest close names."""
        if name not in self._values:
            close = difflib.get_close_matches(_check_name(name), self._values, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownSecretError(f"no secret {name!r} in vault {self.path}{hint}")
        return name
