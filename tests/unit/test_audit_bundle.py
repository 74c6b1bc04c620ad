"""The signed audit bundle: `render --sign`, `bulwark audit verify` and `bulwark audit diff`.

Real ssh-keygen throughout (the Makefile installs OpenSSH): throwaway ed25519 keys in tmp_path,
signatures checked by bulwark and by ssh-keygen alone, as an auditor without bulwark would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bulwark import catalogue
from bulwark.bundle import NAMESPACE, complete_manifest, signature_key, verify_bundle
from bulwark.cli import main
from bulwark.errors import BulwarkError
from bulwark.render import (
    ALLOWED_SIGNERS,
    DNS_ZONE,
    FACTS,
    MANIFEST,
    PORTS_REPORT,
    REPORT,
    REPORT_HTML,
    SIGNATURE,
    check_output_dir,
)

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "inventory" / "production.py"
OPERATOR = "operator@example.com"
NGINX = "nj-web/etc/nginx/nginx.conf"
UNLOCK = "correct horse"  # a throwaway key's passphrase


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def make_key(directory: Path, name: str = "operator", comment: str = OPERATOR, **kw) -> Path:
    """A fresh ed25519 key pair `directory/name` (+ .pub), as ssh-keygen makes it."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed (make test installs openssh-client)")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    passphrase = kw.get("passphrase", "")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def fingerprint(key: Path) -> str:
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()[1]


def allowed_signers_for(key: Path, path: Path, principal: str = OPERATOR) -> Path:
    """An auditor's own allowed_signers, holding the operator's public key."""
    public = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    path.write_text(f'{principal} namespaces="{NAMESPACE}" {public}\n')
    return path


