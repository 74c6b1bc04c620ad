"""bulwark-banwatch: ban an address that keeps failing to log in (Python 3 standard library only).

Installed on each host with public login services (bulwark.bruteforce says where and with which
values) and run by systemd. It follows the journal of the daemons that check passwords, counts
each address's failed logins over a sliding window, and once an address reaches the threshold
adds it to an nftables set with a timeout; the firewall's ruleset (roles/firewall.py) drops that
set's members on the host's public ports. Exempt networks (management, admin, site LANs) are
never added, whatever the logs say; the ruleset excepts them as well. It also lists each ban
with its end in a file (`--ban-file`) that Dovecot's passdb reads: a client coming through a
proxy (roles/proxy.py) reaches the host from the proxy's address, which the firewall cannot
drop, and is refused at authentication instead.

Only the daemons' own lines count (journal matches on the trusted `_SYSTEMD_UNIT` field), and
the address is read where the user cannot write: Dovecot puts the attacker-chosen user name
before `rip=`, so the last `rip=..., lip=` of the line is taken; the lines of Postfix and of
bulwark-webauth (the web hosts' HTTP Basic logins) are anchored at their start.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

Address = ipaddress.IPv4Address
Network = ipaddress.IPv4Network

_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
# Dovecot 2.3 login processes, one line per connection when it ends, e.g.
# "imap-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs):
#  user=<alice@example.net>, method=PLAIN, rip=198.51.100.200, lip=198.51.100.11, TLS, ..."
# (src/login-common/client-common.c: client_get_extra_disconnect_reason; login_log_format
# "%$: %s" and the default login_log_format_elements). The reason comes first and holds no
# "<" (a user name is always in user=<...>); the greedy `.*` takes the last rip=.
DOVECOT_FAILURE = re.compile(
    r"^[a-z0-9]+-login: [^(<]*\(auth failed, (?P<count>\d+) attempts in \d+ secs\): "
    rf"user=<.*rip=(?P<address>{_IPV4}), lip="
)
# Postfix smtpd, one line per failed AUTH, e.g.
# "warning: unknown[198.51.100.200]: SASL PLAIN authentication failed: UGFzc3dvcmQ6"
POSTFIX_FAILURE = re.compile(
    rf"^warning: [A-Za-z0-9._-]+\[(?P<address>{_IPV4})\]: "
    r"SASL [A-Za-z0-9_-]+ authentication failed"
)
# bulwark-webauth (bulwark/webauth.py: failure_line), one line per failed HTTP Basic login, e.g.
# "login failed: rip=198.51.100.200 realm=caldav user='alice@example.net'"; rip is `-` when
# nginx gave no address, and the user name, the client's text, comes last.
WEBAUTH_FAILURE = re.compile(rf"^login failed: rip=(?P<address>{_IPV4}) realm=")
# slapd (loglevel stats) names a connection's address when it accepts it and the failure of a
# bind later, by connection number only, e.g.
# "conn=1003 fd=14 ACCEPT from IP=198.51.100.200:45678 (IP=198.51.100.12:636)" ...
# "conn=1003 op=0 RESULT tag=97 err=49 qtime=0.000011 etime=0.290125 text=" (tag 97: a bind's
# answer; err 49: invalid credentials) ... "conn=1003 fd=14 closed" (servers/slapd/daemon.c,
# result.c). The bind's DN, the client's text, is on a line of its own that is never read.
SLAPD_ACCEPT = re.compile(rf"^conn=(?P<conn>\d+) fd=\d+ ACCEPT from IP=(?P<address>{_IPV4}):\d+ ")
SLAPD_FAILURE = re.compile(r"^conn=(?P<conn>\d+) op=\d+ RESULT tag=97 err=49 ")
SLAPD_CLOSED = re.compile(r"^conn=(?P<conn>\d+) fd=\d+ closed")
# A watcher under attack from many addresses keeps at most this many addresses' failures (and
# slapd connections' addresses).
MAX_TRACKED = 100_000


@dataclass(frozen=True)
class Failure:
    """`count` failed logins from `address`, reported by one log line."""

    address: Address
    count: int


def parse(message: str) -> Failure | None:
    """The failed logins one log message reports, or None if it reports none."""
    if match := DOVECOT_FAILURE.match(message):
        count = int(match["count"])
    elif match := POSTFIX_FAILURE.match(message) or WEBAUTH_FAILURE.match(message):
        count = 1
    else:
        return None
    try:
        return Failure(Address(match["address"]), count)
    except ValueError:  # 999.1.2.3 matched the pattern; no such address
        return None


class SlapdConnections:
    """slapd's open connections and their addresses, to attribute its failed binds."""

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}

    def failure(self, message: str) -> Failure | None:
        """The failed bind `message` reports, or None; remembers and forgets connections."""
        if match := SLAPD_ACCEPT.match(message):
            if len(self.addresses) >= MAX_TRACKED:
                del self.addresses[next(iter(self.addresses))]
            self.addresses[match["conn"]] = match["address"]
        elif match := SLAPD_CLOSED.match(message):
            self.addresses.pop(match["conn"], None)
        elif (match := SLAPD_FAILURE.match(message)) and match["conn"] in self.addresses:
            try:
                return Failure(Address(self.addresses[match["conn"]]), 1)
            except ValueError:
                return None
        return None


