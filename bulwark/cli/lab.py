"""`bulwark lab`."""

import click


@click.group("lab")
def lab() -> None:
    """(being built)"""
