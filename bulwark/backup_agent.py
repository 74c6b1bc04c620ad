"""bulwark-backup: borg archives of a data host, kept, pruned and drilled at the other site.

Installed by roles/backup.py as /usr/local/sbin/bulwark-backup, run by systemd timers and by
`bulwark backup`. Python's standard library and borg only. Reads one JSON configuration
(`--config`), which the role renders:

on a data host (`create`, `restore`, `forget-repository-state`):
    {"name", "repository" (borg URL), "paths", "passphrase_file", "rsh", "base_dir",
     "accounts": {user: {kind: [paths]}}, "after_restore": {kind: [argv with {address}]},
     "addresses": {user: address}}
on a backup host (`prune`, `drill`, `rollback`):
    {"repositories": {source: {"path", "passphrase_file", "accounts": {user: {kind: [paths]}}}},
     "closed": {user: purge day}, "retention_days", "stale_hours", "state_dir", "scratch_dir",
     "base_dir"}

Every command prints one JSON document on stdout (what it did: counts, archive names, never
file contents or secrets) and exits 0, or 1 with the reason on stderr.

Append-only: a source's SSH key only runs `borg serve --append-only` on its repository, so a
source broken into can write a manifest without some archive but never remove the data. The
backup host, which alone prunes (and whose prune would make such a deletion permanent), keeps a
ledger of the archives it has seen and of the repository's last transaction it verified: an
archive gone that it did not delete stops the prune, and `rollback` returns the repository to
that transaction (borg's documented append-only recovery: drop the segments written after it
and let borg rebuild its index).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# Archive names: the source's name and the UTC time it was made.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Data the restore and the drill never copy or count: borg's and the daemons' caches, locks and
# indexes, rebuilt by their owners, and maildir's tmp (half-delivered messages).
SKIPPED_NAMES = frozenset({".Radicale.cache", ".Radicale.lock", "tmp"})
SKIPPED_PREFIXES = ("dovecot.", "dovecot-uidlist", "dovecot-uidvalidity")
# What counts as one item of each kind.
ITEM_SUFFIXES = {"dav": (".ics", ".vcf")}
# Seconds a command waits for the repository's lock (a backup, a prune, a drill or a restore
# holds it for as long as it runs) before it gives up.
LOCK_WAIT = 3600
# What runs on a backup host, one at a time (`exclusive`).
SERVER_COMMANDS = frozenset({"prune", "drill", "rollback", "purge"})
# Seconds between attempts to reach the repository before a backup gives up: a first backup
# may start while the tunnel or the other site's backup sshd is still coming up.
RETRY_SECONDS = (5, 15, 30, 60, 90)
# The restore's scratch directories, on the volume being restored: never backed up.
SCRATCH_PREFIX = ".bulwark-restore-"


class Failure(Exception):
    """A command that cannot do what it was asked: its message is the whole story."""


# --- borg -----------------------------------------------------------------------------------


def borg_env(passphrase_file: str, base_dir: str, rsh: str | None = None) -> dict[str, str]:
    """borg's environment: the passphrase read from its file by borg itself (never in argv or
    the environment), its cache and security state in `base_dir`, UTC times."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "BORG_PASSCOMMAND": f"cat {passphrase_file}",
        "BORG_BASE_DIR": base_dir,
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
        "BORG_EXIT_CODES": "legacy",
    }
    if rsh:
        env["BORG_RSH"] = rsh
    return env