def tree(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def flip_byte(path: Path, offset: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signed_production(tmp_path_factory: pytest.TempPathFactory, operator_key: Path) -> Path:
    """inventory/production.py rendered and signed once for the module (copy it to change it)."""
    out = tmp_path_factory.mktemp("signed") / "audit"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BULWARK_VAULT_KEY", raising=False)
        patch.delenv("SSH_AUTH_SOCK", raising=False)
        result = cli("render", str(PRODUCTION), "--out", str(out), "--sign", str(operator_key),
                     "--no-check")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def bundle(signed_production: Path, tmp_path: Path) -> Path:
    """This test's own copy of the signed production bundle."""
    copy = tmp_path / "bundle"
    shutil.copytree(signed_production, copy)
    return copy


@pytest.fixture(autouse=True)
def _auditor_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BULWARK_VAULT_KEY", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


# --- render --sign ----------------------------------------------------------------------------


def test_render_twice_and_sign_is_identical_and_verifies(signed_production, operator_key, tmp_path):
    again = tmp_path / "again"
    result = cli("render", str(PRODUCTION), "--out", str(again), "--sign", str(operator_key))
    assert result.exit_code == 0, result.output
    assert f"signed {MANIFEST} as {OPERATOR} with ED25519 key {fingerprint(operator_key)}" in (
        result.stdout
    )
    assert tree(again) == tree(signed_production)
    top = {path.name for path in again.iterdir()}
    assert {MANIFEST, SIGNATURE, ALLOWED_SIGNERS, FACTS, PORTS_REPORT, REPORT} <= top

    verified = cli("audit", "verify", str(again))
    assert verified.exit_code == 0, verified.output
    assert f"signature: good, by {OPERATOR} with key {fingerprint(operator_key)}" in (
        verified.stdout
    )
    assert "checked only against the key in the bundle's own allowed_signers" in verified.stdout
    files = len(json.loads((again / MANIFEST).read_text())["files"])
    hosts = sum(
        len(entries) for entries in json.loads((again / MANIFEST).read_text())["hosts"].values()
    )
    assert f"verified: {hosts + files} files match {MANIFEST}" in verified.stdout


def test_the_manifest_lists_every_file_of_the_bundle(bundle):
    manifest = json.loads((bundle / MANIFEST).read_text())
    listed = {f"{host}/{entry['path'].lstrip('/')}": entry["sha256"]
              for host, entries in manifest["hosts"].items() for entry in entries}  # fmt: skip
    listed |= {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    assert [entry["path"] for entry in manifest["files"]] == [
        DNS_ZONE,
        FACTS,
        PORTS_REPORT,
        REPORT_HTML,
        REPORT,
    ]
    on_disk = {path: hashlib.sha256(content).hexdigest() for path, content in tree(bundle).items()}
    for unlisted in (MANIFEST, SIGNATURE, ALLOWED_SIGNERS):
        del on_disk[unlisted]
    assert listed == on_disk


def test_a_file_the_render_adds_is_listed_and_keeps_the_directory_a_render(bundle):
    """Whatever else a render writes beside the trees (an HTML report ...) is hashed in the
    manifest by the last step, and a directory holding it is still a previous render."""
    (bundle / "html").mkdir()
    (bundle / "html" / "index.html").write_text("<h1>report</h1>\n")
    complete_manifest(bundle)
    listed = [entry["path"] for entry in json.loads((bundle / MANIFEST).read_text())["files"]]
    assert listed == [DNS_ZONE, FACTS, "html/index.html", PORTS_REPORT, REPORT_HTML, REPORT]
    check_output_dir(bundle)  # may be replaced
    assert cli("audit", "verify", str(bundle), "--unsigned-ok").exit_code == 1  # manifest changed
    (bundle / SIGNATURE).unlink()
    assert cli("audit", "verify", str(bundle), "--unsigned-ok").exit_code == 0
    (bundle / "stray.txt").write_text("not ours\n")
    with pytest.raises(BulwarkError, match="not a previous bulwark render"):
        check_output_dir(bundle)


def test_facts_hold_peers_retention_and_tls_without_placeholders(bundle):
    text = (bundle / FACTS).read_text()
    assert "<secret:" not in text
    facts = json.loads(text)
    assert list(facts["hosts"]) == sorted(facts["hosts"])
    gateway = facts["hosts"]["nj-gw"]
    (peer,) = gateway["vpn_peers"]
    assert (peer["interface"], peer["peer"], peer["allowed_ips"]) == (
        "wg0",
        "sea-gw",
        "10.2.0.0/24",
    )
    assert peer["endpoint"] == "198.51.100.10:51820"
    assert "preshared_key" not in peer
    assert gateway["retention"]["/etc/logrotate.conf: rotate"] == "180"
    assert gateway["retention"][
        "/etc/systemd/journald.conf.d/60-bulwark.conf: MaxRetentionSec"
    ] == ("180day")
    assert facts["hosts"]["nj-web"]["vpn_peers"] == []
    assert facts["tls"]["imaps"] == {"ports": "993", "tls": "implicit"}


def test_ssh_keygen_alone_accepts_the_signature(bundle, operator_key, tmp_path):
    """What an auditor without bulwark runs: the bundle's allowed_signers, then their own."""
    for signers in (bundle / ALLOWED_SIGNERS, allowed_signers_for(operator_key, tmp_path / "mine")):
        with (bundle / MANIFEST).open("rb") as manifest:
            checked = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", OPERATOR,
                 "-n", NAMESPACE, "-s", str(bundle / SIGNATURE)],
                stdin=manifest, capture_output=True, text=True, check=False,
            )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert f'Good "{NAMESPACE}" signature for {OPERATOR}' in checked.stdout
    assert signature_key((bundle / SIGNATURE).read_text())[1] == fingerprint(operator_key)
    assert fingerprint(operator_key) in (bundle / ALLOWED_SIGNERS).read_text()


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed")
def test_the_readme_hash_check_without_bulwark(bundle):
    """The README's jq | sha256sum -c line checks every listed file, and notices a change."""
    readme = (REPO / "README.md").read_text()
    (command,) = re.findall(r"^(jq -r .*sha256sum -c.*)$", readme, re.MULTILINE)
    assert subprocess.run(command, shell=True, cwd=bundle, capture_output=True).returncode == 0  # noqa: S602
    flip_byte(bundle / NGINX)
    failed = subprocess.run(command, shell=True, cwd=bundle, capture_output=True, text=True)  # noqa: S602
    assert failed.returncode != 0
    assert f"{NGINX}: FAILED" in failed.stdout


# --- verify: what a change looks like ---------------------------------------------------------


@pytest.mark.parametrize(
    "path", [NGINX, "sea-gw/etc/wireguard/wg0.conf", PORTS_REPORT, REPORT, REPORT_HTML, FACTS]
)
def test_one_flipped_byte_in_a_file_is_named(bundle, path):
    flip_byte(bundle / path)
    result = cli("audit", "verify", str(bundle))
    assert result.exit_code == 1
    assert f"changed: {path}" in result.stdout.splitlines()
    assert "signature: good" in result.stdout  # the manifest itself is intact
    assert "FAILED: 1 problem in" in result.stderr
    _no_traceback(result)


def test_a_flipped_byte_in_any_file_is_named(bundle):
    """Every file of the bundle, one at a time (the hashes only: the signature is the same
    for all, and tested above)."""
    (bundle / SIGNATURE).unlink()
    paths = [path for path in tree(bundle) if path not in (MANIFEST, ALLOWED_SIGNERS)]
    assert len(paths) > 200
    for path in paths:
        original = (bundle / path).read_bytes()
        flip_byte(bundle / path, len(original) // 2)
        assert verify_bundle(bundle, unsigned_ok=True).problems == [f"changed: {path}"], path
        (bundle / path).write_bytes(original)
    assert verify_bundle(bundle, unsigned_ok=True).problems == []


def test_a_flipped_byte_in_a_linked_file_names_every_link(signed_production, tmp_path):
    """The render writes each content once and hard-links its copies (bulwark.render.write_files):
    changing one changes them all, and verify names every one and says why. An auditor's copy
    that does not keep links (shutil.copytree, the `bundle` fixture) names only the file."""
    links: dict[int, list[str]] = {}
    for path in tree(signed_production):
        links.setdefault((signed_production / path).stat().st_ino, []).append(path)
    shared = sorted(max(links.values(), key=len))
    # The same apt settings on every host, linked within each process's share of the hosts
    # (bulwark.render.host_trees_written_aside): a quarter of ten hosts.
    assert len(shared) == 2
    copied = tmp_path / "copied"
    shutil.copytree(signed_production, copied)
    linked = tmp_path / "linked"
    subprocess.run(["cp", "-a", str(signed_production), str(linked)], check=True)
    for bundle in (copied, linked):
        flip_byte(bundle / shared[-1])
    result = cli("audit", "verify", str(linked))
    assert result.exit_code == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("changed: ")] == [
        f"changed: {path}" for path in shared
    ]
    assert (
        f"{shared[0]} and {len(shared) - 1} more of the changed files are one file (hard links): "
        "bulwark render writes each content once and links its copies" in result.stdout
    )
    assert f"FAILED: {len(shared)} problems in" in result.stderr
    assert verify_bundle(copied).problems == [f"changed: {shared[-1]}"]


@pytest.mark.parametrize("offset", [200, 0], ids=["in-a-value", "breaking-json"])
def test_one_flipped_byte_in_the_manifest_fails_the_signature(bundle, offset):
    flip_byte(bundle / MANIFEST, offset)
    result = cli("audit", "verify", str(bundle))
    assert result.exit_code == 1
    (signature,) = [line for line in result.stdout.splitlines() if line.startswith("signature:")]
    assert f"{MANIFEST} does not match {SIGNATURE}" in signature
    _no_traceback(result)


def test_a_flipped_byte_in_the_signature_fails_it(bundle):
    signature = bundle / SIGNATURE
    text = signature.read_text()
    # A base64 character deep in the signature's bytes (the last line is the armor's end).
    line = text.splitlines()[3]
    swapped = line[:10] + ("A" if line[10] != "A" else "B") + line[11:]
    signature.write_text(text.replace(line, swapped))
    result = cli("audit", "verify", str(bundle))
    assert result.exit_code == 1
    assert "signature:" in result.stdout
    assert "signature: good" not in result.stdout


def test_added_and_missing_files_are_named(bundle):
    (bundle / "nj-gw" / "etc" / "extra.conf").write_text("not rendered by bulwark\n")
    (bundle / "notes.txt").write_text("an auditor's note\n")
    (bundle / "sea-gw" / "etc" / "logrotate.conf").unlink()
    (bundle / REPORT).unlink()
    result = cli("audit", "verify", str(bundle))
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if ": " in line][2:]
    assert problems == [
        "added: nj-gw/etc/extra.conf",
        "added: notes.txt",
        f"missing: {REPORT}",
        "missing: sea-gw/etc/logrotate.conf",
    ]
    assert "FAILED: 4 problems" in result.stderr


