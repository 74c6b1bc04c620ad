"""bulwark/backup_agent.py against real borg on this machine: a source writing through a real
`borg serve --append-only --restrict-to-repository` (the forced command the backup host's
authorized_keys gives it, reached through BORG_RSH instead of SSH), a backup host pruning,
drilling and rolling back its local repository."""

from __future__ import annotations

import datetime
import fcntl
import json
import shutil
import stat
import threading
from pathlib import Path

import pytest

from bulwark import backup_agent
from bulwark.backup_agent import Failure

pytestmark = pytest.mark.skipif(shutil.which("borg") is None, reason="borg is not installed")

USER = "alice"
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """A data host's tree (mail, dav and files of alice), its configuration writing to a
    repository served append-only, and the backup host's configuration of that repository."""
    data = tmp_path / "data"
    maildir = data / "vmail/example.net/alice/Maildir"
    for folder in ("cur", "new", "tmp"):
        (maildir / folder).mkdir(parents=True)
    (maildir / "cur/1700000000.M1P1.host,S=5:2,S").write_text("one\n")
    (maildir / "new/1700000001.M2P1.host,S=5").write_text("two\n")
    (maildir / "dovecot-uidlist").write_text("3 V1 N3\n")
    book = data / "dav/addressbooks/collection-root/alice@example.net/Default"
    book.mkdir(parents=True)
    (book / ".Radicale.props").write_text("{}")
    (book / "carol.vcf").write_text("BEGIN:VCARD\nEND:VCARD\n")
    (book / ".Radicale.cache").mkdir()
    (book / ".Radicale.cache/item").write_text("cached")
    files = data / "files/alice.example.net/alice.example.net/files"
    files.mkdir(parents=True)
    (files / "report.txt").write_text("report\n")
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    secret.chmod(0o600)
    repository = tmp_path / "repos/nj-mail"
    serve = tmp_path / "serve"
    serve.write_text(
        f"#!/bin/sh\nexec borg serve --append-only --restrict-to-repository {repository}\n"
    )
    serve.chmod(serve.stat().st_mode | stat.S_IXUSR)
    accounts = {
        USER: {
            "mail": [str(data / "vmail/example.net/alice")],
            "dav": [str(data / "dav/addressbooks/collection-root/alice@example.net")],
            "files": [str(data / "files/alice.example.net")],
        }
    }
    client = {
        "name": "nj-mail",
        "repository": f"ssh://backup@backup-host{repository}",
        "paths": [str(data)],
        "passphrase_file": str(secret),
        "rsh": str(serve),
        "base_dir": str(tmp_path / "client-state"),
        "accounts": accounts,
        "addresses": {USER: "alice@example.net"},
        "after_restore": {},
    }
    server = {
        "repositories": {
            "nj-mail": {
                "path": str(repository),
                "passphrase_file": str(secret),
                "accounts": accounts,
            }
        },
        "retention_days": 7,
        "stale_hours": 3,
        "state_dir": str(tmp_path / "state"),
        "scratch_dir": str(tmp_path / "drill"),
        "base_dir": str(tmp_path / "server-state"),
    }  # fmt: skip
    return {"data": data, "maildir": maildir, "book": book, "files": files,
            "client": client, "server": server, "repository": repository}  # fmt: skip


def _archives(site: dict) -> list[str]:
    env = backup_agent.borg_env(site["client"]["passphrase_file"], site["server"]["base_dir"])
    return [archive["name"] for archive in backup_agent.archives(str(site["repository"]), env)]


def _segment_bytes(site: dict) -> int:
    return sum(path.stat().st_size for path in site["repository"].glob("data/*/*"))