class Window:
    """Failed logins per address over the last `seconds`: `record` says when an address has
    reached `failures` and must be banned; its count then starts again from nothing, so a
    ban lifted early is not renewed by failures it already paid for. Exempt addresses are never
    counted."""

    def __init__(self, failures: int, seconds: float, exempt: Iterable[Network]):
        self.failures = failures
        self.seconds = seconds
        self.exempt = tuple(exempt)
        self._seen: dict[Address, deque[float]] = {}

    def is_exempt(self, address: Address) -> bool:
        return address.is_loopback or any(address in network for network in self.exempt)

    def record(self, failure: Failure, now: float) -> bool:
        """Count `failure` at `now` (seconds); True when its address must be banned now."""
        if self.is_exempt(failure.address):
            return False
        if failure.address not in self._seen and len(self._seen) >= MAX_TRACKED:
            self._forget_before(now - self.seconds)
        times = self._seen.setdefault(failure.address, deque())
        times.extend([now] * failure.count)
        while times and times[0] <= now - self.seconds:
            times.popleft()
        if len(times) < self.failures:
            return False
        del self._seen[failure.address]
        return True

    def _forget_before(self, oldest: float) -> None:
        for address in [a for a, times in self._seen.items() if times[-1] <= oldest]:
            del self._seen[address]


def ban_command(table: str, set_name: str, address: Address, minutes: int) -> list[str]:
    """`nft add element inet TABLE SET { ADDRESS timeout Nm }` as argv (no shell)."""
    return ["nft", "add", "element", "inet", table, set_name, "{", str(address), "timeout",
            f"{minutes}m", "}"]  # fmt: skip


def record_ban(path: str, address: Address, minutes: int, now: float) -> None:
    """List `address` in the ban file until `now` + `minutes` ("ADDRESS END" per line, END in
    epoch seconds), dropping the bans that have ended; replaced whole, so a reader never sees
    half a file."""
    until = int(now) + minutes * 60
    kept = {}
    try:
        with open(path, encoding="ascii") as listing:
            for line in listing:
                listed, _, end = line.partition(" ")
                if end.strip().isdigit() and int(end) > now and listed != str(address):
                    kept[listed] = int(end)
    except FileNotFoundError:
        pass
    kept[str(address)] = until
    scratch = f"{path}.new"
    with open(scratch, "w", encoding="ascii") as listing:
        listing.writelines(f"{listed} {end}\n" for listed, end in sorted(kept.items()))
    os.chmod(scratch, 0o644)
    os.replace(scratch, path)


def journal_command(units: Sequence[str]) -> list[str]:
    """Follow the units' new journal entries, one JSON object per line, from now on."""
    return ["journalctl", "--follow", "--lines=0", "--output=json",
            *(f"_SYSTEMD_UNIT={unit}" for unit in units)]  # fmt: skip


def messages(lines: Iterable[str]) -> Iterator[str]:
    """The MESSAGE of each journal JSON line (journald sends bytes that are not UTF-8 as a list
    of numbers); lines that are not journal entries are skipped."""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("MESSAGE") if isinstance(entry, dict) else None
        if isinstance(message, list):
            message = bytes(value & 0xFF for value in message).decode("utf-8", "replace")
        if isinstance(message, str):
            yield message


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bulwark-banwatch", description=__doc__.split("\n")[0])
    parser.add_argument("--failures", type=int, required=True, help="failed logins that ban")
    parser.add_argument("--window", type=int, required=True, help="counted over these seconds")
    parser.add_argument("--ban-minutes", type=int, required=True, help="how long a ban lasts")
    parser.add_argument("--table", required=True, help="the nftables inet table")
    parser.add_argument("--set", dest="set_name", required=True, help="the set of banned addresses")
    parser.add_argument("--unit", action="append", required=True, help="a unit to watch")
    parser.add_argument("--exempt", action="append", default=[], type=Network, help="never banned")
    parser.add_argument("--ban-file", help="also list each ban here, for Dovecot's passdb")
    return parser.parse_args(argv)


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """Watch until journalctl ends (systemd restarts the service then)."""
    options = _arguments(argv)
    window = Window(options.failures, options.window, options.exempt)
    slapd = SlapdConnections()
    with subprocess.Popen(
        journal_command(options.unit), stdout=subprocess.PIPE, text=True, errors="replace"
    ) as journal:
        for message in messages(journal.stdout or ()):
            failure = parse(message) or slapd.failure(message)
            if failure is None or not window.record(failure, time.monotonic()):
                continue
            command = ban_command(
                options.table, options.set_name, failure.address, options.ban_minutes
            )
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            outcome = "banned" if result.returncode == 0 else f"not banned: {result.stderr.strip()}"
            if options.ban_file:
                record_ban(options.ban_file, failure.address, options.ban_minutes, time.time())
            print(
                f"{failure.address}: {options.failures} failed logins within {options.window} s, "
                f"{outcome} for {options.ban_minutes} min",
                flush=True,
            )
    return 1


if __name__ == "__main__":
    sys.exit(main())
