"""Running commands on the controller: argument lists only, errors as one-line BulwarkErrors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from bulwark.errors import BulwarkError


def require_root() -> None:
    if os.geteuid() != 0:
        raise BulwarkError("the lab needs root (namespaces, bridges, containers): run it as root")


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, check: bool = True) -> str:
    """Run `argv`, return its stdout; on failure raise with the command and its last error line."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env={**os.environ, **env} if env else None,
        check=False,
    )
    if check and result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise BulwarkError(
            f"`{' '.join(argv)}` failed ({result.returncode}): {detail[-1] if detail else ''}"
        )
    return result.stdout


def installed(tool: str) -> bool:
    """Whether `tool` is on PATH: nothing of a lab can exist that needed a missing tool."""
    return shutil.which(tool) is not None


def succeeds(argv: Sequence[str]) -> bool:
    return subprocess.run(list(argv), capture_output=True, check=False).returncode == 0


def say(message: str) -> None:
    """Progress for the operator, on stderr so stdout stays parseable."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def step(message: str) -> Iterator[None]:
    """Announce a slow step and report how long it took."""
    say(f"lab: {message} ...")
    started = time.monotonic()
    yield
    say(f"lab: {message}: done in {time.monotonic() - started:.1f} s")
