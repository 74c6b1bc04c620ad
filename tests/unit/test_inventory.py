"""Loading inventories, and the check every pyinfra run passes before it connects to any host.

Bad input must give one clear message naming the field or file, never a traceback, and nothing
may connect. Most cases call the check (`check_run`, `check_vault`, `load_topology`) directly;
a few run pyinfra itself on inventories whose every host points at 127.0.0.1 port 1, so that a
check that failed to fire could at worst knock on a closed loopback port (and the test fails).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mutations import MANY_MISTAKES, MANY_MISTAKES_PROBLEMS, set_host, set_platform

from bulwark.cli import main
from bulwark.errors import BulwarkError
from bulwark.inventory import (
    PyinfraRun,
    check_run,
    check_vault,
    load_inventory,
    load_topology,
)
from bulwark.validation import TopologyError
from bulwark.vault import Vault, load_key

REPO = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")
DEPLOY = REPO / "deploy.py"
# A closed port on loopback: where pyinfra would go if a check failed to stop it.
LOOPBACK = {"ssh_hostname": "127.0.0.1", "ssh_port": 1}


def problems_of(path: Path) -> list[str]:
    """Load `path`, which must fail, and return its problems as text."""
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return [str(problem) for problem in caught.value.problems]


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# --- loading -------------------------------------------------------------------------------

LEAK_PROBE = """
import os, shutil, subprocess, sys
from pathlib import Path
from bulwark.inventory import load_topology

load_topology(sys.argv[1])
subprocess.run(["true"], check=True)
tree = Path(sys.argv[2])
for index in range(200):
    (tree / str(index)).mkdir(parents=True)
before = len(os.listdir("/proc/self/fd"))
shutil.rmtree(tree)
print("leaked", len(os.listdir("/proc/self/fd")) - before)
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_loading_an_inventory_leaves_the_process_sound(tmp_path):
    """load_inventory imports pyinfra_cli, whose __init__ runs gevent's monkey.patch_all() on
    the calling process (bulwark render, bulwark lab, pytest). After that and any subprocess,
    shutil.rmtree leaks one descriptor per directory: a 1,000-host audit tree is ~10,000."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LEAK_PROBE,
            str(REPO / "inventory" / "production.py"),
            str(tmp_path / "t"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == ["leaked", "0"]


def test_production_inventory_loads():
    topology = load_topology(REPO / "inventory" / "production.py")
    assert len(topology.hosts) == 10
    assert [site.name for site in topology.sites] == ["nj", "sea"]
    assert topology.primary_site.name == "nj"
    assert topology.domain == "example.com"
    assert [account.user for account in topology.accounts] == ["alice", "bob"]
    assert topology.apt_proxy is None
    for site in ("nj", "sea"):
        assert topology.gateway(site).name == f"{site}-gw"
        assert topology.host(f"{site}-gw").roles == ("gateway", "proxy")
        assert topology.host(f"{site}-web").roles == ("mailconfig", "dav", "files", "directory")
        assert topology.host(f"{site}-backup").roles == ("tang", "backup")
        assert topology.host(f"{site}-backup").public_address is None
        for role in ("mx", "mailstore", "directory", "backup"):
            assert len(topology.hosts_with_role(role, site)) == 1


def test_lab_inventory_loads():
    topology = load_topology(REPO / "inventory" / "lab.py")
    assert len(topology.hosts) == 8
    assert [site.name for site in topology.sites] == ["nj", "sea"]
    assert topology.primary_site.name == "nj"
    assert topology.apt_proxy == "http://10.89.0.1:3142"
    for site in ("nj", "sea"):
        assert topology.host(f"{site}-gw").roles == ("gateway", "proxy")
        assert topology.host(f"{site}-mail").roles == ("mx", "mailstore")
        assert topology.host(f"{site}-web").roles == ("mailconfig", "dav", "files", "directory")
        assert topology.host(f"{site}-backup").roles == ("backup",)


def test_loading_executes_the_inventory_file_once(two_site_inventory, tmp_path):
    """Duplicate host names come from pyinfra's inventory, not from running the file again."""
    counter = tmp_path / "executions"
    path = two_site_inventory.write()
    path.write_text(
        f"open({str(counter)!r}, 'a').write('x')\n" + path.read_text() + "nj[0].append(nj[0][0])\n"
    )
    assert problems_of(path) == ["nj-gw.name: listed more than once in the inventory"]
    assert counter.read_text() == "x"