def test_a_first_run_makes_the_repository_and_an_archive_of_every_path(site):
    result = backup_agent.create(site["client"], NOW)
    assert result["initialised"] is True
    assert result["archive"] == f"nj-mail-{NOW.strftime(backup_agent.TIME_FORMAT)}"
    assert result["files"] >= 6
    again = backup_agent.create(site["client"], NOW + datetime.timedelta(seconds=1))
    assert again["initialised"] is False
    assert again["added_bytes"] < result["added_bytes"]  # deduplicated: nothing new
    assert len(_archives(site)) == 2


def test_the_repository_is_encrypted_with_the_passphrase(site):
    backup_agent.create(site["client"], NOW)
    config = (site["repository"] / "config").read_text()
    assert "key = " in config  # repokey: the key is in the repository, sealed by the passphrase
    wrong = site["client"] | {"passphrase_file": str(site["files"] / "report.txt")}
    with pytest.raises(Failure, match="borg list failed"):
        backup_agent.archives(site["client"]["repository"], backup_agent.client_env(wrong))


def test_restore_brings_back_deleted_items_and_never_replaces_present_ones(site):
    backup_agent.create(site["client"], NOW)
    deleted_message = site["maildir"] / "new/1700000001.M2P1.host,S=5"
    deleted_message.unlink()
    # The other message's flags changed since: it is the same message, and stays as it is.
    flagged = site["maildir"] / "cur/1700000000.M1P1.host,S=5:2,S"
    flagged.rename(site["maildir"] / "cur/1700000000.M1P1.host,S=5:2,RS")
    (site["book"] / "carol.vcf").unlink()
    (site["files"] / "report.txt").write_text("newer\n")
    mail = backup_agent.restore(site["client"], USER, "mail", None)
    assert (mail["copied"], mail["already_present"]) == (1, 1)
    assert deleted_message.read_text() == "two\n"
    assert not (site["maildir"] / "cur/1700000000.M1P1.host,S=5:2,S").exists()
    assert backup_agent.restore(site["client"], USER, "dav", None)["copied"] == 1
    assert (site["book"] / "carol.vcf").exists()
    files = backup_agent.restore(site["client"], USER, "files", None)
    assert (files["copied"], files["already_present"]) == (0, 1)
    assert (site["files"] / "report.txt").read_text() == "newer\n"
    assert not list(site["data"].rglob(f"{backup_agent.SCRATCH_PREFIX}*"))


def test_restore_at_a_time_takes_the_archive_made_then(site):
    backup_agent.create(site["client"], NOW - datetime.timedelta(hours=2))
    (site["files"] / "later.txt").write_text("later\n")
    backup_agent.create(site["client"], NOW)
    shutil.rmtree(site["files"])
    at = (NOW - datetime.timedelta(hours=1)).isoformat()
    result = backup_agent.restore(site["client"], USER, "files", backup_agent.parse_time(at))
    assert result["copied"] == 1
    assert sorted(path.name for path in site["files"].iterdir()) == ["report.txt"]
    with pytest.raises(Failure, match="no archive at or before"):
        backup_agent.restore(site["client"], USER, "files", NOW - datetime.timedelta(days=1))


def test_restore_refuses_an_unknown_account_or_a_kind_the_host_lacks(site):
    with pytest.raises(Failure, match="no account 'mallory'"):
        backup_agent.restore(site["client"], "mallory", "mail", None)
    only_mail = site["client"] | {"accounts": {USER: {"mail": ["/x"]}}}
    with pytest.raises(Failure, match="keeps no files data"):
        backup_agent.restore(only_mail, USER, "files", None)


