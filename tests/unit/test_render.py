"""`bulwark render`: the audit tree, its manifest, its determinism, the checkers and the secrets.

Role-specific content (what base's files say) is tested in test_base_role.py; this file tests
the machinery every role goes through.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from click.testing import CliRunner, Result

from bulwark import registry
from bulwark.audit import SealedSecret, SealedSecrets
from bulwark.checks import CHECKERS, CheckResult, check_files
from bulwark.cli import main
from bulwark.errors import BulwarkError
from bulwark.inventory import load_topology
from bulwark.render import (
    DNS_ZONE,
    FACTS,
    MANIFEST,
    PORTS_REPORT,
    REPORT,
    REPORT_HTML,
    RenderedFile,
    render_host_configs,
    write_audit_tree,
)
from bulwark.secret import Secret
from bulwark.templating import environment

REPO = Path(__file__).resolve().parents[2]
REPORTS = (PORTS_REPORT, REPORT, REPORT_HTML, DNS_ZONE, FACTS)
PRODUCTION = REPO / "inventory" / "production.py"
LAB = REPO / "inventory" / "lab.py"
BULWARK = Path(sys.executable).with_name("bulwark")
PRODUCTION_HOSTS = [
    f"{site}-{kind}" for site in ("nj", "sea") for kind in ("backup", "gw", "mx", "store", "web")
]
LAB_HOSTS = [f"{site}-{kind}" for site in ("nj", "sea") for kind in ("backup", "gw", "mail", "web")]


def tree(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: relative path -> (content, permission bits)."""
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def no_vault_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render as an auditor without the vault key, whatever the developer's shell has set."""
    monkeypatch.delenv("BULWARK_VAULT_KEY", raising=False)


def render_cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["render", *args], catch_exceptions=False)


# --- the audit tree and its manifest ----------------------------------------------------------


@pytest.mark.parametrize("inventory", ["production", "lab"])
def test_write_audit_tree_twice_is_byte_identical(rendered_inventories, tmp_path, inventory):
    files = rendered_inventories[inventory]
    first = write_audit_tree(files, tmp_path / "first")
    second = write_audit_tree(list(reversed(files)), tmp_path / "second")
    assert first == second
    assert tree(tmp_path / "first") == tree(tmp_path / "second")
    assert (tmp_path / "first" / MANIFEST).read_bytes() == (
        tmp_path / "second" / MANIFEST
    ).read_bytes()


