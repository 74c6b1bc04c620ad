"""`bulwark pki`."""

import click


@click.group("pki")
def pki() -> None:
    """(being built)"""
