"""Errors an operator can act on: the CLI prints their message on one line and exits 2."""


class BulwarkError(Exception):
    """A problem with the operator's input or environment, explained in the message."""
