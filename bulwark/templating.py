"""Jinja2 rendering shared by the roles (deploy) and the renderer (audit).

One environment per mode: the deploy environment's `reveal` filter returns a secret's value, the
audit environment's returns its placeholder. A template that forgets the filter still gets the
placeholder, so the safe outcome is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from bulwark.secret import Secret

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def _reveal(value: Any) -> str:
    if not isinstance(value, Secret):
        raise TypeError(f"the reveal filter takes a Secret, got {type(value).__name__}")
    return value.reveal()


def _seal(value: Any) -> str:
    if not isinstance(value, Secret):
        raise TypeError(f"the reveal filter takes a Secret, got {type(value).__name__}")
    return value.placeholder


@cache
def environment(reveal: bool) -> jinja2.Environment:
    """The Jinja2 environment for deploying (`reveal=True`) or auditing."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - configuration files, not HTML
        # The templates are part of the checkout, not edited while a command runs: no stat of
        # the template file on every render (31,000 of them for a thousand hosts).
        auto_reload=False,
    )
    env.filters["reveal"] = _reveal if reveal else _seal
    return env


def render_template(role: str, template: str, context: dict[str, Any], reveal: bool) -> str:
    """Render `templates/<role>/<template>` with `context`."""
    return environment(reveal).get_template(f"{role}/{template}").render(context)


@cache
def shipped_text(path: Path) -> str:
    """A file of bulwark's own that a role installs (a script), read once per process: every
    host's template context holds it."""
    return path.read_text()


def derived_or_sealed(derive: Callable[[], str], sealed: str) -> str:
    """A public value derived from a secret (a certificate, a public key, a digest), or `sealed`
    when the audit has no vault key to derive it with (SealedSecret.reveal raises
    PermissionError)."""
    try:
        return derive()
    except PermissionError:
        return sealed
