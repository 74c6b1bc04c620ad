"""The VM scenario: the storage role proven on a real kernel, in qemu guests (bulwark.lab.vm).

Containers have no device-mapper, so LUKS is only real here. The session boots one guest per
site of tests/vm/inventory.py, `nj-store` and `sea-store`, linked by a lab-made segment that
carries their public addresses (the WAN, hence the tunnel), each with blank disks for its logs
and mail volumes (`nj-store` also a spare one the tests fill); makes the inventory's vault as an
operator does (`bulwark vault init`, `bulwark secrets generate`), and deploys with pyinfra
over the guests' forwarded SSH ports. Needs root (qemu, the harness's state); KVM when it
boots guests here, TCG otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bulwark.inventory import load_topology
from bulwark.lab import vm
from bulwark.vault import KEY_ENV

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "tests/vm/inventory.py"
BIN = Path(sys.executable).parent
# The guest the tests look at, and the other site's (its Tang, its end of the tunnel).
GUEST = "nj-store"
PEER = "sea-store"
# The volumes' disks, and on GUEST a spare one the refusal test puts a filesystem on.
_VOLUME_DISKS = (vm.Disk("logs", "256M"), vm.Disk("mail", "1G"))
DISKS = {GUEST: (*_VOLUME_DISKS, vm.Disk("dirty", "64M")), PEER: _VOLUME_DISKS}
# The WAN segment's prefix: one network holding both sites' public ranges.
WAN_PREFIX = 26
# What the deploys run: the volumes (/var/log's among them), the tunnel, each site's Tang, the
# bindings to it.
ROLES = "storage,logs,vpn,gateway,tang,clevis"
# Set to keep the guest after the session (to look around with `bulwark lab vm ssh`).
KEEP_ENV = "BULWARK_VM_KEEP"


@dataclass(frozen=True)
class Deploy:
    """A finished pyinfra run: its exit status, output, seconds and changed operations."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def changed(self) -> list[str]:
        """Names of the operations that changed something (pyinfra's --json results)."""
        results = json.loads(self.stdout)["results"]
        return [op["name"] for op in results["operations"] if op["success"]]


@pytest.fixture(scope="session")
def vault_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh vault holding every secret the inventory needs, made with bulwark's own CLI."""
    directory = tmp_path_factory.mktemp("vault")
    env = {
        KEY_ENV: str(directory / "vault.key"),
        "BULWARK_VM_VAULT": str(directory / "vm.vault"),
    }
    for argv in (
        ["vault", "init", "--vault", env["BULWARK_VM_VAULT"]],
        ["secrets", "generate", str(INVENTORY), "--credentials-out",
         str(directory / "credentials.json")],
    ):  # fmt: skip
        result = bulwark_cli(argv, env)
        assert result.returncode == 0, result.stderr
    return env


def bulwark_cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `bulwark ARGV` as an operator would, with `env` added to the environment."""
    return subprocess.run(
        [str(BIN / "python"), "-m", "bulwark.cli", *argv],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def guests() -> Iterator[dict[str, vm.Guest]]:
    """Fresh guests with blank disks, linked by the WAN segment, removed afterwards unless
    BULWARK_VM_KEEP is set."""
    if os.geteuid() != 0:
        pytest.fail("the VM scenario needs root (qemu, /var/lib/bulwark-vm)")
    for existing in vm.guests():
        if existing.name in DISKS:
            vm.down(existing.name)
    topology = load_topology(INVENTORY)
    wan = vm.link_pair(*(f"{topology.host(name).public_address}/{WAN_PREFIX}" for name in DISKS))
    booted = {}
    for (name, disks), link in zip(DISKS.items(), wan, strict=True):
        started = time.monotonic()
        booted[name] = vm.up(name, disks, (link,))
        print(f"\n{name}: up ({booted[name].accel}) in {time.monotonic() - started:.1f} s")
    yield booted
    if not os.environ.get(KEEP_ENV):
        for name in booted:
            vm.down(name)


@pytest.fixture(scope="session")
def guest(guests: dict[str, vm.Guest]) -> vm.Guest:
    return guests[GUEST]


def _runner(guest: vm.Guest) -> Callable[..., subprocess.CompletedProcess]:
    """Run a shell command in the guest over SSH, as root, `stdin` on its stdin; raises if it
    fails unless told."""

    def run(
        command: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            vm.ssh_argv(guest, [command]), input=stdin, capture_output=True, text=True, check=check
        )

    return run


@pytest.fixture(scope="session")
def on_guest(guest: vm.Guest) -> Callable[..., subprocess.CompletedProcess]:
    return _runner(guest)


@pytest.fixture(scope="session")
def on_peer(guests: dict[str, vm.Guest]) -> Callable[..., subprocess.CompletedProcess]:
    """The same on the other site's guest."""
    return _runner(guests[PEER])


@pytest.fixture(scope="session")
def deploy(guests: dict[str, vm.Guest], vault_env: dict[str, str]) -> Callable[..., Deploy]:
    """Deploy ROLES on `limit` (every guest unless told) as an operator would, `env` added."""

    def run(env: dict[str, str] | None = None, limit: str | None = None) -> Deploy:
        started = time.monotonic()
        limited = ["--limit", limit] if limit else []
        result = subprocess.run(
            [str(BIN / "pyinfra"), "-y", "--json", str(INVENTORY), "deploy.py", *limited,
             "--data", f"only_roles={ROLES}"],
            cwd=REPO,
            env={**os.environ, **vault_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=900,
        )  # fmt: skip
        return Deploy(result.returncode, result.stdout, result.stderr, time.monotonic() - started)

    return run