def test_a_symbolic_link_in_place_of_a_file_is_a_change(bundle):
    target = bundle / NGINX
    saved = bundle.parent / "nginx.conf"
    target.rename(saved)
    target.symlink_to(saved)  # same content, but not the bundle's own file
    result = cli("audit", "verify", str(bundle))
    assert result.exit_code == 1
    assert f"changed: {NGINX} (a symlink, not a regular file)" in result.stdout


# --- verify: whose key ------------------------------------------------------------------------


def test_verify_with_the_auditors_own_allowed_signers(bundle, operator_key, tmp_path):
    mine = allowed_signers_for(operator_key, tmp_path / "allowed_signers")
    result = cli("audit", "verify", str(bundle), "--allowed-signers", str(mine))
    assert result.exit_code == 0, result.output
    assert f"the key is {OPERATOR}'s in {mine}" in result.stdout
    assert "checked only against the key in the bundle" not in result.stdout
    wrong = cli("audit", "verify", str(bundle), "--allowed-signers", str(mine), "--signer", "eve")
    assert wrong.exit_code == 1
    assert "signature:" in wrong.stdout


def test_a_bundle_re_signed_by_another_key_fails_against_the_operators_key(
    bundle, operator_key, tmp_path
):
    """An attacker changes a file, fixes the manifest and signs with their own key, shipping
    their allowed_signers: the bundle's own check passes but shows their fingerprint; the
    auditor's allowed_signers rejects it."""
    attacker = make_key(tmp_path / "attacker", "attacker", OPERATOR)
    (bundle / NGINX).write_text("# nothing to see here\n")
    manifest = json.loads((bundle / MANIFEST).read_text())
    for entry in manifest["hosts"]["nj-web"]:
        if entry["path"] == "/etc/nginx/nginx.conf":
            entry["sha256"] = hashlib.sha256((bundle / NGINX).read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (bundle / SIGNATURE).unlink()
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(attacker), "-n", NAMESPACE, str(bundle / MANIFEST)],
        check=True, capture_output=True,
    )  # fmt: skip
    allowed_signers_for(attacker, bundle / ALLOWED_SIGNERS)

    own = cli("audit", "verify", str(bundle))
    assert own.exit_code == 0
    assert fingerprint(attacker) in own.stdout
    assert fingerprint(operator_key) not in own.stdout
    assert f"compare its fingerprint {fingerprint(attacker)} with the operator's" in own.stdout

    mine = allowed_signers_for(operator_key, tmp_path / "allowed_signers")
    checked = cli("audit", "verify", str(bundle), "--allowed-signers", str(mine))
    assert checked.exit_code == 1
    assert f"signature: the key {fingerprint(attacker)} is not in {mine}" in checked.stdout


