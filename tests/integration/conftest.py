"""testinfra over SSH on every lab host, through the lab's ssh_config with pinned host keys.

The hosts come from inventory/lab.py (never listed here). Nothing connects unless the lab is up:
a missing lab ends the run before collection, so no test can reach an address outside it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import testinfra

from bulwark.errors import BulwarkError
from bulwark.lab import lifecycle, paths
from bulwark.lab.plan import LabPlan
from bulwark.vault import KEY_ENV

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"


def pytest_configure(config: pytest.Config) -> None:
    try:
        lab = lifecycle.require_up(LAB_INVENTORY)
    except BulwarkError as error:
        raise pytest.UsageError(f"integration tests refuse to connect: {error}") from None
    config.option.ssh_config = lab.plan.ssh.config_file
    config.option.hosts = ",".join(f"ssh://{host.name}" for host in lab.plan.hosts)


@pytest.fixture(scope="session")
def lab_plan() -> LabPlan:
    return lifecycle.load(LAB_INVENTORY).plan


@pytest.fixture(scope="session")
def lab_host(lab_plan):
    """testinfra host by inventory name, over the lab's ssh_config (pinned keys), for tests
    that involve several hosts at once (they run once, not once per host)."""

    def get(name: str):
        return testinfra.get_host(f"ssh://{name}", ssh_config=lab_plan.ssh.config_file)

    return get


@pytest.fixture(scope="session")
def lab_pyinfra() -> Callable[..., subprocess.CompletedProcess]:
    """Run a deploy file on some lab hosts as an operator would (with the lab's vault key, which
    every deploy checks before it connects), with `env` added to the environment; returns the
    finished pyinfra process."""

    def run(
        deploy: str | Path,
        limit: str,
        *options: str,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(REPO / ".venv/bin/pyinfra"), "-y", str(LAB_INVENTORY), str(deploy),
                "--limit", limit, *options,
            ],
            cwd=REPO,
            env={**os.environ, KEY_ENV: str(paths.STATE_DIR / "vault.key"), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )  # fmt: skip

    return run
