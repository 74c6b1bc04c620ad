"""`bulwark vault`."""

import click


@click.group("vault")
def vault() -> None:
    """(being built)"""