def test_an_unsigned_bundle_fails_unless_allowed(tmp_path):
    out = tmp_path / "audit"
    assert cli("render", str(PRODUCTION), "--out", str(out), "--no-check").exit_code == 0
    assert not (out / SIGNATURE).exists()
    assert not (out / ALLOWED_SIGNERS).exists()
    result = cli("audit", "verify", str(out))
    assert result.exit_code == 1
    assert f"signature: not signed (no {SIGNATURE})" in result.stdout
    allowed = cli("audit", "verify", str(out), "--unsigned-ok")
    assert allowed.exit_code == 0, allowed.output
    assert "not signed" in allowed.stdout
    flip_byte(out / NGINX)
    changed = cli("audit", "verify", str(out), "--unsigned-ok")
    assert changed.exit_code == 1
    assert f"changed: {NGINX}" in changed.stdout


def test_a_signed_render_over_a_previous_one_replaces_it(bundle, tmp_path):
    """A signed bundle is a previous render: rendering over it unsigned leaves no stale
    signature behind."""
    result = cli("render", str(PRODUCTION), "--out", str(bundle), "--no-check")
    assert result.exit_code == 0, result.output
    assert not (bundle / SIGNATURE).exists()
    assert not (bundle / ALLOWED_SIGNERS).exists()