def borg(
    args: Sequence[str], env: dict[str, str], cwd: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run borg; a failure raises with borg's own last lines. Exit status 1 is a warning (a
    file changed while read), except for `check`, which says so when it finds errors."""
    result = subprocess.run(
        ["borg", "--lock-wait", str(LOCK_WAIT), *args],
        env=env, cwd=cwd, capture_output=True, text=True, check=False,
    )  # fmt: skip
    allowed = (0,) if args[0] == "check" else (0, 1)
    if check and result.returncode not in allowed:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise Failure(f"borg {args[0]} failed ({result.returncode}): {tail}")
    return result


def archives(repository: str, env: dict[str, str]) -> list[dict]:
    """The repository's archives, oldest first: name, id, start (aware UTC datetime)."""
    listed = json.loads(borg(["list", "--json", repository], env).stdout)["archives"]
    for archive in listed:
        archive["start"] = datetime.datetime.fromisoformat(archive["start"]).replace(
            tzinfo=datetime.UTC
        )
    return sorted(listed, key=lambda archive: archive["start"])


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise Failure(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def now(text: str | None) -> datetime.datetime:
    return parse_time(text) if text else datetime.datetime.now(datetime.UTC)


# --- a data host --------------------------------------------------------------------------------


def client_env(config: dict) -> dict[str, str]:
    return borg_env(config["passphrase_file"], config["base_dir"], config["rsh"])


def create(config: dict, moment: datetime.datetime) -> dict:
    """One archive of every backed-up path; the repository is made on the first run."""
    env = client_env(config)
    repository = config["repository"]
    for pause in (*config.get("retry_seconds", RETRY_SECONDS), None):
        probe = borg(["info", "--json", repository], env, check=False)
        if probe.returncode == 0 or "does not exist" in probe.stderr or pause is None:
            break
        time.sleep(pause)  # the tunnel or the other site's sshd not there yet: try again
    initialised = False
    if probe.returncode != 0:
        if "does not exist" not in probe.stderr:
            raise Failure(f"cannot reach the repository: {probe.stderr.strip()[-300:]}")
        borg(["init", "--encryption=repokey-blake2", "--make-parent-dirs", repository], env)
        initialised = True
    name = f"{config['name']}-{moment.strftime(TIME_FORMAT)}"
    result = borg(
        [
            "create", "--json", "--one-file-system", "--compression", "zstd,3",
            "--exclude", f"sh:**/{SCRATCH_PREFIX}*",
            "--timestamp", moment.strftime("%Y-%m-%dT%H:%M:%S"),  # borg reads it as UTC
            f"{repository}::{name}", *config["paths"],
        ],
        env,
    )  # fmt: skip
    stats = json.loads(result.stdout)["archive"]["stats"]
    return {
        "archive": name,
        "initialised": initialised,
        "files": stats["nfiles"],
        "original_bytes": stats["original_size"],
        "added_bytes": stats["deduplicated_size"],
    }


def choose_archive(listed: list[dict], at: datetime.datetime | None) -> dict:
    """The newest archive made at or before `at` (the newest of all without it)."""
    candidates = [archive for archive in listed if at is None or archive["start"] <= at]
    if not candidates:
        when = f" at or before {at.strftime(TIME_FORMAT)}" if at else ""
        raise Failure(f"no archive{when} in the repository")
    return candidates[-1]


def skipped(path: Path) -> bool:
    return any(part in SKIPPED_NAMES for part in path.parts) or path.name.startswith(
        SKIPPED_PREFIXES
    )


def walk_files(root: Path) -> Iterator[Path]:
    """Regular files under `root` that a restore copies and a drill counts, sorted."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if name not in SKIPPED_NAMES)
        for name in sorted(files):
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink() and not skipped(path.relative_to(root)):
                yield path


def message_key(path: Path) -> tuple[str, str]:
    """A maildir message's identity: its folder and its unique name without the flags
    (`1700000000.M1P2.host,S=123:2,S` -> `1700000000.M1P2.host,S=123`)."""
    return str(path.parent.parent), path.name.split(":", 1)[0]


def is_message(path: Path) -> bool:
    return path.parent.name in ("cur", "new")


def count_items(kind: str, root: Path) -> int:
    """Items of one kind under `root`: messages, calendar and contact objects, or files."""
    if not root.exists():
        return 0
    files = walk_files(root)
    if kind == "mail":
        return sum(1 for path in files if is_message(path))
    if kind in ITEM_SUFFIXES:
        return sum(1 for path in files if path.name.endswith(ITEM_SUFFIXES[kind]))
    return sum(1 for _ in files)


def copy_owned(source: Path, target: Path) -> None:
    """Copy a file or make a directory as the extracted one is: contents, mode, times, owner."""
    if source.is_dir():
        target.mkdir()
        shutil.copystat(source, target)
    else:
        shutil.copy2(source, target)
    info = source.stat()
    os.chown(target, info.st_uid, info.st_gid)


def merge(kind: str, extracted: Path, live: Path) -> tuple[int, int]:
    """Copy into `live` what `extracted` has and `live` lacks; never replace anything there.
    A message whose flags changed since is the same message. Returns (copied, kept)."""
    present: set[tuple[str, str]] = set()
    if kind == "mail" and live.exists():
        present = {
            message_key(path.relative_to(live)) for path in walk_files(live) if is_message(path)
        }
    copied = kept = 0
    if not live.exists():
        copy_owned(extracted, live)
    for path in walk_files(extracted):
        relative = path.relative_to(extracted)
        target = live / relative
        if kind == "mail" and is_message(relative):
            if message_key(relative) in present:
                kept += 1
                continue
        elif target.exists():
            kept += 1
            continue
        missing = [parent for parent in reversed(relative.parents) if parent != Path(".")]
        for parent in missing:
            if not (live / parent).exists():
                copy_owned(extracted / parent, live / parent)
        copy_owned(path, target)
        copied += 1
    return copied, kept


def restore(config: dict, user: str, kind: str, at: datetime.datetime | None) -> dict:
    """Extract the account's `kind` data from the chosen archive into a scratch directory on
    the same volume, copy back what the live tree lacks, run the kind's after-restore command."""
    account = config["accounts"].get(user)
    if account is None:
        raise Failure(f"no account {user!r} on this host")
    if kind not in account:
        raise Failure(f"this host keeps no {kind} data (it keeps {', '.join(sorted(account))})")
    env = client_env(config)
    archive = choose_archive(archives(config["repository"], env), at)
    paths = account[kind]
    scratch_parent = Path(os.path.commonpath([str(Path(path).parent) for path in paths]))
    while not scratch_parent.exists():
        scratch_parent = scratch_parent.parent
    copied = kept = 0
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=scratch_parent) as scratch:
        borg(
            ["extract", f"{config['repository']}::{archive['name']}",
             *[path.lstrip("/") for path in paths]],
            env,
            cwd=scratch,
        )  # fmt: skip
        for path in paths:
            extracted = Path(scratch, path.lstrip("/"))
            if extracted.exists():
                done, present = merge(kind, extracted, Path(path))
                copied += done
                kept += present
    for argv in config.get("after_restore", {}).get(kind, []):
        address = config["addresses"][user]
        subprocess.run([part.replace("{address}", address) for part in argv], check=True)
    return {
        "archive": archive["name"],
        "made": archive["start"].strftime(TIME_FORMAT),
        "copied": copied,
        "already_present": kept,
    }