def test_the_source_cannot_delete_through_its_append_only_key(site):
    """What `borg delete` through the forced command does: marks it deleted in a new
    transaction; the backup host sees an archive vanish, refuses to prune, and rolls back."""
    backup_agent.create(site["client"], NOW - datetime.timedelta(hours=1))
    backup_agent.prune(site["server"], NOW)  # the ledger now knows the archive
    backup_agent.create(site["client"], NOW)
    env = backup_agent.client_env(site["client"])
    backup_agent.borg(["delete", "--force", site["client"]["repository"],
                       *_archives(site)], env)  # fmt: skip
    assert _archives(site) == []
    with pytest.raises(Failure, match="removed by someone else"):
        backup_agent.prune(site["server"], NOW)
    result = backup_agent.rollback(site["server"], "nj-mail")
    assert result["segments_dropped"] > 0
    assert len(result["archives"]) == 1  # the one verified; the later one is lost with the attack
    shutil.rmtree(site["files"])
    backup_agent.forget_repository_state(site["client"])
    assert backup_agent.restore(site["client"], USER, "files", None)["copied"] == 1
    assert backup_agent.prune(site["server"], NOW)["nj-mail"]["state"] == "pruned"


def test_the_source_cannot_delete_the_repository_itself(site):
    backup_agent.create(site["client"], NOW)
    env = backup_agent.client_env(site["client"])
    result = backup_agent.borg(["delete", "--force", "--force", site["client"]["repository"]],
                               env, check=False)  # fmt: skip
    assert result.returncode != 0 or (site["repository"] / "config").exists()
    assert (site["repository"] / "config").exists()


def test_prune_keeps_seven_days_then_deleted_data_is_gone_after_compaction(site):
    made = NOW - datetime.timedelta(days=1)
    backup_agent.create(site["client"], made)
    (site["files"] / "report.txt").unlink()
    backup_agent.create(site["client"], made + datetime.timedelta(hours=1))
    inside = backup_agent.prune(site["server"], made + datetime.timedelta(days=6))
    assert inside["nj-mail"]["deleted"] == []
    before = _segment_bytes(site)
    after = backup_agent.prune(site["server"], made + datetime.timedelta(days=7, minutes=1))
    assert after["nj-mail"]["deleted"] == [f"nj-mail-{made.strftime(backup_agent.TIME_FORMAT)}"]
    assert len(_archives(site)) == 1  # the newest is always kept
    with pytest.raises(Failure, match="no archive"):
        backup_agent.restore(site["client"], USER, "files", made + datetime.timedelta(minutes=1))
    assert _segment_bytes(site) < before  # compacted: the deleted archive's data left the disk


