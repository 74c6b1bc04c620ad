"""Shared unit-test fixtures. Keep each one small and clearly named."""

from __future__ import annotations

import base64
import dataclasses
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bulwark.platform_secrets import GenerateReport
    from bulwark.topology import Topology
    from bulwark.vault import Vault


@pytest.fixture
def vault_key_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh vault key file (0600, outside any vault's directory) named by BULWARK_VAULT_KEY."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    path = key_dir / "vault.key"
    path.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
    path.chmod(0o600)
    monkeypatch.setenv("BULWARK_VAULT_KEY", str(path))
    return path


# --- Two-site inventory files (topology and render tests) -------------------------------------


def _two_site_groups() -> dict[str, tuple[list[tuple[str, dict]], dict]]:
    """A small, valid two-site inventory: per site a gateway, a mail host and a backup host, plus
    a web host in nj only (no peer needed). Every host is a fresh dict, free to mutate."""
    from bulwark import registry

    platform = {
        "domain": "example.com",
        "admin_networks": ["203.0.113.0/28"],
        "accounts": [
            {"user": "alice", "name": "Alice Archer", "app_passwords": ["laptop", "phone"]},
            {"user": "bob", "name": "Bob Baker", "app_passwords": ["desktop"]},
        ],
    }

    def site(name, primary, lan, public, management, hosts):
        data = {
            **platform,
            "site": name,
            "site_location": f"{name} data center",
            "site_primary": primary,
            "site_lan": f"{lan}.0/24",
            "site_public": f"{public}.0/25",
            "site_management": f"{management}.0/24",
        }
        entries = []
        for host, roles, number, has_public in hosts:
            host_data = {
                "roles": roles,
                "lan_address": f"{lan}.{number}",
                "management_address": f"{management}.{number}",
            }
            if has_public:
                host_data["public_address"] = f"{public}.{number}"
            if "proxy" in roles:  # the proxies' own addresses, right after the host's own
                host_data["proxy_addresses"] = {
                    label: f"{public}.{number + offset}"
                    for offset, label in enumerate(("imaps-proxy", "pops-proxy", "smtps-proxy"), 3)
                }
            devices = {
                volume: f"/dev/disk/by-id/virtio-{volume}"
                for role in (*registry.EVERY_HOST_ROLES, *roles)
                for volume in registry.role(role).volumes
            }
            if devices:
                host_data["volume_devices"] = devices
            entries.append((f"{name}-{host}", host_data))
        return entries, data

    return {
        "nj": site(
            "nj",
            True,
            "10.1.0",
            "192.0.2",
            "10.101.0",
            [
                ("gw", ["gateway", "proxy"], 10, True),
                ("mail", ["mx", "mailstore"], 25, True),
                ("web", ["dav", "files"], 40, True),
                ("backup", ["backup"], 60, False),
            ],
        ),
        "sea": site(
            "sea",
            False,
            "10.2.0",
            "198.51.100",
            "10.102.0",
            [
                ("gw", ["gateway", "proxy"], 10, True),
                ("mail", ["mx", "mailstore"], 25, True),
                ("web", ["dav", "files"], 40, True),
                ("backup", ["backup"], 60, False),
            ],
        ),
    }


class InventoryFile:
    """A two-site pyinfra inventory, edited as Python data and written out as an inventory file.

    The file has the shape of inventory/lab.py: one module-level `(hosts, data)` tuple per site
    group, host entries `(name, data)`. `write()` turns the data into source with `repr`.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.groups = _two_site_groups()

    def host(self, name: str) -> dict:
        """The data dict of host `name` (edit it in place)."""
        for hosts, _ in self.groups.values():
            for host_name, data in hosts:
                if host_name == name:
                    return data
        raise KeyError(name)

    def site(self, name: str) -> dict:
        """The site group's data dict (edit it in place)."""
        return self.groups[name][1]

    def set_platform(self, field: str, value) -> None:
        """Set a platform-wide field the same way in every site group."""
        for _, data in self.groups.values():
            data[field] = value

    def add_host(self, group: str, name: str, data: dict) -> None:
        self.groups.setdefault(group, ([], {}))[0].append((name, data))

    def remove_host(self, name: str) -> None:
        for hosts, _ in self.groups.values():
            hosts[:] = [entry for entry in hosts if entry[0] != name]

    def source(self, check: bool = False) -> str:
        """The inventory's source; `check`: it arms bulwark's check itself, as the lab does."""
        lines = ['"""A test inventory written by tests/unit/conftest.py."""', ""]
        if check:
            lines += ["from bulwark.inventory import check_before_connecting", ""]
        lines += [f"{group} = {value!r}" for group, value in self.groups.items()]
        if check:
            lines += ["", "check_before_connecting()"]
        return "\n".join(lines) + "\n"

    def write(self, name: str = "inventory.py", check: bool = False) -> Path:
        path = self.directory / name
        path.write_text(self.source(check))
        return path


@pytest.fixture
def two_site_inventory(tmp_path: Path) -> InventoryFile:
    """A valid two-site inventory to break one field at a time (see `InventoryFile`)."""
    directory = tmp_path / "inventory"
    directory.mkdir()
    return InventoryFile(directory)


# --- The repository's inventories, rendered (render and role tests) ---------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_INVENTORIES = {
    "production": REPO_ROOT / "inventory" / "production.py",
    "lab": REPO_ROOT / "inventory" / "lab.py",
}


@pytest.fixture(scope="session")
def rendered_inventories() -> dict[str, list]:
    """Every file of every host of inventory/production.py and inventory/lab.py, sealed:
    {"production": [RenderedFile, ...], "lab": [...]}. Shared: do not mutate."""
    from bulwark.audit import SealedSecrets
    from bulwark.inventory import load_topology
    from bulwark.render import render_topology

    return {
        name: render_topology(load_topology(path), SealedSecrets())
        for name, path in REPO_INVENTORIES.items()
    }


