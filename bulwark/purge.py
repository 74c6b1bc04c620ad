"""bulwark-purge-closed: delete closed accounts' data once their retention is over (Python 3
standard library only).

Installed on every host that keeps accounts' data (bulwark.closure says where, and renders the
list it reads) and run daily by a systemd timer, never by a deploy: closing an account in the
inventory only stops rendering its credentials, so reopening it before its purge date finds
everything as it was. The list names, for each closed account, the day its purge is due and
the paths that are its data on this host; for each open account, its paths too, only so that
the guards below can see them.

Guards, each refusing the whole account (logged, exit status 1), never a partial purge:
- an account that is also in the open list is never purged (an inconsistent list);
- an account whose purge day is still ahead of the reference time waits (no line: the normal
  state of a recently closed account);
- a path outside the list's data roots, a root itself, not absolute or not normalised, or one
  that is, holds or lies inside an open account's path, is refused.

Each run is idempotent: a path already gone counts as purged, so a run cut short finishes at
the next one. One line per purged account, naming it, its dates and how many paths went; no
content of the data is ever read. `--now` sets the reference time (ISO date or date-time, UTC
when no zone is given), so a test can run the purge "after" the retention without waiting.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath


class ListError(Exception):
    """The list is unreadable or malformed: nothing is purged."""


@dataclass(frozen=True)
class Closed:
    """A closed account: its address, closure day, first purge day and paths on this host."""

    account: str
    closed: datetime.date
    purge_on: datetime.date
    paths: tuple[str, ...]


@dataclass(frozen=True)
class PurgeList:
    roots: tuple[str, ...]
    open: Mapping[str, tuple[str, ...]]
    closed: tuple[Closed, ...]


def _paths(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ListError(f"{where}: expected a list of paths")
    return tuple(value)


def _day(value: object, where: str) -> datetime.date:
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise ListError(f"{where}: expected an ISO date, got {value!r}")


def parse_list(data: object) -> PurgeList:
    """The purge list from its JSON (bulwark.closure.purge_list renders it)."""
    if not isinstance(data, dict):
        raise ListError("expected an object with 'roots', 'open' and 'closed'")
    roots = _paths(data.get("roots"), "roots")
    opened = data.get("open")
    if not isinstance(opened, dict):
        raise ListError("open: expected an object: account -> its paths")
    closed_entries = data.get("closed")
    if not isinstance(closed_entries, list):
        raise ListError("closed: expected a list of accounts")
    closed = []
    for index, entry in enumerate(closed_entries):
        where = f"closed[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("account"), str):
            raise ListError(f"{where}: expected an object naming its 'account'")
        closed.append(
            Closed(
                entry["account"],
                _day(entry.get("closed"), f"{where}.closed"),
                _day(entry.get("purge_on"), f"{where}.purge_on"),
                _paths(entry.get("paths"), f"{where}.paths"),
            )
        )
    return PurgeList(
        roots,
        {account: _paths(paths, f"open.{account}") for account, paths in opened.items()},
        tuple(closed),
    )


def _inside(path: PurePosixPath, other: PurePosixPath) -> bool:
    return path == other or other in path.parents


def refusal(entry: Closed, purge_list: PurgeList) -> str | None:
    """Why `entry` must not be purged at all, or None when every path of it may go."""
    if entry.account in purge_list.open:
        return "it is also an open account"
    roots = [PurePosixPath(root) for root in purge_list.roots]
    opened = [PurePosixPath(path) for paths in purge_list.open.values() for path in paths]
    for text in entry.paths:
        path = PurePosixPath(text)
        if not path.is_absolute() or os.path.normpath(text) != text:
            return f"{text} is not an absolute, normalised path"
        if not any(root in path.parents for root in roots):
            return f"{text} is not inside a data root ({', '.join(purge_list.roots)})"
        if any(_inside(path, other) or _inside(other, path) for other in opened):
            return f"{text} is, holds or lies in an open account's data"
    return None


def remove(path: str) -> bool:
    """Delete `path` (a tree, a file or a link, never what a link points to); False if absent."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
        return True
    if os.path.isdir(path):
        shutil.rmtree(path)
        return True
    return False


def due(purge_list: PurgeList, today: datetime.date) -> Iterable[Closed]:
    """The closed accounts whose purge day has come, in the list's order."""
    return (entry for entry in purge_list.closed if entry.purge_on <= today)


def purge(purge_list: PurgeList, today: datetime.date, log: Callable[[str], object] = print) -> int:
    """Purge every due account that passes the guards; 0, or 1 if any was refused or failed."""
    status = 0
    for entry in due(purge_list, today):
        why = refusal(entry, purge_list)
        if why is not None:
            log(f"refused to purge {entry.account}: {why}")
            status = 1
            continue
        try:
            removed = sum(remove(path) for path in entry.paths)
        except OSError as error:
            log(f"failed to purge {entry.account}: {error.strerror or error} ({error.filename})")
            status = 1
            continue
        log(
            f"purged {entry.account}: closed {entry.closed}, due {entry.purge_on}; "
            f"{removed} of {len(entry.paths)} paths removed, the others already gone"
        )
    return status


def reference_day(value: str | None) -> datetime.date:
    """The UTC day of `value` (ISO date or date-time; naive means UTC), or of now."""
    if value is None:
        return datetime.datetime.now(datetime.UTC).date()
    moment = datetime.datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.date()


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    parser = argparse.ArgumentParser(
        prog="bulwark-purge-closed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--list", required=True, help="the purge list (JSON)")
    parser.add_argument("--now", help="reference time, ISO date or date-time (default: now, UTC)")
    options = parser.parse_args(argv)
    try:
        today = reference_day(options.now)
    except ValueError:
        print(f"--now: expected an ISO date or date-time, got {options.now!r}", file=sys.stderr)
        return 2
    try:
        with open(options.list, encoding="utf-8") as stream:
            purge_list = parse_list(json.load(stream))
    except (OSError, ValueError, ListError) as error:
        print(f"{options.list}: {error}; nothing purged", file=sys.stderr)
        return 2
    return purge(purge_list, today, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main())
