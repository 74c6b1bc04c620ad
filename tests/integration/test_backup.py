"""The backup role in the lab: what only the hosts can show. The backup sshd answers the other
site's data hosts alone and runs nothing but `borg serve --append-only` on each one's own
repository; a source's key cannot remove what it wrote (the backup host's prune notices, and the
operator's rollback brings it back); the prune keeps 7 days, then deleted data is gone; the
drill reads every repository and fails on a corrupted one."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from bulwark import account_data, backup, catalogue
from bulwark.inventory import load_topology
from bulwark.lab import paths
from bulwark.vault import KEY_ENV
from roles import backup as role

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
TOPOLOGY = load_topology(LAB_INVENTORY)
BACKUP_HOSTS = tuple(host.name for host in TOPOLOGY.hosts_with_role("backup"))
PORT = catalogue.service("backup").port
NJ_MAIL = TOPOLOGY.host("nj-mail")
NJ_WEB = TOPOLOGY.host("nj-web")
MAIL_REPOSITORY = backup.repository_of(TOPOLOGY, NJ_MAIL)
WEB_REPOSITORY = backup.repository_of(TOPOLOGY, NJ_WEB)
ALICE = TOPOLOGY.accounts[0]


def _backup_hosts(host) -> None:
    if host.backend.get_hostname() not in BACKUP_HOSTS:
        pytest.skip("not a backup host")


def _agent(config: str, *args: str, user: str | None = None) -> str:
    argv = [role.SCRIPT, "--config", config, *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return shlex.join(argv)


def _source_borg(host, *args: str):
    """borg on a source host with its own key, passphrase and rsh: what an intruder there has."""
    config = json.loads(host.file(role.CLIENT_CONFIG).content_string)
    env = (
        f"BORG_RSH={shlex.quote(config['rsh'])} BORG_BASE_DIR={config['base_dir']} "
        f"BORG_PASSCOMMAND={shlex.quote('cat ' + config['passphrase_file'])}"
    )
    return host.run(f"env {env} borg {shlex.join(args)}")


def _server_borg(lab_host, repository: backup.Repository, *args: str) -> str:
    """borg on the backup host, as the repositories' owner, with the repository's passphrase."""
    passphrase = f"{role.PASSPHRASE_DIR}/{repository.source.name}"
    env = (
        f"BORG_BASE_DIR={role.SERVER_BORG_DIR} BORG_PASSCOMMAND={shlex.quote('cat ' + passphrase)}"
    )
    return lab_host(repository.backup_host.name).check_output(
        f"runuser -u {backup.USER} -- env {env} borg {shlex.join(args)}"
    )


def _archives(lab_host, repository: backup.Repository) -> list[str]:
    return _server_borg(lab_host, repository, "list", "--short", repository.path).split()


def _back_up(lab_host, source) -> None:
    lab_host(source.name).check_output(shlex.join(role.fresh_run(role.CLIENT_UNIT)))


def _prune(lab_host, repository: backup.Repository, now: datetime.datetime | None = None):
    args = ["prune", *(["--now", now.isoformat()] if now else [])]
    return lab_host(repository.backup_host.name).run(
        _agent(role.SERVER_CONFIG, *args, user=backup.USER)
    )


def _bulwark(*argv: str) -> subprocess.CompletedProcess:
    """`bulwark ARGV` as the operator runs it, with the lab's vault key."""
    return subprocess.run(
        [str(REPO / ".venv/bin/bulwark"), *argv],
        cwd=REPO,
        env={**os.environ, KEY_ENV: str(paths.STATE_DIR / "vault.key")},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_backup_sshd_listens_on_the_lan_address_alone(host):
    _backup_hosts(host)
    lan = TOPOLOGY.host(host.backend.get_hostname()).lan_address
    assert host.socket(f"tcp://{lan}:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    assert host.service(role.SSHD_UNIT).is_running
    assert host.file(backup.REPOSITORY_DIR).mode == 0o700
    assert host.file(backup.REPOSITORY_DIR).user == backup.USER


def test_only_the_other_sites_data_hosts_reach_the_backup_sshd(lab_host):
    backup_host = MAIL_REPOSITORY.backup_host
    probe = f"timeout 5 bash -c 'exec 3<>/dev/tcp/{backup_host.lan_address}/{PORT}'"
    assert lab_host("nj-mail").run(probe).rc == 0
    assert lab_host("nj-web").run(probe).rc == 0
    for outsider in ("nj-gw", "sea-mail", "sea-web", "nj-backup"):
        assert lab_host(outsider).run(probe).rc != 0, outsider


def test_a_source_key_runs_no_shell_and_reaches_no_other_repository(lab_host):
    source = lab_host("nj-mail")
    config = json.loads(source.file(role.CLIENT_CONFIG).content_string)
    where = f"{backup.USER}@{MAIL_REPOSITORY.backup_host.lan_address}"
    shell = source.run(f"{config['rsh']} -p {PORT} {where} id </dev/null")
    assert "uid=" not in shell.stdout
    # nj-web's repository, on the host nj-mail's key is good for.
    assert WEB_REPOSITORY.backup_host == MAIL_REPOSITORY.backup_host
    refused = _source_borg(source, "list", WEB_REPOSITORY.url())
    assert refused.rc != 0
    assert "not allowed" in refused.stderr or "restricted" in refused.stderr.lower()


def test_archives_removed_through_a_source_key_stop_the_prune_and_come_back(lab_host):
    _back_up(lab_host, NJ_MAIL)
    assert _prune(lab_host, MAIL_REPOSITORY).rc == 0  # the backup host has seen them all
    before = _archives(lab_host, MAIL_REPOSITORY)
    source = lab_host("nj-mail")
    deleted = _source_borg(source, "delete", "--force", MAIL_REPOSITORY.url(), *before)
    assert deleted.rc == 0, deleted.stderr  # append-only: borg believes it
    assert _archives(lab_host, MAIL_REPOSITORY) == []
    stopped = _prune(lab_host, MAIL_REPOSITORY)
    assert stopped.rc == 1
    assert "removed by someone else" in stopped.stderr
    rollback = _bulwark("backup", "rollback", str(LAB_INVENTORY), "--source", "nj-mail", "--yes")
    assert rollback.returncode == 0, rollback.stderr
    assert _archives(lab_host, MAIL_REPOSITORY) == before
    _back_up(lab_host, NJ_MAIL)  # the source backs up again after forgetting the newer state
    assert len(_archives(lab_host, MAIL_REPOSITORY)) == len(before) + 1


def test_deleted_data_is_restorable_for_seven_days_then_gone_from_the_backups(lab_host):
    web = lab_host("nj-web")
    root = account_data.account_paths(TOPOLOGY, ALICE, "files")[0]
    marker = f"{root}/{TOPOLOGY.files_root(ALICE)}/files/retention-{uuid.uuid4().hex}.txt"
    owner = web.file(root).user
    web.check_output(f"install -o {owner} -g {owner} -m 0640 /dev/null {marker}")
    _back_up(lab_host, NJ_WEB)
    web.check_output(f"rm {marker}")
    _back_up(lab_host, NJ_WEB)
    holding = _archives(lab_host, WEB_REPOSITORY)[-2]
    now = datetime.datetime.now(datetime.UTC)
    inside = _prune(lab_host, WEB_REPOSITORY, now + datetime.timedelta(days=6, hours=23))
    assert inside.rc == 0, inside.stderr
    assert holding in _archives(lab_host, WEB_REPOSITORY)
    after = _prune(lab_host, WEB_REPOSITORY, now + datetime.timedelta(days=7, minutes=5))
    assert after.rc == 0, after.stderr
    left = _archives(lab_host, WEB_REPOSITORY)
    assert holding not in left and len(left) == 1
    paths = _server_borg(
        lab_host, WEB_REPOSITORY, "list", "--short", f"{WEB_REPOSITORY.path}::{left[0]}"
    )
    assert marker.lstrip("/") not in paths
    assert marker.lstrip("/").rsplit("/", 1)[0] in paths  # the directory is there: it is read


def test_the_drill_reads_every_repository_and_fails_on_a_corrupted_one(lab_host):
    for source in (NJ_MAIL, NJ_WEB):
        _back_up(lab_host, source)
    drill = _bulwark("backup", "drill", str(LAB_INVENTORY))
    assert drill.returncode == 0, drill.stderr
    for source in ("nj-mail", "nj-web", "sea-mail", "sea-web"):
        assert f": {source}: {source}-" in drill.stdout
    server = lab_host(MAIL_REPOSITORY.backup_host.name)
    segment = server.check_output(
        f"ls -S {MAIL_REPOSITORY.path}/data/*/* | head -n 1"
    )  # the largest: archive data
    saved = f"/root/{Path(segment).name}.saved"
    server.check_output(f"cp -p {segment} {saved}")
    try:
        server.check_output(
            f"python3 -c \"import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); "
            f"b[len(b) // 2] ^= 0xFF; open(p, 'wb').write(b)\" {segment}"
        )
        failed = _bulwark("backup", "drill", str(LAB_INVENTORY))
        assert failed.returncode == 1
        assert f"{MAIL_REPOSITORY.backup_host.name}: drill FAILED" in failed.stderr
        assert "nj-mail" in failed.stderr
        state = server.check_output(f"systemctl show --property Result {role.DRILL_UNIT}")
        assert state == "Result=exit-code"  # what `bulwark status` reports
    finally:
        server.check_output(f"cp -p {saved} {segment} && rm {saved}")
    # Repaired, the drill passes again (and `bulwark status` says so).
    server.check_output(shlex.join(role.fresh_run(role.DRILL_UNIT)))
    assert server.check_output(f"systemctl show --property Result {role.DRILL_UNIT}") == (
        "Result=success"
    )


def test_export_keys_writes_every_repositorys_paper_key_and_passphrase_once(tmp_path):
    out = tmp_path / "keys.txt"
    exported = _bulwark("backup", "export-keys", str(LAB_INVENTORY), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    text = out.read_text()
    sources = [host.name for host in TOPOLOGY.hosts if backup.repository_of(TOPOLOGY, host)]
    assert text.count("BORG PAPER KEY") == len(sources) == 4
    for source in sources:
        assert (
            f"== {source} -> {backup.repository_of(TOPOLOGY, TOPOLOGY.host(source)).url()}" in text
        )
    assert "passphrase: " in text and "<secret:" not in text
    again = _bulwark("backup", "export-keys", str(LAB_INVENTORY), "--out", str(out))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert out.read_text() == text


def test_purge_takes_one_account_out_of_every_archive(lab_host):
    _back_up(lab_host, NJ_WEB)
    bob = next(account for account in TOPOLOGY.accounts if account.user == "bob")
    refused = _bulwark("backup", "purge", str(LAB_INVENTORY), "--account", "bob")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = _bulwark("backup", "purge", str(LAB_INVENTORY), "--account", "bob", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert f"{WEB_REPOSITORY.backup_host.name}: nj-web: bob's data removed from" in purged.stdout
    tree = account_data.account_paths(TOPOLOGY, bob, "files")[0].lstrip("/")
    for archive in _archives(lab_host, WEB_REPOSITORY):
        listed = f"{WEB_REPOSITORY.path}::{archive}"
        paths = _server_borg(lab_host, WEB_REPOSITORY, "list", "--short", listed)
        assert tree not in paths and "alice" in paths, archive