def forget_repository_state(config: dict) -> dict:
    """Drop borg's cache and security records of the repository (after a rollback on the
    backup host, which borg would otherwise rightly call an attack)."""
    forgotten = borg_state_dirs(config["base_dir"])
    for path in forgotten:
        shutil.rmtree(path, ignore_errors=True)
    return {"forgotten": [str(path) for path in forgotten]}


def borg_state_dirs(base_dir: str) -> list[Path]:
    """borg's cache and security records under BORG_BASE_DIR."""
    return [Path(base_dir, ".cache/borg"), Path(base_dir, ".config/borg/security")]


# --- a backup host ------------------------------------------------------------------------------


def server_env(config: dict, source: str) -> dict[str, str]:
    repository = config["repositories"][source]
    return borg_env(repository["passphrase_file"], config["base_dir"])


def ledger_path(config: dict, source: str) -> Path:
    return Path(config["state_dir"], f"{source}.ledger.json")


def read_ledger(config: dict, source: str) -> dict:
    path = ledger_path(config, source)
    if not path.exists():
        return {"seen": [], "transaction": None, "purged": {}}
    return json.loads(path.read_text())


def write_ledger(config: dict, source: str, ledger: dict) -> None:
    path = ledger_path(config, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, path)


def last_transaction(repository: str) -> int | None:
    """The repository's current transaction: the number of its index (`index.N`), the last
    segment of the state borg committed. Serving append-only, borg only ever adds segments
    after it."""
    numbers = [
        int(path.name.split(".", 1)[1])
        for path in Path(repository).glob("index.*")
        if path.name.split(".", 1)[1].isdigit()
    ]
    return max(numbers) if numbers else None


def account_excludes(repository: dict, user: str) -> list[str]:
    """borg's --exclude arguments leaving out every directory of `user` in one repository
    (none if it holds no data of theirs)."""
    kinds = repository["accounts"].get(user, {})
    paths = sorted(path for paths in kinds.values() for path in paths)
    return [argument for path in paths for argument in ("--exclude", f"pp:{path}")]


