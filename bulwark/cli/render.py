"""`bulwark render`."""

import click


@click.group("render")
def render() -> None:
    """(being built)"""
