"""Live checks: what `bulwark status` and `bulwark drift` read on a host, and how they judge it.

Each role module declares its checks (`live_checks(topology, host)`, collected through the
registry by `host_checks`) as instances of check kinds (bulwark.probes, or a role's own): data
saying what to look at (a unit, a certificate, a replica's marker). A kind is the logic: the
read-only shell it runs on the host and what it makes of the output, for `status` (a verdict and
the figure behind it) and for `drift` (each difference from what a deploy would leave). Neither
command names a role, a unit or a path: a new role adds its declarations and is covered.

Everything one command reads on one host is one shell script (`host_script`), sent over one SSH
session and cut into sections again here; judging is pure, so tests feed it canned outputs.

The thresholds are below, in one place (`THRESHOLDS`); `bulwark status --threshold NAME=VALUE`
overrides any of them for one run.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

from bulwark import registry
from bulwark.errors import BulwarkError, did_you_mean

if TYPE_CHECKING:
    from bulwark.render import RenderedFile
    from bulwark.topology import Host, Topology


class Verdict(IntEnum):
    """How a check came out; the worst verdict of a run decides its exit status."""

    OK = 0
    WARN = 1
    FAIL = 2


@dataclass(frozen=True)
class Threshold:
    """A limit a verdict turns on: its value, unit and what crossing it means."""

    value: float
    unit: str
    meaning: str


# Every limit status judges by. Disk: WARN leaves time to act, FAIL is days from full on a
# busy store. Certificates: issued ones are renewed 30 days before they end (bulwark.pki), so
# WARN means renewal did not happen; FAIL leaves a week. WireGuard re-handshakes every 2 minutes
# while traffic flows (the gateways' keepalive makes sure it does), so 3 minutes is one missed
# rekey and 10 minutes a dead tunnel. Mail: a user whose change is queued is normally synced in
# seconds; the replicator also syncs every user in full once a day (Dovecot's
# replication_full_sync_interval), so a last success older than that plus an hour means it
# stopped. DAV: a replica pulls every 5 s (bulwark.replication), ≤ 60 s behind is the promise.
THRESHOLDS: dict[str, Threshold] = {
    "disk-warn": Threshold(80, "%", "disk or inode use of a data path at or above: WARN"),
    "disk-fail": Threshold(95, "%", "disk or inode use of a data path at or above: FAIL"),
    "cert-warn": Threshold(30, "days", "certificate valid for fewer days: WARN"),
    "cert-fail": Threshold(7, "days", "certificate valid for fewer days: FAIL"),
    "handshake-warn": Threshold(180, "s", "WireGuard peer's latest handshake older: WARN"),
    "handshake-fail": Threshold(600, "s", "WireGuard peer's latest handshake older: FAIL"),
    "mail-queued-warn": Threshold(
        60, "s", "a mail user queued for sync, last synced longer ago: WARN"
    ),
    "mail-queued-fail": Threshold(
        300, "s", "a mail user queued for sync, last synced longer ago: FAIL"
    ),
    "mail-idle-warn": Threshold(
        25 * 3600, "s", "a mail user's last successful sync older (daily full sync missed): WARN"
    ),
    "replica-warn": Threshold(60, "s", "a DAV replica's last successful pull older: WARN"),
    "replica-fail": Threshold(300, "s", "a DAV replica's last successful pull older: FAIL"),
    "refresh-warn": Threshold(180, "s", "the LDAP address book's last refresh older: WARN"),
    "refresh-fail": Threshold(300, "s", "the LDAP address book's last refresh older: FAIL"),
    # Backups run hourly (10 minutes of random delay): one missed run warns, two fail. The
    # drill runs daily.
    "backup-warn": Threshold(2 * 3600, "s", "a backup's or prune's last run older: WARN"),
    "backup-fail": Threshold(3 * 3600, "s", "a backup's or prune's last run older: FAIL"),
    "drill-warn": Threshold(26 * 3600, "s", "the backup drill's last run older: WARN"),
    "drill-fail": Threshold(50 * 3600, "s", "the backup drill's last run older: FAIL"),
    "updates-grace": Threshold(
        2 * 86400,
        "s",
        "security updates pending and unattended-upgrades has not run for longer: WARN",
    ),
    "updates-overdue": Threshold(
        7 * 86400,
        "s",
        "security updates pending and unattended-upgrades has not run for longer: FAIL",
    ),
    "lists-stale": Threshold(7 * 86400, "s", "package lists older (pending updates unknown): WARN"),
    "clock-warn": Threshold(1, "s", "clock apart from this machine's by more: WARN"),
    "clock-fail": Threshold(5, "s", "clock apart from this machine's by more: FAIL"),
}


def limits(overrides: Iterable[str] = ()) -> dict[str, float]:
    """THRESHOLDS' values, with `NAME=VALUE` overrides; an unknown name or bad value is an
    error naming it."""
    values = {name: threshold.value for name, threshold in THRESHOLDS.items()}
    for item in overrides:
        name, sep, text = item.partition("=")
        if name not in THRESHOLDS:
            raise BulwarkError(
                f"--threshold {item!r}: no threshold {name!r}{did_you_mean(name, THRESHOLDS)}; "
                f"thresholds: {', '.join(THRESHOLDS)}"
            )
        if not sep:
            raise BulwarkError(f"--threshold {item!r}: give NAME=VALUE")
        try:
            values[name] = float(text)
        except ValueError:
            raise BulwarkError(f"--threshold {item!r}: {text!r} is not a number") from None
    return values


@dataclass(frozen=True)
class Finding:
    """One line of `status`: the check, its verdict, the figure behind it (and the figure as a
    number, for monitoring, where there is one)."""

    check: str
    verdict: Verdict
    figure: str
    value: float | None = None


@dataclass(frozen=True)
class Difference:
    """One line of `drift`: what differs from what a deploy would leave, and how."""

    subject: str
    detail: str


@dataclass(frozen=True)
class Reading:
    """What one check's shell printed (stdout and stderr, in order) and its exit status; `rc`
    None when the script never got to its end (the connection dropped)."""

    lines: tuple[str, ...]
    rc: int | None

    @property
    def text(self) -> str:
        return "\n".join(self.lines).strip()

    def last_line(self, default: str = "no output") -> str:
        """The last non-empty line: what a failed command said."""
        lines = [line.strip() for line in self.lines if line.strip()]
        return lines[-1] if lines else default


@dataclass(frozen=True)
class HostContext:
    """What every check of one host may use: the topology and host, the host's clock when the
    script began (`now`) and ended (`host_end`; None: unknown) and its virtualisation, when
    this machine started and finished the session (epoch seconds), the thresholds in force,
    and for drift the rendered files."""

    topology: Topology
    host: Host
    now: float
    container: bool
    started: float = 0.0
    finished: float = 0.0
    limits: Mapping[str, float] = field(default_factory=lambda: limits())
    expected: Mapping[str, RenderedFile] = field(default_factory=dict)
    host_end: float | None = None

    def clock_offset(self) -> tuple[float, float]:
        """Bounds of (host clock - this machine's clock): the host read `now` after this
        machine started the session and `host_end` before it finished."""
        end = self.now if self.host_end is None else self.host_end
        return end - self.finished, self.now - self.started

    def age(self, epoch: float) -> float:
        """Seconds from `epoch` to the host's now (never negative)."""
        return max(0.0, self.now - epoch)


class LiveCheck:
    """A check kind. Instances (frozen dataclasses) are a role's declarations; the methods are
    the kind's logic. A kind takes part in `status` if `status_script` gives a script, in
    `drift` if `drift_script` does. Kinds with `MERGED` set are merged per host into one
    instance (`merge`), so one command reads all units or all data paths. `RANK` orders a
    host's checks in the output (stable: declaration order within a rank)."""

    MERGED: ClassVar[bool] = False
    RANK: ClassVar[int] = 50

    @classmethod
    def merge(cls, checks: Sequence[LiveCheck]) -> LiveCheck:
        raise NotImplementedError

    def status_script(self) -> str | None:
        return None

    def status(self, reading: Reading, context: HostContext) -> list[Finding]:
        return []

    def drift_script(self, context: HostContext) -> str | None:
        return None

    def drift(self, reading: Reading, context: HostContext) -> list[Difference]:
        return []

    def expected_files(self, rendered: Mapping[str, RenderedFile]) -> list[RenderedFile]:
        """Files a deploy leaves besides the rendered ones (drift compares them too)."""
        return []


def merged(checks: Iterable[LiveCheck]) -> tuple[LiveCheck, ...]:
    """`checks` with each MERGED kind's instances merged into one, at the first one's place."""
    checks = list(checks)
    out: list[LiveCheck] = []
    seen: set[type] = set()
    for check in checks:
        kind = type(check)
        if not kind.MERGED:
            if check not in out:
                out.append(check)
            continue
        if kind in seen:
            continue
        seen.add(kind)
        out.append(kind.merge([other for other in checks if type(other) is kind]))
    return tuple(out)


def host_checks(
    topology: Topology, host: Host, generic: Iterable[LiveCheck] = ()
) -> tuple[LiveCheck, ...]:
    """The checks of `host`: `generic` ones (the commands' own) and each role module's
    `live_checks` in deploy order, merged, by RANK."""
    declared = [
        check
        for module in registry.host_modules(host)
        for check in module.live_checks(topology, host)
    ]
    return tuple(sorted(merged([*generic, *declared]), key=lambda check: check.RANK))


# --- one script per host --------------------------------------------------------------------

# The host's clock and whether it is a container, read before any check; its clock again after
# the last one (the two bound its offset from this machine's: probes.Clock).
_PRELUDE: tuple[tuple[str, str], ...] = (
    ("now", "date +%s.%N"),
    ("virt", "systemd-detect-virt --container 2>/dev/null || true"),
)
_POSTLUDE: tuple[tuple[str, str], ...] = (("end", "date +%s.%N"),)
_ENVIRONMENT = "export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class HostScript:
    """The shell `sh -s` runs on a host: sections `now`, `virt`, one per check, then `end`,
    each framed by lines carrying `marker` (random per script, so no output can forge a
    frame)."""

    text: str
    marker: str
    sections: tuple[str, ...]


def host_script(parts: Sequence[str | None], marker: str | None = None) -> HostScript:
    """One script running the prelude and each of `parts` (None: skipped), stdin closed
    (the script itself arrives on the shell's stdin) and stderr merged into stdout."""
    marker = marker or f"@@bulwark-{secrets.token_hex(8)}"
    lines = ["#!/bin/sh", _ENVIRONMENT]
    names: list[str] = []
    sections = [
        *_PRELUDE,
        *((str(index), part) for index, part in enumerate(parts)),
        *_POSTLUDE,
    ]
    for name, part in sections:
        if part is None:
            continue
        names.append(name)
        lines.append(f"echo '{marker} begin {name}'")
        lines.append(f"( {part}\n) </dev/null 2>&1")
        lines.append(f'echo "{marker} end {name} $?"')
    return HostScript("\n".join(lines) + "\n", marker, tuple(names))


def split_output(output: str, marker: str) -> dict[str, Reading]:
    """The sections of a script's output by name; a section whose end never came has rc None."""
    readings: dict[str, Reading] = {}
    current: str | None = None
    lines: list[str] = []
    begin = re.compile(rf"^{re.escape(marker)} begin (\S+)$")
    end = re.compile(rf"^{re.escape(marker)} end (\S+) (\d+)$")
    for line in output.splitlines():
        if match := begin.match(line):
            current, lines = match.group(1), []
        elif (match := end.match(line)) and match.group(1) == current:
            readings[current] = Reading(tuple(lines), int(match.group(2)))
            current = None
        elif current is not None:
            lines.append(line)
    if current is not None:
        readings[current] = Reading(tuple(lines), None)
    return readings


def prelude(readings: Mapping[str, Reading]) -> tuple[float | None, bool]:
    """The host's clock when the script began (None if unreadable), and whether the host is a
    container."""
    virt = readings.get("virt")
    container = virt is not None and virt.text not in ("", "none")
    return _clock(readings.get("now")), container


def postlude(readings: Mapping[str, Reading]) -> float | None:
    """The host's clock when the script ended (None if it never did)."""
    return _clock(readings.get("end"))


def _clock(reading: Reading | None) -> float | None:
    if reading is None or reading.rc is None:
        return None
    try:
        return float(reading.text)
    except ValueError:
        return None


def no_answer(reading: Reading | None) -> str | None:
    """Why a check has nothing to judge (None if it has): never ran, or cut short."""
    if reading is None:
        return "no answer (the session ended before this check)"
    if reading.rc is None:
        return "no answer (the session ended during this check)"
    return None


def status_findings(
    checks: Sequence[LiveCheck], readings: Mapping[str, Reading], context: HostContext
) -> list[Finding]:
    """Each status check's findings from its section (`str(index)` of `checks`)."""
    findings: list[Finding] = []
    for index, check in enumerate(checks):
        if check.status_script() is None:
            continue
        reading = readings.get(str(index))
        if (why := no_answer(reading)) is not None:
            findings.append(Finding(type(check).__name__.lower(), Verdict.FAIL, why))
            continue
        findings.extend(check.status(reading, context))
    return findings


def drift_differences(
    checks: Sequence[LiveCheck],
    scripts: Sequence[str | None],
    readings: Mapping[str, Reading],
    context: HostContext,
) -> list[Difference]:
    """Each drift check's differences from its section."""
    differences: list[Difference] = []
    for index, (check, script) in enumerate(zip(checks, scripts, strict=True)):
        if script is None:
            continue
        reading = readings.get(str(index))
        if (why := no_answer(reading)) is not None:
            differences.append(Difference(type(check).__name__.lower(), why))
            continue
        differences.extend(check.drift(reading, context))
    return differences


def as_json(value: Any) -> Any:
    """A finding's number as JSON shows it: whole numbers as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