# --- Vaults filled by generate_secrets (secrets, render and role tests) --------------------------

# The key the tests' generated vaults are made with (`GeneratedVaults.copy` can re-key a copy).
VAULT_KEY = bytes(range(32))


@dataclasses.dataclass(frozen=True)
class GeneratedVault:
    """One caller's own copy of a vault `generate_secrets` filled, and what that run reported."""

    report: GenerateReport  # its `credentials` is the copy's credentials file
    vault: Vault
    credentials: Path


class GeneratedVaults:
    """`generate_secrets` run once per session for each topology and set of required secrets.

    It hashes every user password with Argon2id (64 MiB, t=3: a few tenths of a second each, far
    more when the two cores are busy), and a dozen fixtures want the same result. Each caller
    gets a copy of the vault and credentials files, free to change and save.
    """

    def __init__(self, directory: Path):
        self._directory = directory
        self._runs: dict[tuple, tuple[GenerateReport, Path, Path]] = {}

    def _run(self, topology: Topology) -> tuple[GenerateReport, Path, Path]:
        """The session's run for `topology` as the registry stands now (`every_role_deployed`
        changes what is required); its vault_file is only where a vault lives, not what is in
        it."""
        from bulwark.platform_secrets import generate_secrets, required_secrets
        from bulwark.vault import Vault

        key = (dataclasses.replace(topology, vault_file=None), tuple(required_secrets(topology)))
        if key not in self._runs:
            directory = self._directory / str(len(self._runs))
            directory.mkdir()
            vault = Vault.create(directory / "generated.vault", VAULT_KEY)
            credentials = directory / "credentials.json"
            report = generate_secrets(topology, vault, credentials)
            self._runs[key] = (report, vault.path, credentials)
        return self._runs[key]

    def copy(
        self, topology: Topology, directory: Path, name: str = "test.vault", key: bytes = VAULT_KEY
    ) -> GeneratedVault:
        """`directory/name` and `directory/credentials.json`, as `generate_secrets` left them
        for `topology` in an empty vault; the vault re-encrypted under `key` if it is not
        VAULT_KEY."""
        from bulwark.vault import Vault

        report, vault_path, credentials_path = self._run(topology)
        credentials = directory / "credentials.json"
        shutil.copy2(credentials_path, credentials)  # keeps the 0600 generate_secrets gave it
        shutil.copy2(vault_path, directory / name)
        vault = Vault.open(directory / name, VAULT_KEY)
        if key != VAULT_KEY:
            vault.rotate_key(key)
        return GeneratedVault(
            dataclasses.replace(report, credentials=credentials), vault, credentials
        )


@pytest.fixture(scope="session")
def generated_vaults(tmp_path_factory: pytest.TempPathFactory) -> GeneratedVaults:
    """Copies of vaults filled by `generate_secrets`, each generated once (see GeneratedVaults)."""
    return GeneratedVaults(tmp_path_factory.mktemp("generated-vaults"))


@pytest.fixture
def inventory_with_vault(
    two_site_inventory: InventoryFile,
    vault_key_env: Path,
    generated_vaults: GeneratedVaults,
    tmp_path: Path,
) -> tuple[Path, Vault]:
    """The two-site inventory written with a vault of its own (in tmp_path, key in
    BULWARK_VAULT_KEY) holding every secret it needs, as `generate_secrets` makes them (a copy
    of the session's run): the inventory's path and the open vault, free to change."""
    from bulwark.inventory import load_topology
    from bulwark.vault import load_key

    vault_path = tmp_path / "inventory.vault"
    two_site_inventory.set_platform("vault_file", str(vault_path))
    inventory = two_site_inventory.write()
    vault = generated_vaults.copy(
        load_topology(inventory), tmp_path, vault_path.name, load_key(vault_key_env)
    ).vault
    return inventory, vault


@pytest.fixture(scope="module")
def lab_vault(tmp_path_factory: pytest.TempPathFactory, generated_vaults: GeneratedVaults) -> Vault:
    """Every secret inventory/lab.py needs, as `bulwark secrets generate` makes them: the
    calling module's own copy of the session's run (free to change)."""
    from bulwark.inventory import load_topology

    lab = load_topology(REPO_INVENTORIES["lab"])
    return generated_vaults.copy(lab, tmp_path_factory.mktemp("vault"), "lab.vault").vault


# --- Daemon checkers that may be missing (the Makefile installs them) -------------------------


@pytest.fixture(scope="session")
def needs_sshd() -> None:
    """Skip unless sshd and ssh-keygen are installed."""
    import shutil

    if shutil.which("sshd") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd not installed (make test installs openssh-server)")


@pytest.fixture(scope="session")
def needs_apt_config() -> None:
    """Skip unless apt-config is installed (a Debian machine)."""
    import shutil

    if shutil.which("apt-config") is None:
        pytest.skip("apt-config not installed (not a Debian machine)")


# --- Roles not deployed yet --------------------------------------------------------------------


@pytest.fixture
def every_role_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend every role of bulwark.registry has a module: the ports, secrets and volumes the
    platform gets once they all do (render only the roles that really have one)."""
    from bulwark import registry

    monkeypatch.setattr(registry.Role, "implemented", property(lambda role: True))


@pytest.fixture
def logs_not_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the logs role had no module, as before it got one: every role has one now, and
    what bulwark does with a role not deployed yet must still be tested; tests of one volume
    also use it to leave the logs volume out."""
    from bulwark import registry

    def implemented(role: registry.Role) -> bool:
        return role.module is not None and role.name != "logs"

    monkeypatch.setattr(registry.Role, "implemented", property(implemented))
