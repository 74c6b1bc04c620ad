"""Secret values, the stores that hand them out, and the one way files holding them are written.

The bottom of bulwark's secrets: the vault, the PKI, the renderer and the roles all build on it,
and it builds on nothing of bulwark's but its errors.

`Secret` is a string that never shows itself by accident: `str()`, `repr()`, f-strings, logging
and exceptions all see the placeholder `<secret:NAME sha256:XXXXXXXX>`; only `reveal()` returns the
value. Templates use the `reveal` filter, which the deploy environment honours and the audit
renderer does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from bulwark.errors import BulwarkError


class Secret:
    """A named secret value. Equality compares values; hashing uses the name and a digest."""

    __slots__ = ("_value", "name")

    def __init__(self, name: str, value: str):
        self.name = name
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def digest(self) -> str:
        """First 8 hex digits of the value's SHA-256: shows a secret changed, not what it is."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:8]

    @property
    def placeholder(self) -> str:
        return f"<secret:{self.name} sha256:{self.digest}>"

    def __str__(self) -> str:
        return self.placeholder

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return self.placeholder

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self.name, self._value) == (other.name, other._value)

    def __hash__(self) -> int:
        return hash((self.name, self.digest))

    def __reduce__(self):
        raise TypeError(f"{self.placeholder} cannot be pickled")


class SecretStore(Protocol):
    """Where secrets are read from: the vault, or the audit's sealed stand-in."""

    def get(self, name: str) -> Secret: ...

    def __contains__(self, name: object) -> bool: ...


class MutableSecretStore(SecretStore, Protocol):
    """A store that also takes new secrets: what generation and the PKI write to."""

    def set(self, name: str, value: str) -> None: ...


def write_private_file(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write `data` to `path`, mode 0600, atomically: readers see the old file or the new one.

    The data goes to a temporary file in the same directory, is fsynced, then renamed over
    `path`, or with `replace=False` hard-linked to it, which fails if `path` exists. A crash never
    leaves a half-written vault, key or credentials file behind.
    """
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            (os.replace if replace else os.link)(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except FileExistsError:
        raise BulwarkError(f"{path} already exists: refusing to replace it") from None
    except OSError as error:
        raise BulwarkError(f"cannot write {path}: {error.strerror}") from None