def test_the_drill_counts_every_account_and_fails_on_a_corrupted_repository(site):
    backup_agent.create(site["client"], NOW)
    report = backup_agent.drill(site["server"], NOW)["nj-mail"]
    assert report["counts"] == {USER: {"dav": 1, "files": 1, "mail": 2}}
    segment = max(site["repository"].glob("data/*/*"), key=lambda path: path.stat().st_size)
    raw = bytearray(segment.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    segment.write_bytes(bytes(raw))
    with pytest.raises(Failure, match="nj-mail: borg check failed"):
        backup_agent.drill(site["server"], NOW)


def test_the_drill_fails_when_the_newest_archive_is_stale(site):
    backup_agent.create(site["client"], NOW - datetime.timedelta(hours=5))
    with pytest.raises(Failure, match="hours old"):
        backup_agent.drill(site["server"], NOW)


def test_the_command_line_prints_json_and_exits_1_with_the_reason(site, tmp_path, capsys):
    config = tmp_path / "client.json"
    config.write_text(json.dumps(site["client"]))
    assert backup_agent.main(["--config", str(config), "create"]) == 0
    assert json.loads(capsys.readouterr().out)["initialised"] is True
    code = backup_agent.main(["--config", str(config), "restore", "--account", "x",
                              "--kind", "mail"])  # fmt: skip
    assert code == 1
    assert "restore: no account 'x' on this host" in capsys.readouterr().err


def test_secrets_stay_out_of_argv_and_the_environment(site):
    env = backup_agent.client_env(site["client"])
    assert "correct horse" not in json.dumps(env)
    assert env["BORG_PASSCOMMAND"] == f"cat {site['client']['passphrase_file']}"


def test_purge_removes_one_accounts_data_from_every_archive_and_nothing_else(site):
    backup_agent.create(site["client"], NOW - datetime.timedelta(hours=1))
    backup_agent.create(site["client"], NOW)
    other = site["data"] / "files/bob.example.net"
    other.mkdir()
    (other / "kept.txt").write_text("bob's\n")
    backup_agent.create(site["client"], NOW + datetime.timedelta(minutes=1))
    report = backup_agent.purge(site["server"], USER)
    assert report["nj-mail"]["archives"] == 3
    drilled = backup_agent.drill(site["server"], NOW + datetime.timedelta(minutes=2))
    assert drilled["nj-mail"]["counts"] == {USER: {"dav": 0, "files": 0, "mail": 0}}
    env = backup_agent.client_env(site["client"])
    newest = _archives(site)[-1]
    listed = backup_agent.borg(["list", "--short", f"{site['client']['repository']}::{newest}"],
                               env).stdout  # fmt: skip
    assert "bob.example.net/kept.txt" in listed
    assert "alice" not in listed
    assert backup_agent.purge(site["server"], "mallory") == {}


def test_the_prune_takes_a_closed_account_out_of_every_archive_from_its_purge_day(site):
    backup_agent.create(site["client"], NOW - datetime.timedelta(hours=1))
    purge_day = (NOW + datetime.timedelta(days=1)).date().isoformat()
    server = site["server"] | {"closed": {USER: purge_day}, "stale_hours": 48}
    before = backup_agent.prune(server, NOW)["nj-mail"]
    assert before["closed_accounts_purged"] == []  # the day before: untouched
    assert backup_agent.drill(server, NOW)["nj-mail"]["counts"][USER]["mail"] == 2
    day = NOW + datetime.timedelta(days=1, minutes=1)
    assert backup_agent.prune(server, day)["nj-mail"]["closed_accounts_purged"] == [USER]
    assert backup_agent.drill(server, day)["nj-mail"]["counts"][USER] == {
        "dav": 0, "files": 0, "mail": 0,
    }  # fmt: skip
    assert backup_agent.prune(server, day)["nj-mail"]["closed_accounts_purged"] == []
    # The source's own purge has not run yet: its next archive holds the data again, and the
    # next prune takes it out of that one.
    backup_agent.create(site["client"], day)
    assert backup_agent.prune(server, day)["nj-mail"]["closed_accounts_purged"] == [USER]
    assert backup_agent.drill(server, day)["nj-mail"]["counts"][USER]["files"] == 0


def test_a_backup_hosts_commands_run_one_at_a_time(site, tmp_path):
    """A prune waits for another holding the backup host's lock: were they to overlap, one
    would take the other's deletions for someone else's."""
    backup_agent.create(site["client"], NOW)
    config = tmp_path / "server.json"
    config.write_text(json.dumps(site["server"]))
    state = Path(site["server"]["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    finished = threading.Event()
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        worker = threading.Thread(
            target=lambda: (
                finished.set()
                if backup_agent.main(["--config", str(config), "prune"]) == 0
                else None
            )
        )
        worker.start()
        assert not finished.wait(2)  # waiting for the lock
    worker.join(120)
    assert finished.is_set()


def test_a_backup_waits_for_a_repository_not_reachable_yet(site, tmp_path):
    """The first backup may start before the tunnel or the backup sshd is up: it tries again."""
    flaky = tmp_path / "flaky"
    tried = tmp_path / "tried"
    flaky.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e {tried} ]; then touch {tried}; echo "Connection refused" >&2; exit 255; fi\n'
        f'exec {site["client"]["rsh"]} "$@"\n'
    )
    flaky.chmod(0o755)
    config = site["client"] | {"rsh": str(flaky), "retry_seconds": [0]}
    assert backup_agent.create(config, NOW)["initialised"] is True
    assert tried.exists()
    never = site["client"] | {"rsh": "false", "retry_seconds": [0, 0]}
    with pytest.raises(Failure, match="cannot reach the repository"):
        backup_agent.create(never, NOW)
