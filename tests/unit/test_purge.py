"""bulwark-purge-closed (bulwark/purge.py) on a temporary data tree, as the timer runs it.

- Past the purge day it deletes every path of the closed account, and nothing else; a second
  run changes nothing and says nothing; a link inside is removed, never what it points to.
- Before the day, for an account also listed open, or with a path outside the data roots or
  overlapping an open account's, it deletes nothing of that account and exits 1.
- The shipped script runs with the standard library alone (`python3 -I`), `--now` shifting its
  clock, and reads the list exactly as bulwark.closure renders it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bulwark import closure, purge
from bulwark.inventory import load_topology

REPO = Path(__file__).resolve().parents[2]
CLOSED = "2026-11-30"
PURGE_ON = "2027-01-06"


@dataclasses.dataclass
class Store:
    """A data root holding alice's (open) and carol's (closed) data, and the list naming them."""

    root: Path
    outside: Path

    @property
    def alice(self) -> list[Path]:
        return [self.root / "mail/alice", self.root / "dav/alice@example.net"]

    @property
    def carol(self) -> list[Path]:
        return [self.root / "mail/carol", self.root / "dav/carol@example.net"]

    def listing(self, **changes) -> dict:
        carol = {
            "account": "carol@example.net",
            "closed": CLOSED,
            "purge_on": PURGE_ON,
            "paths": [str(path) for path in self.carol],
        }
        return {
            "roots": [str(self.root)],
            "open": {"alice@example.net": [str(path) for path in self.alice]},
            "closed": [{**carol, **changes}],
        }

    def run(self, today: str, **changes) -> tuple[int, list[str]]:
        lines: list[str] = []
        listed = purge.parse_list(self.listing(**changes))
        status = purge.purge(listed, datetime.date.fromisoformat(today), log=lines.append)
        return status, lines


@pytest.fixture
def store(tmp_path: Path) -> Store:
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    for user in ("alice", "carol"):
        maildir = root / "mail" / user / "Maildir" / "cur"
        maildir.mkdir(parents=True)
        (maildir / "1.eml").write_text(f"Subject: for {user}\n")
        collection = root / "dav" / f"{user}@example.net" / "Default"
        collection.mkdir(parents=True)
        (collection / "card.vcf").write_text("BEGIN:VCARD\n")
    shared = root / "dav" / "shared"
    shared.mkdir()
    (shared / "card.vcf").write_text("BEGIN:VCARD\n")
    (root / "dav" / "carol@example.net" / "shared").symlink_to(shared)
    outside.mkdir()
    (outside / "keep").write_text("not data")
    return Store(root, outside)


def everything(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_past_its_day_a_closed_accounts_data_goes_and_nothing_else(store):
    alices_before = [everything(path) for path in store.alice]
    status, lines = store.run(PURGE_ON)
    assert status == 0
    assert [path.exists() for path in store.carol] == [False, False]
    assert [everything(path) for path in store.alice] == alices_before
    assert (store.root / "dav/shared/card.vcf").is_file()  # behind carol's link: kept
    assert lines == [
        f"purged carol@example.net: closed {CLOSED}, due {PURGE_ON}; 2 of 2 paths removed, "
        "the others already gone"
    ]


def test_a_second_run_changes_nothing(store):
    store.run("2027-06-01")
    after = everything(store.root)
    status, lines = store.run("2027-06-02")
    assert status == 0
    assert everything(store.root) == after
    assert lines == [
        f"purged carol@example.net: closed {CLOSED}, due {PURGE_ON}; 0 of 2 paths removed, "
        "the others already gone"
    ]


def test_the_day_before_the_purge_nothing_is_touched(store):
    before = everything(store.root)
    assert store.run("2027-01-05") == (0, [])
    assert everything(store.root) == before


def test_an_account_also_listed_open_is_refused(store):
    before = everything(store.root)
    status, lines = store.run(PURGE_ON, account="alice@example.net")
    assert status == 1
    assert lines == ["refused to purge alice@example.net: it is also an open account"]
    assert everything(store.root) == before


@pytest.mark.parametrize(
    ("paths", "why"),
    [
        (lambda s: [str(s.outside)], "is not inside a data root"),
        (lambda s: [str(s.root)], "is not inside a data root"),
        (lambda s: [f"{s.root}/mail/../../elsewhere"], "is not an absolute, normalised path"),
        (lambda s: ["mail/carol"], "is not an absolute, normalised path"),
        (lambda s: [str(s.root / "mail")], "is, holds or lies in an open account's data"),
        (lambda s: [str(s.alice[0] / "Maildir")], "is, holds or lies in an open account's data"),
    ],
    ids=["outside", "a-root", "dot-dot", "relative", "holds-open", "inside-open"],
)
def test_a_path_the_guards_refuse_stops_the_whole_account(store, paths, why):
    before = everything(store.root)
    status, lines = store.run(PURGE_ON, paths=[str(store.carol[0]), *paths(store)])
    assert status == 1
    assert len(lines) == 1
    assert lines[0].startswith("refused to purge carol@example.net: ")
    assert why in lines[0]
    assert everything(store.root) == before
    assert (store.outside / "keep").is_file()


def run_script(list_file: Path, *arguments: str) -> subprocess.CompletedProcess:
    """The script as installed: its file run by a bare interpreter, no bulwark importable."""
    return subprocess.run(
        [sys.executable, "-I", purge.__file__, "--list", str(list_file), *arguments],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_script_purges_with_a_shifted_clock_and_the_standard_library_only(store, tmp_path):
    list_file = tmp_path / "closed-accounts.json"
    list_file.write_text(json.dumps(store.listing()))
    waiting = run_script(list_file, "--now", "2027-01-05T23:59:59Z")
    assert (waiting.returncode, waiting.stdout, waiting.stderr) == (0, "", "")
    assert all(path.exists() for path in store.carol)
    # 23:30 in Seattle is already the purge day in UTC.
    done = run_script(list_file, "--now", "2027-01-05T23:30:00-08:00")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("purged carol@example.net: ")
    assert not any(path.exists() for path in store.carol)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "nothing purged"),
        (json.dumps({"roots": [], "open": {}, "closed": [{"account": "x"}]}), "closed[0].closed"),
        (json.dumps({"roots": "/", "open": {}, "closed": []}), "roots: expected a list"),
    ],
    ids=["not-json", "no-day", "roots-not-a-list"],
)
def test_a_malformed_list_purges_nothing_and_says_where(tmp_path, content, message):
    list_file = tmp_path / "closed-accounts.json"
    list_file.write_text(content)
    result = run_script(list_file)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_bad_reference_time_is_refused(tmp_path):
    result = run_script(tmp_path / "absent.json", "--now", "next tuesday")
    assert result.returncode == 2
    assert "--now" in result.stderr


def test_the_script_reads_the_rendered_list_of_every_data_host():
    lab = load_topology(REPO / "inventory/lab.py")
    bob = dataclasses.replace(
        next(account for account in lab.accounts if account.user == "bob"),
        closed=datetime.date.fromisoformat(CLOSED),
    )
    others = tuple(account for account in lab.accounts if account.user != "bob")
    closed = dataclasses.replace(lab, accounts=(*others, bob))
    hosts = [host for host in closed.hosts if closure.purge_role(host) is not None]
    assert len(hosts) == 4
    for host in hosts:
        listed = purge.parse_list(closure.purge_list(closed, host))
        assert [entry.account for entry in listed.closed] == ["bob@example.net"]
        assert [entry.purge_on for entry in listed.closed] == [closed.purge_date(bob)]
        # The day before, the rendered list purges nothing, whatever is on disk.
        day = closed.purge_date(bob)
        assert list(purge.due(listed, day - datetime.timedelta(days=1))) == []
        assert len(list(purge.due(listed, day))) == 1