def test_an_inventory_with_a_syntax_error_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text('"""An inventory."""\n\nnj = (\n    [("nj-gw", {})],\n')
    with pytest.raises(BulwarkError) as caught:
        load_inventory(path)
    message = one_line(caught.value)
    assert message.startswith(f"{path}, line ") and "cannot load" in message


def test_an_inventory_that_raises_is_one_line_naming_file_line_and_error(tmp_path):
    path = tmp_path / "raising.py"
    path.write_text('"""An inventory."""\n\nnj = ([], {})\nraise ValueError("no sites today")\n')
    with pytest.raises(BulwarkError) as caught:
        load_inventory(path)
    assert one_line(caught.value) == (
        f"{path}, line 4: ValueError: no sites today: the inventory cannot load"
    )


def test_an_empty_inventory_file_is_refused(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("")
    assert "platform.hosts: the inventory has no hosts" in problems_of(path)


def test_a_guarded_inventory_loads_outside_pyinfra_without_checking_twice(two_site_inventory):
    path = two_site_inventory.write(check=True)
    topology = check_run(PyinfraRun(str(path)), load_inventory(path))  # returns quietly
    assert len(topology.hosts) == 8
    assert len(load_topology(path).hosts) == 8  # and loading it does not recurse


def test_load_topology_of_a_guarded_inventory_raises_not_exits(two_site_inventory):
    set_host("nj-web", "lan_address", "10.1.0.400")(two_site_inventory)
    path = two_site_inventory.write(check=True)
    assert problems_of(path) == ["nj-web.lan_address: '10.1.0.400' is not an IPv4 address"]


# --- bulwark render: bad inventories and bad --out ---------------------------------------------


def render(*args: str):
    return CliRunner().invoke(main, ["render", *args, "--no-check"])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("nj = (\n", "line 1: '(' was never closed", id="syntax-error"),
        pytest.param("import os\nos.getcwd(1)\n", "line 2: TypeError:", id="raises"),
    ],
)
def test_render_of_a_broken_inventory_says_why_in_one_line(tmp_path, source, expected):
    path = tmp_path / "inventory.py"
    path.write_text(source)
    result = render(str(path), "--out", str(tmp_path / "audit"))
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}, line") and expected in result.output
    assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "audit").exists()


def test_render_refuses_an_out_that_is_a_symlink(two_site_inventory, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("not ours")
    link = tmp_path / "audit"
    link.symlink_to(target)
    result = render(str(two_site_inventory.write()), "--out", str(link))
    assert result.exit_code == 2
    assert result.output == f"error: --out {link}: is a symbolic link; give a real directory\n"
    assert (target / "keep.txt").read_text() == "not ours"


def test_render_refuses_an_out_under_a_regular_file(two_site_inventory, tmp_path):
    regular = tmp_path / "notes.txt"
    regular.write_text("a file")
    out = regular / "audit"
    result = render(str(two_site_inventory.write()), "--out", str(out))
    assert result.exit_code == 2
    assert result.output.startswith(f"error: --out {out}: cannot create it: ")
    assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output


# --- the vault, checked before connecting --------------------------------------------------------


@pytest.fixture
def vaulted(two_site_inventory, vault_key_env, tmp_path) -> tuple[Path, Path]:
    """An inventory whose vault_file exists, empty, under the key BULWARK_VAULT_KEY names:
    (inventory, vault file)."""
    vault_path = tmp_path / "inventory.vault"
    two_site_inventory.set_platform("vault_file", str(vault_path))
    Vault.create(vault_path, load_key(vault_key_env))
    return two_site_inventory.write(), vault_path


def vault_error(inventory: Path) -> str:
    with pytest.raises(BulwarkError) as caught:
        check_vault(load_topology(inventory))
    return one_line(caught.value)


def test_an_empty_vault_file_is_named(vaulted):
    inventory, vault = vaulted
    vault.write_bytes(b"")
    assert vault_error(inventory) == f"{vault} is not a bulwark vault file, or it is damaged"


def test_a_truncated_vault_file_is_named(vaulted):
    inventory, vault = vaulted
    vault.write_bytes(vault.read_bytes()[:40])
    assert vault_error(inventory) == f"{vault} is not a bulwark vault file, or it is damaged"


def test_a_vault_of_another_key_is_named(vaulted, tmp_path):
    inventory, vault = vaulted
    vault.unlink()
    Vault.create(vault, bytes(range(32)))
    assert vault_error(inventory).startswith(f"wrong key for vault {vault}: it needs key id ")


def test_a_tampered_vault_is_named(vaulted):
    inventory, vault = vaulted
    header, ciphertext, _ = vault.read_bytes().split(b"\n")
    raw = bytearray(base64.b64decode(ciphertext))
    raw[0] ^= 1
    vault.write_bytes(header + b"\n" + base64.b64encode(bytes(raw)) + b"\n")
    assert vault_error(inventory).startswith(f"vault {vault} fails authentication")


def test_a_short_key_file_is_named(vaulted, vault_key_env):
    vault_key_env.write_bytes(base64.b64encode(bytes(16)) + b"\n")
    assert vault_error(vaulted[0]).startswith(f"malformed vault key file {vault_key_env}:")


def test_an_unreadable_key_file_is_named(vaulted, tmp_path, monkeypatch):
    unreadable = tmp_path / "a-directory.key"  # unreadable as a file, even for root
    unreadable.mkdir()
    monkeypatch.setenv("BULWARK_VAULT_KEY", str(unreadable))
    assert vault_error(vaulted[0]) == f"cannot read vault key file {unreadable}: Is a directory"


def test_no_key_set_is_named(vaulted, monkeypatch):
    monkeypatch.delenv("BULWARK_VAULT_KEY")
    assert vault_error(vaulted[0]) == (
        "BULWARK_VAULT_KEY is not set: point it at the vault key file"
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o601])
def test_a_key_file_open_to_group_or_others_is_refused_like_ssh_does(vaulted, vault_key_env, mode):
    vault_key_env.chmod(mode)
    assert vault_error(vaulted[0]) == (
        f"vault key file {vault_key_env} is open to group or others (mode {mode:04o}): "
        f"run `chmod 600 {vault_key_env}`"
    )


