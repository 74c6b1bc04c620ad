"""The `Secret` value type: a string that never shows itself by accident.

`str()`, `repr()`, f-strings, logging and exceptions all see the placeholder
`<secret:NAME sha256:XXXXXXXX>`; only `reveal()` returns the value. Templates use the `reveal`
filter, which the deploy environment honours and the audit renderer does not.
"""

from __future__ import annotations

import hashlib


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
        """First 8 hex digits of the value's SHA-256: shows that a secret changed, not what it is."""
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