def purge_closed(config: dict, source: str, moment: datetime.datetime, ledger: dict) -> list:
    """Take each closed account past its purge day out of every archive of `source`'s
    repository not yet cleaned of it (the newest ones may still hold its data if the source's
    own purge has not run yet: the next prune cleans them). Returns (user, archive) pairs."""
    repository = config["repositories"][source]
    env = server_env(config, source)
    done = []
    names = [archive["name"] for archive in archives(repository["path"], env)]
    for user, day in sorted(config.get("closed", {}).items()):
        excludes = account_excludes(repository, user)
        if moment.date() < datetime.date.fromisoformat(day) or not excludes:
            continue
        cleaned = set(ledger.setdefault("purged", {}).setdefault(user, []))
        for name in names:
            if name not in cleaned:
                borg(["recreate", *excludes, f"{repository['path']}::{name}"], env)
                ledger["purged"][user].append(name)
                done.append((user, name))
        ledger["purged"][user] = sorted(set(ledger["purged"][user]) & set(names))
    return done


def prune(config: dict, moment: datetime.datetime) -> dict:
    """For each repository: stop if an archive it saw is gone without its doing; otherwise take
    the closed accounts past their purge day out of it, delete every archive older than the
    retention but the newest, compact, and remember what is left and the transaction it was
    verified at."""
    horizon = moment - datetime.timedelta(days=config["retention_days"])
    report: dict[str, dict] = {}
    failures = []
    for source in sorted(config["repositories"]):
        path = config["repositories"][source]["path"]
        if not Path(path, "config").exists():
            report[source] = {"state": "no repository yet"}
            continue
        env = server_env(config, source)
        ledger = read_ledger(config, source)
        listed = archives(path, env)
        names = {archive["name"] for archive in listed}
        vanished = sorted(set(ledger["seen"]) - names)
        if vanished:
            failures.append(
                f"{source}: {len(vanished)} archive(s) removed by someone else "
                f"({', '.join(vanished[:3])}): nothing pruned; `bulwark backup rollback` "
                f"returns the repository to transaction {ledger['transaction']}"
            )
            report[source] = {"state": "tampered", "vanished": vanished}
            continue
        purged = purge_closed(config, source, moment, ledger)
        expired = [archive["name"] for archive in listed[:-1] if archive["start"] < horizon]
        if expired:
            borg(["delete", path, *expired], env)
        borg(["compact", "--threshold", "0", path], env)
        kept = sorted(names - set(expired))
        ledger |= {"seen": kept, "transaction": last_transaction(path)}
        write_ledger(config, source, ledger)
        report[source] = {
            "state": "pruned",
            "deleted": expired,
            "kept": len(kept),
            "closed_accounts_purged": sorted({user for user, _ in purged}),
        }
    if failures:
        raise Failure("; ".join(failures))
    return report


def rollback(config: dict, source: str) -> dict:
    """Return `source`'s repository to the last transaction the prune verified: the segments
    written after it go (borg rebuilds its index on the next use)."""
    if source not in config["repositories"]:
        raise Failure(f"no repository of {source!r} here")
    path = Path(config["repositories"][source]["path"])
    target = read_ledger(config, source)["transaction"]
    if target is None:
        raise Failure(f"{source}: no verified transaction to return to (never pruned)")
    dropped = 0
    for segment in sorted(path.glob("data/*/*")):
        if segment.name.isdigit() and int(segment.name) > target:
            segment.unlink()
            dropped += 1
    for pattern in ("index.*", "hints.*", "integrity.*"):
        for stale in path.glob(pattern):
            stale.unlink()
    env = server_env(config, source)
    for state in borg_state_dirs(config["base_dir"]):
        shutil.rmtree(state, ignore_errors=True)
    left = [archive["name"] for archive in archives(str(path), env)]
    ledger = read_ledger(config, source)
    ledger |= {"seen": sorted(left), "transaction": last_transaction(str(path))}
    write_ledger(config, source, ledger)
    return {"source": source, "transaction": target, "segments_dropped": dropped, "archives": left}