def test_each_missing_secret_is_named_and_no_value_shown(vaulted):
    inventory, vault = vaulted
    with pytest.raises(TopologyError) as caught:
        check_vault(load_topology(inventory))
    fields = [problem.field for problem in caught.value.problems]
    assert "wireguard/nj-gw/private" in fields and "mail/doveadm-password" in fields
    assert str(caught.value).startswith(f"{vault}: {len(fields)} problems, nothing was run")


def test_an_inventory_without_vault_file_is_named(two_site_inventory):
    with pytest.raises(BulwarkError) as caught:
        check_vault(load_topology(two_site_inventory.write()))
    assert one_line(caught.value) == "vault_file: the inventory sets none"


# --- only_roles and --limit -------------------------------------------------------------------


def checked(path: Path, **run) -> None:
    check_run(PyinfraRun(str(path), **run), load_inventory(path))


@pytest.mark.parametrize(
    ("value", "unknown"),
    [
        pytest.param("bogus", "bogus", id="unknown"),
        pytest.param("", "(none given)", id="empty"),
        pytest.param(" , ", "(none given)", id="only-separators"),
        pytest.param("firewall,bogus,vpn", "bogus", id="mixed"),
        pytest.param("Firewall", "Firewall", id="wrong-case"),
        pytest.param(7, "7", id="a-number"),
    ],
)
def test_a_bad_only_roles_is_refused_before_connecting(two_site_inventory, value, unknown):
    two_site_inventory.set_platform("only_roles", value)
    with pytest.raises(BulwarkError) as caught:
        checked(two_site_inventory.write(), deploying=True)
    message = one_line(caught.value)
    assert message.startswith(f"only_roles: unknown role(s) {unknown}; roles are base, pki,")


def test_a_limit_that_names_no_host_is_an_error_naming_it(two_site_inventory):
    with pytest.raises(BulwarkError) as caught:
        checked(two_site_inventory.write(), limit=("nj", "nj-gww"))
    assert one_line(caught.value) == (
        "--limit 'nj-gww': no host or group of the inventory (did you mean 'nj-gw'?)"
    )


def test_limits_by_host_glob_and_group_pass(two_site_inventory):
    checked(two_site_inventory.write(), limit=("nj-gw", "sea-*", "nj", "inventory"))


# --- pyinfra itself: stopped before it connects ----------------------------------------------


