"""`bulwark secrets`."""

import click


@click.group("secrets")
def secrets() -> None:
    """(being built)"""