# --- bad input: a message naming the argument, exit 2 -----------------------------------------


def test_verify_refuses_what_is_not_a_bundle(tmp_path):
    (tmp_path / "notes").mkdir()
    result = cli("audit", "verify", str(tmp_path / "notes"))
    assert result.exit_code == 2
    assert f"DIR {tmp_path / 'notes'}: not a bulwark bundle (no {MANIFEST})" in result.stderr
    missing = cli("audit", "verify", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2
    assert "'DIR'" in missing.stderr
    (tmp_path / "webapp").mkdir()
    (tmp_path / "webapp" / MANIFEST).write_text('{"name": "a web app"}')
    foreign = cli("audit", "verify", str(tmp_path / "webapp"))
    assert foreign.exit_code == 2
    assert "not a bulwark bundle" in foreign.stderr
    for result in (missing, foreign):
        _no_traceback(result)


def _render_refused(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "audit"
    result = cli("render", str(PRODUCTION), "--out", str(out), "--no-check", *args)
    assert result.exit_code == 2, result.output
    _no_traceback(result)
    assert not out.exists()  # checked before anything is rendered
    return result.stderr


def test_render_sign_refuses_a_bad_key_before_rendering(tmp_path, operator_key):
    assert "error: --sign" in _render_refused(tmp_path, "--sign", str(tmp_path / "none"))
    assert "no such file" in _render_refused(tmp_path, "--sign", str(tmp_path / "none"))
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    assert f"--sign {garbage}: not an SSH key" in _render_refused(tmp_path, "--sign", str(garbage))
    loose = make_key(tmp_path / "loose", "loose")
    loose.chmod(0o644)
    assert "chmod 600" in _render_refused(tmp_path, "--sign", str(loose))
    nameless = make_key(tmp_path / "nameless", "nameless", "two words")
    assert "give --signer NAME" in _render_refused(tmp_path, "--sign", str(nameless))
    assert "--signer 'a b'" in _render_refused(
        tmp_path, "--sign", str(operator_key), "--signer", "a b"
    )
    assert "--signer NAME" in _render_refused(tmp_path, "--signer", "alice")
    assert "ssh-agent" in _render_refused(tmp_path, "--sign", f"{operator_key}.pub")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root reads anything")
def test_render_sign_refuses_an_unreadable_key(tmp_path, operator_key):
    locked = tmp_path / "locked"
    shutil.copy(operator_key, locked)
    locked.chmod(0)
    assert "not readable" in _render_refused(tmp_path, "--sign", str(locked))


def test_signer_names_the_principal(tmp_path):
    key = make_key(tmp_path / "keys", comment="")
    out = tmp_path / "audit"
    result = cli("render", str(PRODUCTION), "--out", str(out), "--no-check",
                 "--sign", str(key), "--signer", "alice@example.com")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        (out / ALLOWED_SIGNERS)
        .read_text()
        .splitlines()[-1]
        .startswith(f'alice@example.com namespaces="{NAMESPACE}" ssh-ed25519 ')
    )
    assert cli("audit", "verify", str(out), "--signer", "alice@example.com").exit_code == 0


def test_a_passphrase_key_signs_through_ssh_agent_with_its_public_key(tmp_path, monkeypatch):
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent not installed")
    key = make_key(tmp_path / "keys", passphrase=UNLOCK)
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{UNLOCK}'\n")
    askpass.chmod(0o700)
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket), "SSH_ASKPASS": str(askpass),
               "SSH_ASKPASS_REQUIRE": "force"}  # fmt: skip
        for _ in range(50):
            if socket.exists():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        subprocess.run(["ssh-add", str(key)], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, check=True)  # fmt: skip
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket))
        out = tmp_path / "audit"
        result = cli("render", str(PRODUCTION), "--out", str(out), "--no-check",
                     "--sign", f"{key}.pub")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert cli("audit", "verify", str(out)).exit_code == 0
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_passphrase_key_without_agent_or_terminal_is_a_clear_error(tmp_path):
    key = make_key(tmp_path / "keys", passphrase=UNLOCK)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_ASKPASS")}
    env |= {"PYTHONPATH": str(REPO), "BULWARK_VAULT_KEY": ""}
    out = tmp_path / "audit"
    result = subprocess.run(
        [sys.executable, "-c", "from bulwark.cli import main; main()", "render", str(PRODUCTION),
         "--out", str(out), "--no-check", "--sign", str(key)],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        start_new_session=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: --sign {key}: ssh-keygen could not sign" in result.stderr
    assert "the bundle is written but not signed" in result.stderr
    assert not (out / SIGNATURE).exists()


# --- diff -------------------------------------------------------------------------------------


def _render(inventory: Path, out: Path, *args: str) -> Path:
    result = cli("render", str(inventory), "--out", str(out), "--no-check", *args)
    assert result.exit_code == 0, result.output
    return out


def diff(old: Path, new: Path) -> Result:
    result = cli("audit", "diff", str(old), str(new))
    _no_traceback(result)
    return result


def test_diff_of_identical_bundles_is_empty(signed_production, tmp_path):
    again = _render(PRODUCTION, tmp_path / "again")  # unsigned: signatures are not contents
    result = diff(signed_production, again)
    assert result.exit_code == 0, result.output
    assert result.stdout == "no differences\n"


def test_diff_reports_an_opened_port_first(two_site_inventory, tmp_path, monkeypatch):
    """One more port in the catalogue (for the dav role, so on both web hosts): the first lines
    say which port opened where."""
    inventory = two_site_inventory.write()
    old = _render(inventory, tmp_path / "old")
    metrics = catalogue.Service(
        "metrics", "dav", (9443,), catalogue.Transport.TCP, catalogue.Tls.IMPLICIT,
        catalogue.Exposure.PUBLIC,
    )  # fmt: skip
    monkeypatch.setattr(catalogue, "SERVICES", (*catalogue.SERVICES, metrics))
    new = _render(inventory, tmp_path / "new")
    result = diff(old, new)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "semantic changes: 3",
        "  port opened: nj-web tcp 9443 (metrics; public; sources any; tls implicit)",
        "  port opened: sea-web tcp 9443 (metrics; public; sources any; tls implicit)",
        "  service added: metrics (9443), TLS implicit",
    ]
    assert "changed: nj-web/etc/nftables.conf" in lines
    assert '+\t\ttcp dport 9443 ct state new accept comment "metrics"' in lines
    back = diff(new, old)
    assert back.exit_code == 1
    assert back.stdout.splitlines()[1].startswith("  port closed: nj-web tcp 9443 (metrics;")
    assert diff(old, new).stdout == result.stdout  # deterministic