@pytest.fixture
def pyinfra_inventory(two_site_inventory) -> object:
    """The two-site inventory beside the repository's group_data/all.py (which arms bulwark's
    check), every host pointed at a closed loopback port."""
    group_data = two_site_inventory.directory / "group_data"
    group_data.mkdir()
    (group_data / "all.py").symlink_to(REPO / "inventory" / "group_data" / "all.py")
    for field, value in LOOPBACK.items():
        set_platform(field, value)(two_site_inventory)
    return two_site_inventory


def _pyinfra(inventory: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PYINFRA), inventory.name, *args],
        cwd=inventory.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def assert_stopped_before_connecting(result: subprocess.CompletedProcess) -> str:
    """The run exited 2 without a traceback or a connection; returns its stderr."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Connecting" not in output and "Traceback" not in output
    return result.stderr


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["debug-inventory"], id="debug-inventory"),
        pytest.param(["-y", "exec", "--", "touch", "SHOULD-NOT-EXIST"], id="exec"),
    ],
)
def test_pyinfra_stops_before_connecting(pyinfra_inventory, command):
    MANY_MISTAKES(pyinfra_inventory)
    path = pyinfra_inventory.write(check=True)
    result = _pyinfra(path, *command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{len(MANY_MISTAKES_PROBLEMS)} problems, nothing was run" in result.stderr
    for problem in MANY_MISTAKES_PROBLEMS:
        assert f"  {problem}\n" in result.stderr
    assert "Connecting" not in result.stdout + result.stderr
    assert not (path.parent / "SHOULD-NOT-EXIST").exists()


def test_pyinfra_loads_a_sound_guarded_inventory(pyinfra_inventory):
    path = pyinfra_inventory.write(check=True)
    result = _pyinfra(path, "debug-inventory")
    assert result.returncode == 0, result.stderr
    assert "[nj-gw]" in result.stdout + result.stderr
    assert "nothing was run" not in result.stderr


def test_pyinfra_checks_an_inventory_that_never_asks_for_it(pyinfra_inventory, tmp_path):
    """No closing line: group_data/all.py arms the check, and the file is executed once."""
    set_host("nj-web", "lan_address", "10.1.0.400")(pyinfra_inventory)
    path = pyinfra_inventory.write()
    counter = tmp_path / "executions"
    path.write_text(f"open({str(counter)!r}, 'a').write('x')\n" + path.read_text())
    assert "check_before_connecting" not in path.read_text()
    stderr = assert_stopped_before_connecting(_pyinfra(path, "-y", "exec", "--", "true"))
    assert "1 problem, nothing was run" in stderr
    assert "nj-web.lan_address: '10.1.0.400' is not an IPv4 address" in stderr
    assert counter.read_text() == "x"


def test_pyinfra_refuses_an_empty_inventory(pyinfra_inventory):
    path = pyinfra_inventory.directory / "empty.py"
    path.write_text("")
    stderr = assert_stopped_before_connecting(_pyinfra(path, "debug-inventory"))
    assert "platform.hosts: the inventory has no hosts" in stderr


def test_pyinfra_fails_loudly_on_a_limit_that_names_no_host(pyinfra_inventory):
    path = pyinfra_inventory.write()
    result = _pyinfra(path, "--limit", "sea-gateway", "-y", "exec", "--", "true")
    stderr = assert_stopped_before_connecting(result)
    assert "inventory.py: --limit 'sea-gateway': no host or group of the inventory" in stderr


def test_pyinfra_deploy_refuses_a_bad_only_roles_before_connecting(pyinfra_inventory):
    path = pyinfra_inventory.write()
    result = _pyinfra(path, str(DEPLOY), "--dry", "--data", "only_roles=firewall,Vpn")
    stderr = assert_stopped_before_connecting(result)
    assert "inventory.py: only_roles: unknown role(s) Vpn; roles are" in stderr


def test_pyinfra_deploy_refuses_a_missing_vault_key_before_connecting(pyinfra_inventory, tmp_path):
    pyinfra_inventory.set_platform("vault_file", str(tmp_path / "inventory.vault"))
    path = pyinfra_inventory.write()
    env = {name: value for name, value in os.environ.items() if name != "BULWARK_VAULT_KEY"}
    stderr = assert_stopped_before_connecting(_pyinfra(path, str(DEPLOY), "--dry", env=env))
    assert "inventory.py: BULWARK_VAULT_KEY is not set: point it at the vault key file" in stderr
