"""Errors an operator can act on: the CLI prints their message on one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BulwarkError(Exception):
    """A problem with the operator's input or environment, explained in the message."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices` to a mistyped `value`, or nothing."""
    close = difflib.get_close_matches(value, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