def test_diff_of_bundles_one_port_apart_names_that_port_first(signed_production, tmp_path):
    """Two bundles that differ by exactly one opened port (NEW edited by hand, as a bundle
    from a newer bulwark might differ)."""
    new = tmp_path / "new"
    shutil.copytree(signed_production, new)
    ports = json.loads((new / PORTS_REPORT).read_text())
    ports.append({**next(row for row in ports if row["host"] == "nj-gw"), "ports": "8443",
                  "service": "ssh-alt"})  # fmt: skip
    (new / PORTS_REPORT).write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n")
    lines = diff(signed_production, new).stdout.splitlines()
    assert lines[:2] == [
        "semantic changes: 1",
        "  port opened: nj-gw tcp 8443 (ssh-alt; management; "
        "sources 10.101.0.0/24, 10.102.0.0/24, 203.0.113.0/28; tls native)",
    ]
    assert lines[2:4] == ["files: 0 added, 0 removed, 1 changed", f"changed: {PORTS_REPORT}"]


def test_diff_summarises_sources_hosts_roles_and_vpn_peers(two_site_inventory, tmp_path):
    old = _render(two_site_inventory.write(), tmp_path / "old")
    two_site_inventory.set_platform("admin_networks", ["203.0.113.0/28", "198.18.7.0/24"])
    two_site_inventory.host("sea-gw")["public_address"] = "198.51.100.11"
    two_site_inventory.remove_host("nj-backup")
    two_site_inventory.remove_host("sea-backup")
    new = _render(two_site_inventory.write("changed.py"), tmp_path / "new")
    lines = diff(old, new).stdout.splitlines()
    semantic = lines[1 : lines.index(next(line for line in lines if line.startswith("files:")))]
    closed = [line.split(" (", 1)[0] for line in semantic if line.startswith("  port closed:")]
    assert sorted(closed) == [
        f"  port closed: {host} tcp {port}"
        for host in ("nj-backup", "sea-backup")
        for port in (22, 2222)
    ]
    assert (
        "  firewall sources changed: nj-gw ssh (tcp 22): "
        "10.101.0.0/24, 10.102.0.0/24, 203.0.113.0/28 -> "
        "10.101.0.0/24, 10.102.0.0/24, 198.18.7.0/24, 203.0.113.0/28"
    ) in semantic
    assert (
        "  VPN peer changed: nj-gw wg0 peer sea-gw: endpoint 198.51.100.10:51820 -> "
        "198.51.100.11:51820"
    ) in semantic
    assert "  host removed: sea-backup (site sea; roles backup)" in semantic
    assert "removed: sea-backup/etc/nftables.conf" in lines