def purge(config: dict, user: str) -> dict:
    """Remove every trace of `user`'s data from every archive of every repository (`borg
    recreate` without their directories), then compact: support's prune of one account, and
    the end of a closed account's backups. The repositories' other data stays as it was."""
    report: dict[str, dict] = {}
    for source in sorted(config["repositories"]):
        repository = config["repositories"][source]
        excludes = account_excludes(repository, user)
        if not excludes or not Path(repository["path"], "config").exists():
            continue
        env = server_env(config, source)
        borg(["recreate", *excludes, repository["path"]], env)
        borg(["compact", "--threshold", "0", repository["path"]], env)
        left = archives(repository["path"], env)
        write_ledger(
            config,
            source,
            read_ledger(config, source) | {"transaction": last_transaction(repository["path"])},
        )
        report[source] = {"archives": len(left)}
    return report


def drill(config: dict, moment: datetime.datetime) -> dict:
    """For each repository: borg's check of the repository and of its newest archive, then
    that archive extracted into a scratch directory (removed after) and every account's
    items counted. Fails on any error, a repository without archives or an archive older than
    `stale_hours`. A repository its source never wrote is reported, not failed: the source's
    own last backup is what `bulwark status` holds against it."""
    report: dict[str, dict] = {}
    failures = []
    scratch_root = Path(config["scratch_dir"])
    scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for source in sorted(config["repositories"]):
        repository = config["repositories"][source]
        env = server_env(config, source)
        if not Path(repository["path"], "config").exists():
            report[source] = {"state": "no repository yet"}  # its source's status says why
            continue
        try:
            borg(["check", "--last", "1", repository["path"]], env)
            listed = archives(repository["path"], env)
            if not listed:
                raise Failure("no archive")
            newest = listed[-1]
            age = (moment - newest["start"]).total_seconds() / 3600
            counts: dict[str, dict[str, int]] = {}
            with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
                borg(["extract", f"{repository['path']}::{newest['name']}"], env, cwd=scratch)
                for user, kinds in sorted(repository["accounts"].items()):
                    counts[user] = {
                        kind: sum(count_items(kind, Path(scratch, path.lstrip("/")))
                                  for path in paths)
                        for kind, paths in sorted(kinds.items())
                    }  # fmt: skip
            report[source] = {
                "archive": newest["name"],
                "age_hours": round(age, 2),
                "counts": counts,
            }
            if age > config["stale_hours"]:
                raise Failure(f"newest archive {newest['name']} is {age:.1f} hours old")
        except Failure as failure:
            failures.append(f"{source}: {failure}")
            report.setdefault(source, {})["error"] = str(failure)
    if failures:
        raise Failure("; ".join(failures))
    return report


@contextmanager
def exclusive(config: dict, command: str) -> Iterator[None]:
    """A backup host's commands one at a time (a timer's, a deploy's, the operator's): each
    reads the ledger, runs several borg commands and writes the ledger back, and a prune
    meeting another's deletions halfway would take them for someone else's."""
    if command not in SERVER_COMMANDS:
        yield
        return
    state = Path(config["state_dir"])
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulwark-backup", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create")
    restoring = commands.add_parser("restore")
    restoring.add_argument("--account", required=True)
    restoring.add_argument("--kind", required=True, choices=("mail", "dav", "files"))
    restoring.add_argument("--at")
    commands.add_parser("forget-repository-state")
    for name in ("prune", "drill"):
        commands.add_parser(name).add_argument("--now", help="the time to act as of (tests)")
    commands.add_parser("rollback").add_argument("source")
    commands.add_parser("purge").add_argument("--account", required=True)
    arguments = parser.parse_args(argv)
    config = json.loads(Path(arguments.config).read_text())
    try:
        with exclusive(config, arguments.command):
            result = run(config, arguments)
    except Failure as failure:
        print(f"bulwark-backup {arguments.command}: {failure}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


def run(config: dict, arguments: argparse.Namespace) -> dict:
    """The command `arguments` names, with the configuration `config`."""
    match arguments.command:
        case "create":
            return create(config, now(None))
        case "restore":
            at = parse_time(arguments.at) if arguments.at else None
            return restore(config, arguments.account, arguments.kind, at)
        case "forget-repository-state":
            return forget_repository_state(config)
        case "prune":
            return prune(config, now(arguments.now))
        case "drill":
            return drill(config, now(arguments.now))
        case "rollback":
            return rollback(config, arguments.source)
        case "purge":
            return purge(config, arguments.account)
    raise Failure(f"no command {arguments.command!r}")


if __name__ == "__main__":
    sys.exit(main())