def test_manifest_lists_every_file_with_mode_owner_and_hash(rendered_inventories, tmp_path):
    files = rendered_inventories["production"]
    out = tmp_path / "audit"
    write_audit_tree(files, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == 1
    assert list(manifest["hosts"]) == PRODUCTION_HOSTS
    assert sum(len(entries) for entries in manifest["hosts"].values()) == len(files)
    for host, entries in manifest["hosts"].items():
        assert [entry["path"] for entry in entries] == sorted(entry["path"] for entry in entries)
        for entry in entries:
            assert set(entry) == {"path", "role", "mode", "owner", "sha256"}
            written = out / host / entry["path"].lstrip("/")
            assert hashlib.sha256(written.read_bytes()).hexdigest() == entry["sha256"]
            assert re.fullmatch(r"[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*", entry["owner"])
            assert len(entry["mode"]) == 4
            int(entry["mode"], 8)


def test_private_files_stay_private_in_the_tree(rendered_inventories, tmp_path):
    out = tmp_path / "audit"
    write_audit_tree(rendered_inventories["production"], out)
    for rendered in rendered_inventories["production"]:
        written = out / rendered.host / rendered.path.lstrip("/")
        expected = 0o600 if int(rendered.mode, 8) & 0o077 == 0 else 0o644
        assert written.stat().st_mode & 0o777 == expected, rendered.path
    sshd = out / "nj-gw" / "etc/ssh/sshd_config.d/10-bulwark.conf"
    assert sshd.stat().st_mode & 0o777 == 0o600


def _files_by_inode(out: Path) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            names.setdefault(path.stat().st_ino, []).append(str(path.relative_to(out)))
    return names


def test_identical_files_are_written_once_and_linked(rendered_inventories, tmp_path):
    """Each (content, mode) is one file however many hosts hold it; nothing else shares one."""
    files = rendered_inventories["production"]
    out = tmp_path / "audit"
    write_audit_tree(files, out)
    expected = {
        f"{rendered.host}/{rendered.path.lstrip('/')}": (
            rendered.sha256,
            int(rendered.mode, 8) & 0o077 == 0,
        )
        for rendered in files
    }
    by_inode = _files_by_inode(out)
    linked = [names for names in by_inode.values() if len(names) > 1]
    assert linked, "no two hosts share a file"
    for names in by_inode.values():
        assert len({expected.get(name) for name in names}) == 1, names
    assert len(by_inode) == len(set(expected.values())) + 1  # + manifest.json


def test_a_file_the_file_system_will_not_link_is_written(
    rendered_inventories, tmp_path, monkeypatch
):
    """Too many links (ext4 stops at 65,000) or none at all: a copy of its own, same tree."""
    files = rendered_inventories["production"]
    write_audit_tree(files, tmp_path / "linked")

    def refuse(source: str, target: str) -> None:
        raise OSError(errno.EMLINK, os.strerror(errno.EMLINK), source)

    monkeypatch.setattr(os, "link", refuse)
    write_audit_tree(files, tmp_path / "copied")
    assert tree(tmp_path / "copied") == tree(tmp_path / "linked")
    assert all(len(names) == 1 for names in _files_by_inode(tmp_path / "copied").values())


def test_write_audit_tree_refuses_a_directory_that_is_not_a_render(tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(BulwarkError, match="not empty and not a previous bulwark render; refusing"):
        write_audit_tree([], out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_write_audit_tree_refuses_a_file(tmp_path):
    out = tmp_path / "audit"
    out.write_text("a file")
    with pytest.raises(BulwarkError, match="exists and is not a directory"):
        write_audit_tree([], out)
    assert out.read_text() == "a file"


def test_write_audit_tree_accepts_an_empty_directory(rendered_inventories, tmp_path):
    out = tmp_path / "audit"
    out.mkdir()
    write_audit_tree(rendered_inventories["lab"], out)
    assert sorted(path.name for path in out.iterdir()) == sorted([*LAB_HOSTS, MANIFEST])


def test_a_previous_render_is_replaced_and_stale_files_removed(rendered_inventories, tmp_path):
    out = tmp_path / "audit"
    write_audit_tree(rendered_inventories["production"], out)
    (out / "nj-gw" / "etc" / "stale.conf").write_text("from an older bulwark")
    write_audit_tree(rendered_inventories["lab"], out)
    assert sorted(path.name for path in out.iterdir()) == sorted([*LAB_HOSTS, MANIFEST])
    assert not (out / "nj-gw" / "etc" / "stale.conf").exists()
    assert not (out / "nj-mx").exists()  # a production-only host
    assert list(json.loads((out / MANIFEST).read_text())["hosts"]) == LAB_HOSTS


def test_a_rerender_keeps_unchanged_host_trees_and_rewrites_the_others(
    rendered_inventories, tmp_path
):
    """An unchanged host's tree is moved whole from the previous render; a host whose tree
    differs in any way (a file added, changed, missing, of another mode or kind, an extra
    directory) is written anew. Files are replaced, not changed in place: they are links."""
    files = rendered_inventories["production"]
    out = tmp_path / "audit"
    write_audit_tree(files, out)
    fresh = tree(out)
    before = {host: (out / host).stat().st_ino for host in PRODUCTION_HOSTS}

    def replace(path: Path, content: bytes, mode: int) -> None:
        path.unlink()
        path.write_bytes(content)
        path.chmod(mode)

    (out / "nj-gw/etc/stale.conf").write_text("left by an older render\n")
    logrotate = out / "nj-mx/etc/logrotate.conf"
    replace(logrotate, logrotate.read_bytes() + b"# edited\n", 0o644)
    (out / "nj-store/etc/logrotate.conf").unlink()
    sshd = out / "sea-mx/etc/ssh/sshd_config.d/10-bulwark.conf"
    replace(sshd, sshd.read_bytes(), 0o644)
    (out / "sea-web/etc/empty").mkdir()
    nginx = out / "nj-web/etc/nginx/nginx.conf"
    nginx.rename(tmp_path / "nginx.conf")
    nginx.symlink_to(tmp_path / "nginx.conf")
    (out / "sea-gw").rename(tmp_path / "sea-gw")
    (out / "sea-gw").symlink_to(tmp_path / "sea-gw")  # the same files, through a link
    changed = {"nj-gw", "nj-mx", "nj-store", "sea-mx", "sea-web", "nj-web", "sea-gw"}

    write_audit_tree(files, out)
    assert tree(out) == fresh
    assert not (out / "sea-web/etc/empty").exists()
    assert not nginx.is_symlink()
    assert not (out / "sea-gw").is_symlink()
    kept = {host for host in PRODUCTION_HOSTS if (out / host).stat().st_ino == before[host]}
    assert kept == set(PRODUCTION_HOSTS) - changed


def test_a_foreign_manifest_json_does_not_make_a_directory_a_render(tmp_path):
    """manifest.json is a common name (web app manifests, extensions): only a bulwark
    manifest may let the renderer delete a directory."""
    out = tmp_path / "webapp"
    out.mkdir()
    (out / MANIFEST).write_text('{"name": "my web app", "start_url": "/"}\n')
    (out / "index.html").write_text("<h1>keep me</h1>")
    with pytest.raises(BulwarkError, match="refusing"):
        write_audit_tree([], out)
    assert (out / "index.html").read_text() == "<h1>keep me</h1>"


def test_two_roles_writing_one_path_is_an_error(monkeypatch):
    topology = load_topology(PRODUCTION)
    base = registry.role_module("base")
    monkeypatch.setattr(registry, "host_modules", lambda host: (base, base))
    with pytest.raises(BulwarkError, match=r"nj-gw: more than one role writes .*10-bulwark.conf"):
        render_host_configs(topology, topology.host("nj-gw"), SealedSecrets())


# --- the command line -------------------------------------------------------------------------


def test_cli_render_production(tmp_path, no_vault_key):
    out = tmp_path / "audit"
    result = render_cli(str(PRODUCTION), "--out", str(out))
    assert result.exit_code == 0, result.output
    files = sum(
        len(entries) for entries in json.loads((out / MANIFEST).read_text())["hosts"].values()
    )
    assert f"rendered {files} files for 10 hosts into {out}" in result.stdout
    assert "0 failed" in result.stdout
    assert list(json.loads((out / MANIFEST).read_text())["hosts"]) == PRODUCTION_HOSTS
    assert "secrets render as <secret:NAME sha256:sealed>" in result.stderr
    first = tree(out)
    (out / "nj-gw" / "stale.conf").write_text("left by an older render")
    again = render_cli(str(PRODUCTION), "--out", str(out))
    assert again.exit_code == 0, again.output
    assert tree(out) == first


@pytest.mark.parametrize(
    ("inventory", "failing_host"),
    [(PRODUCTION, 3), (LAB, 5)],
    ids=["another-inventory", "the-same-inventory"],
)
def test_cli_render_that_fails_leaves_the_previous_render_as_it_was(
    tmp_path, monkeypatch, no_vault_key, inventory, failing_host
):
    """Re-rendering the same inventory, the first hosts' trees, unchanged, were moved into the
    new render before it failed: the previous render gets them back."""
    out = tmp_path / "audit"
    assert render_cli(str(LAB), "--out", str(out), "--no-check").exit_code == 0
    previous = tree(out)
    trees = {host: (out / host).stat().st_ino for host in LAB_HOSTS}
    rendered = []

    def fail_on_one_host(topology, host, secrets):
        if len(rendered) == failing_host - 1:
            raise jinja2.UndefinedError("'missing' is undefined")
        rendered.append(host.name)
        return render_host_configs(topology, host, secrets)

    monkeypatch.setattr("bulwark.cli.render.render_host_configs", fail_on_one_host)
    result = CliRunner().invoke(main, ["render", str(inventory), "--out", str(out)])
    assert result.exit_code != 0
    assert tree(out) == previous
    assert {host: (out / host).stat().st_ino for host in LAB_HOSTS} == trees
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audit"]


def test_cli_render_as_a_subprocess_is_identical_from_run_to_run(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "BULWARK_VAULT_KEY"}
    trees = []
    for name in ("first", "second"):
        out = tmp_path / name
        result = subprocess.run(
            [str(BULWARK), "render", "inventory/production.py", "--out", str(out)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        trees.append(tree(out))
    first, second = trees
    assert first == second
    assert {path.split("/")[0] for path in first} == {*PRODUCTION_HOSTS, MANIFEST, *REPORTS}


def test_cli_render_refuses_to_clobber(tmp_path, no_vault_key):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["render", str(PRODUCTION), "--out", str(out)])
    assert result.exit_code == 2
    assert "refusing to overwrite it" in result.stderr
    assert "Traceback" not in result.output
    assert [path.name for path in out.iterdir()] == ["precious.txt"]


def test_cli_render_of_an_unsound_inventory_writes_nothing(tmp_path, two_site_inventory):
    two_site_inventory.host("nj-web")["lan_address"] = "10.1.0.400"
    out = tmp_path / "audit"
    result = CliRunner().invoke(
        main, ["render", str(two_site_inventory.write()), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "1 problem, nothing was run" in result.stderr
    assert "nj-web.lan_address: '10.1.0.400' is not an IPv4 address" in result.stderr
    assert not out.exists()


def test_cli_render_exits_1_when_a_checker_rejects_a_file(tmp_path, monkeypatch, no_vault_key):
    def reject_first(files):
        bad, *good = [rendered for rendered in files if rendered.checker]
        return [
            CheckResult(bad.host, bad.path, "sshd", "failed", "line 3: Bad configuration"),
            *(CheckResult(item.host, item.path, "apt-config", "passed") for item in good),
        ]

    monkeypatch.setattr("bulwark.cli.render.check_files", reject_first)
    result = CliRunner().invoke(main, ["render", str(LAB), "--out", str(tmp_path / "audit")])
    assert result.exit_code == 1
    assert "(sshd): line 3: Bad configuration" in result.stderr
    assert "FAILED " in result.stderr
    assert ", 1 failed," in result.stdout


def test_cli_render_without_checks(tmp_path, monkeypatch, no_vault_key):
    monkeypatch.setattr("bulwark.cli.render.check_files", pytest.fail)
    result = render_cli(str(LAB), "--out", str(tmp_path / "audit"), "--no-check")
    assert result.exit_code == 0, result.output
    assert "checks:" not in result.stdout


# --- the daemons' own checkers ----------------------------------------------------------------


def _file(content: str, checker: str, host: str = "nj-gw", path: str = "/etc/x") -> RenderedFile:
    return RenderedFile(host, "base", path, content, "0644", "root", "root", checker)


@pytest.mark.usefixtures("needs_sshd")
def test_a_broken_sshd_config_is_reported_failed():
    [result] = check_files([_file("PermitRootLogin maybe\n", "sshd")])
    assert (result.status, result.tool, result.host, result.path) == (
        "failed",
        "sshd",
        "nj-gw",
        "/etc/x",
    )
    assert "maybe" in result.detail or "PermitRootLogin" in result.detail


@pytest.mark.usefixtures("needs_sshd")
def test_a_sound_sshd_config_passes():
    [result] = check_files([_file("PasswordAuthentication no\n", "sshd")])
    assert (result.status, result.detail) == ("passed", "")


@pytest.mark.usefixtures("needs_apt_config")
def test_a_broken_apt_config_is_reported_failed():
    [result] = check_files([_file('APT::Periodic::Update-Package-Lists "1"\n', "apt")])
    assert result.status == "failed"
    assert result.detail


def test_a_missing_checker_tool_is_skipped_not_passed(monkeypatch):
    monkeypatch.setattr("bulwark.checks.shutil.which", lambda tool: None)
    [result] = check_files([_file("PermitRootLogin maybe\n", "sshd")])
    assert (result.status, result.tool) == ("skipped", "sshd")
    assert result.detail == "sshd not installed"


def test_identical_contents_are_checked_once(monkeypatch):
    seen = []

    def check(content: str, workdir: Path) -> str | None:
        seen.append(content)
        return "bad" if "bad" in content else None

    monkeypatch.setitem(CHECKERS, "sshd", ("sh", check))
    files = [
        _file("good\n", "sshd", host="nj-gw"),
        _file("good\n", "sshd", host="sea-gw"),
        _file("bad\n", "sshd", host="nj-mx"),
        _file("unchecked\n", None),
    ]
    results = check_files(files)
    assert sorted(seen) == ["bad\n", "good\n"]
    assert [(result.host, result.status) for result in results] == [
        ("nj-gw", "passed"),
        ("sea-gw", "passed"),
        ("nj-mx", "failed"),
    ]


def test_files_differing_only_in_their_hosts_name_and_addresses_are_checked_once(monkeypatch):
    """A thousand hosts of a few kinds: the verdict cannot depend on which host's name or
    address a file carries (both validated upstream), so one check stands for all of them;
    any other difference is checked on its own."""
    seen = []

    def check(content: str, workdir: Path) -> str | None:
        seen.append(content)
        return None

    monkeypatch.setitem(CHECKERS, "sshd", ("sh", check))
    files = [
        _file("listen 10.1.0.40:443; server_name nj-web.example.net;\n", "sshd", host="nj-web"),
        _file("listen 10.1.0.41:443; server_name nj-web2.example.net;\n", "sshd", host="nj-web2"),
        _file("listen 10.1.0.42:80; server_name nj-web3.example.net;\n", "sshd", host="nj-web3"),
    ]
    assert [result.status for result in check_files(files)] == ["passed"] * 3
    assert len(seen) == 2  # the third differs in its port, not only in name and address


# --- secrets: placeholders only, in every environment that is not a deploy --------------------


def test_reveal_filter_reveals_when_deploying_and_seals_when_auditing():
    secret = Secret("wireguard/nj-gw/private", "s3cr3t-value")
    deploy = environment(reveal=True).from_string("key={{ key | reveal }}")
    audit = environment(reveal=False).from_string("key={{ key | reveal }}")
    assert deploy.render(key=secret) == "key=s3cr3t-value"
    assert audit.render(key=secret) == f"key={secret.placeholder}"
    assert "s3cr3t" not in audit.render(key=secret)
    assert secret.placeholder.startswith("<secret:wireguard/nj-gw/private sha256:")


@pytest.mark.parametrize("reveal", [True, False], ids=["deploy", "audit"])
def test_a_secret_without_the_filter_renders_as_its_placeholder(reveal):
    secret = Secret("mail/doveadm-password", "hunter2-hunter2")
    text = environment(reveal=reveal).from_string("{{ key }}").render(key=secret)
    assert text == secret.placeholder


@pytest.mark.parametrize("reveal", [True, False], ids=["deploy", "audit"])
@pytest.mark.parametrize("value", ["plain string", 42, None])
def test_reveal_filter_refuses_what_is_not_a_secret(reveal, value):
    template = environment(reveal=reveal).from_string("{{ key | reveal }}")
    with pytest.raises(TypeError, match="the reveal filter takes a Secret"):
        template.render(key=value)


def test_undefined_template_variables_fail_loudly():
    with pytest.raises(jinja2.UndefinedError):
        environment(reveal=False).from_string("{{ missing }}").render()


def test_sealed_secret_has_a_sealed_placeholder_and_cannot_be_revealed():
    sealed = SealedSecrets().get("luks/nj-store/mail")
    assert isinstance(sealed, SealedSecret)
    assert sealed.placeholder == "<secret:luks/nj-store/mail sha256:sealed>"
    audit = environment(reveal=False).from_string("{{ key | reveal }}")
    assert audit.render(key=sealed) == sealed.placeholder
    with pytest.raises(PermissionError, match="luks/nj-store/mail is sealed"):
        environment(reveal=True).from_string("{{ key | reveal }}").render(key=sealed)


# Vault entries that are public by nature and may appear in a render: certificates.
PUBLIC_ENTRY = re.compile(r"^pki/.*/(cert|supplied)$")
PLACEHOLDER = re.compile(r"<secret:([^ >]+) sha256:([0-9a-f]{8}|sealed)>")


@pytest.fixture
def vaulted_inventory(inventory_with_vault) -> tuple[Path, list[str]]:
    """An inventory whose vault (in tmp_path, key in BULWARK_VAULT_KEY) holds every secret it
    needs, made by `generate_secrets` as an operator would (a copy of the session's run, see
    conftest.py), plus one extra. Returns the inventory and every non-public value in the
    vault."""
    inventory, vault = inventory_with_vault
    vault.set("extra/unused-token", "SECRET-unused-token-value")
    vault.save()
    values = [vault.get(name).reveal() for name in vault.names() if not PUBLIC_ENTRY.match(name)]
    return inventory, values


def _assert_no_secret_in(text: str, values: list[str]) -> None:
    leaked = [value[:12] + "..." for value in values if value in text]
    assert leaked == []
    assert "SECRET-" not in text
    assert "PRIVATE KEY" not in text
    assert re.search(r"\$argon2id\$v=\d+\$m=", text) is None  # no Argon2id hash


def test_render_with_the_vault_shows_no_secret_value(vaulted_inventory, tmp_path):
    inventory, values = vaulted_inventory
    assert len(values) > 10
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, ["render", str(inventory), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "vault not opened" not in result.stderr  # the vault really was used
    _assert_no_secret_in(result.output, values)
    assert set(REPORTS) <= set(tree(out))  # the reports are checked too
    texts = [content.decode() for content, _ in tree(out).values()]
    for text in texts:
        _assert_no_secret_in(text, values)
    # Secrets do reach the templates (the pki role writes every host's key), as placeholders
    # carrying the vault value's digest.
    vault = pytest.importorskip("bulwark.vault").open_vault(load_topology(inventory).vault_file)
    placeholders = {match.groups() for text in texts for match in PLACEHOLDER.finditer(text)}
    assert placeholders
    for name, digest in placeholders:
        assert digest == vault.get(name).digest, name


def test_render_subprocess_with_the_vault_shows_no_secret_value(vaulted_inventory, tmp_path):
    inventory, values = vaulted_inventory
    out = tmp_path / "audit"
    result = subprocess.run(
        [str(BULWARK), "render", inventory.name, "--out", str(out)],
        cwd=inventory.parent,
        env=dict(os.environ),  # BULWARK_VAULT_KEY set by the vault_key_env fixture
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "vault not opened" not in result.stderr
    _assert_no_secret_in(result.stdout + result.stderr, values)
    for content, _ in tree(out).values():
        _assert_no_secret_in(content.decode(), values)


def test_vault_secrets_in_audit_templates_show_name_and_digest_only(vaulted_inventory):
    vault_module = pytest.importorskip("bulwark.vault")
    inventory, values = vaulted_inventory
    vault = vault_module.open_vault(load_topology(inventory).vault_file)
    name = vault.names()[0]
    text = environment(reveal=False).from_string("{{ key | reveal }}").render(key=vault.get(name))
    assert text.startswith(f"<secret:{name} sha256:")
    assert text != f"<secret:{name} sha256:sealed>"  # the digest shows when a secret changes
    _assert_no_secret_in(text, values)