def test_diff_of_retention(tmp_path, signed_production):
    new = tmp_path / "new"
    shutil.copytree(signed_production, new)
    journald = new / "nj-gw/etc/systemd/journald.conf.d/60-bulwark.conf"
    journald.write_text(
        journald.read_text().replace("MaxRetentionSec=180day", "MaxRetentionSec=30day")
    )
    facts = json.loads((new / FACTS).read_text())
    key = "/etc/systemd/journald.conf.d/60-bulwark.conf: MaxRetentionSec"
    assert facts["hosts"]["nj-gw"]["retention"][key] == "180day"
    facts["hosts"]["nj-gw"]["retention"][key] = "30day"
    (new / FACTS).write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    result = diff(signed_production, new)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:2] == [
        "semantic changes: 1",
        f"  retention changed: nj-gw {key}: 180day -> 30day",
    ]
    assert "-MaxRetentionSec=180day" in result.stdout.splitlines()


def test_diff_names_each_volume_added_removed_or_changed(two_site_inventory, tmp_path):
    """From the inventory: a volume moved to another device, a host's volumes no longer
    encrypted; against a format 1 bundle (volume names only) only names are compared."""
    old = _render(two_site_inventory.write(), tmp_path / "old")
    two_site_inventory.host("nj-mail")["volume_devices"]["mail"] = "/dev/disk/by-id/nvme-mail"
    sea_web = two_site_inventory.host("sea-web")
    sea_web["volumes_encrypted"] = False
    del sea_web["volume_devices"]
    new = _render(two_site_inventory.write("changed.py"), tmp_path / "new")
    lines = diff(old, new).stdout.splitlines()
    assert lines[:5] == [
        "semantic changes: 4",
        "  volume changed: nj-mail mail: device /dev/disk/by-id/virtio-mail -> "
        "/dev/disk/by-id/nvme-mail",
        "  volume removed: sea-web dav (/dev/disk/by-id/virtio-dav on /var/lib/bulwark/dav, "
        "aes-xts-plain64 512 bits)",
        "  volume removed: sea-web files (/dev/disk/by-id/virtio-files on "
        "/var/lib/bulwark/files, aes-xts-plain64 512 bits)",
        "  volume removed: sea-web logs (/dev/disk/by-id/virtio-logs on /var/log, "
        "aes-xts-plain64 512 bits)",
    ]
    assert diff(new, old).stdout.splitlines()[2].startswith("  volume added: sea-web dav (")

    facts = json.loads((old / FACTS).read_text())  # as a bulwark before volume details wrote it
    facts["format"] = 1
    for host in facts["hosts"].values():
        host["volumes"] = [found["name"] for found in host["volumes"]]
    (old / FACTS).write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    lines = diff(old, new).stdout.splitlines()
    assert lines[:4] == [
        "semantic changes: 3",
        "  volume removed: sea-web dav",
        "  volume removed: sea-web files",
        "  volume removed: sea-web logs",
    ]


def test_diff_exit_2_for_what_is_not_a_bundle(signed_production, tmp_path):
    result = diff(signed_production, tmp_path)
    assert result.exit_code == 2
    assert f"error: NEW {tmp_path}: not a bulwark bundle (no {MANIFEST})" in result.stderr
    missing = diff(tmp_path / "nowhere", signed_production)
    assert missing.exit_code == 2
    assert "'OLD'" in missing.stderr


# --- secrets: none in the signature files, the facts or the diff -------------------------------

PUBLIC_ENTRY = re.compile(r"^pki/.*/(cert|supplied)$")


def _assert_no_secret_in(text: str, values: list[str]) -> None:
    leaked = [value[:12] + "..." for value in values if value in text]
    assert leaked == []
    assert "PRIVATE KEY" not in text
    assert re.search(r"\$argon2id\$v=\d+\$m=", text) is None


def test_no_secret_in_a_signed_bundle_or_in_the_diff_of_a_rotated_secret(
    inventory_with_vault, tmp_path, operator_key
):
    inventory, vault = inventory_with_vault
    psk = "wireguard/psk/nj-sea"
    old_values = [vault.get(n).reveal() for n in vault.names() if not PUBLIC_ENTRY.match(n)]

    old = tmp_path / "old"
    first = cli("render", str(inventory), "--out", str(old), "--no-check", "--sign",
                str(operator_key))  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "vault not opened" not in first.stderr
    _assert_no_secret_in(first.output, old_values)
    for name in (SIGNATURE, ALLOWED_SIGNERS, FACTS, MANIFEST, PORTS_REPORT, REPORT, REPORT_HTML):
        _assert_no_secret_in((old / name).read_text(), old_values)
    assert "<secret:" not in (old / FACTS).read_text()  # not even a placeholder

    vault.set(psk, "SECRET-rotated-pre-shared-key-value")
    vault.save()
    new = _render(inventory, tmp_path / "new", "--sign", str(operator_key))
    result = diff(old, new)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["semantic changes: 0", "  none"]
    assert lines[lines.index("changed: nj-gw/etc/wireguard/wg0.conf") + 1] == (
        f"  changed digest: {psk}"
    )
    assert f"changed digest: {psk}" in result.stdout
    assert "sha256:" not in result.stdout  # not even the placeholders' digests
    assert "@@" not in result.stdout  # the only change is a digest: no line to show
    _assert_no_secret_in(result.output, [*old_values, "SECRET-rotated-pre-shared-key-value"])
    assert cli("audit", "verify", str(new)).exit_code == 0
