"""bulwark-webauth: check HTTP Basic logins for nginx's auth_request (standard library and argon2).

Installed on the web hosts as a script and run by systemd on a Unix socket only nginx can reach.
nginx asks it about every CalDAV/CardDAV/WebDAV request (an auth_request subrequest naming the
realm in X-Bulwark-Realm); it answers 200 with the principal in X-Bulwark-User, which nginx hands
to the backend as X-Remote-User, or 401. The backends then need no passwords at all.

Users log in with their full address and an app password; the accounts file (JSON, from systemd's
LoadCredential=) holds only app-password Argon2id hashes, never the main password's. Argon2 is
slow on purpose and clients send their credentials with every request, so a successful check is
remembered for a minute under a SHA-256 digest of realm, login and password (never the password
itself); failures are never remembered. Each failed login is logged as one line that
bulwark-banwatch reads: the client address first and anchored, the attacker's text last.

It imports nothing from bulwark: Debian's python3-argon2 (21.1) is its only dependency.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import http.server
import ipaddress
import json
import math
import os
import re
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import argon2
from argon2.exceptions import InvalidHash, VerificationError

# systemd passes activated sockets from this file descriptor on (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
# A cache under a flood of distinct successful logins stays this small.
MAX_CACHED = 10_000
# Logged user names are cut to this length: they are the attacker's text.
MAX_LOGGED = 100
# The accounts' domain, a plain DNS name: a login with a second @ can never match it.
DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# nginx names the realm; it also goes into WWW-Authenticate, so a plain name only.
REALM = re.compile(r"[A-Za-z0-9._-]{1,64}")

Verify = Callable[[str, str], bool]


class StartupError(Exception):
    """The daemon cannot start; the message says which file or field to fix."""


@dataclass(frozen=True)
class Config:
    """The accounts file: who may log in, and how logins are spelled."""

    domain: str
    separators: tuple[str, ...]
    book_logins: frozenset[str]
    book_realms: frozenset[str]
    accounts: Mapping[str, tuple[str, ...]]


def _field(data: Mapping[str, Any], name: str, path: Path) -> Any:
    if name not in data:
        raise StartupError(f"{path}: missing field {name!r}")
    return data[name]


def _names(data: Mapping[str, Any], name: str, path: Path) -> list[str]:
    value = _field(data, name, path)
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise StartupError(f"{path}: field {name!r} must be a list of non-empty strings")
    return value


def load_config(path: Path) -> Config:
    """Read and check the accounts file; errors name the file and the field, never a hash."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StartupError(f"{path}: cannot read: {error.strerror}") from None
    except ValueError as error:
        raise StartupError(f"{path}: not JSON: {error}") from None
    if not isinstance(data, dict):
        raise StartupError(f"{path}: not a JSON object")
    domain = _field(data, "domain", path)
    if not isinstance(domain, str) or not DOMAIN.fullmatch(domain):
        raise StartupError(f"{path}: field 'domain' must be a domain name")
    separators = _names(data, "separators", path)
    if any(len(separator) != 1 or separator in "@+" for separator in separators):
        raise StartupError(f"{path}: field 'separators' must be characters other than '@', '+'")
    accounts = _field(data, "accounts", path)
    if not isinstance(accounts, dict):
        raise StartupError(f"{path}: field 'accounts' must be an object")
    for user, hashes in accounts.items():
        if not isinstance(hashes, list) or not all(
            isinstance(hashed, str) and hashed.startswith("$argon2id$") for hashed in hashes
        ):
            raise StartupError(f"{path}: field 'accounts' {user!r}: not a list of Argon2id hashes")
    return Config(
        domain=domain,
        separators=tuple(separators),
        book_logins=frozenset(_names(data, "book_logins", path)),
        book_realms=frozenset(_names(data, "book_realms", path)),
        accounts={user: tuple(hashes) for user, hashes in accounts.items()},
    )


def principal(config: Config, realm: str, login: str) -> str | None:
    """Who `login` names in `realm` (`user@domain`, or `user+Book@domain` for a shared address
    book in a book realm), or None when it names no account. Any separator may stand for `@`
    (some clients cannot send one); the domain is compared without case, the user with it."""
    for separator in config.separators:
        login = login.replace(separator, "@")
    local, at, domain = login.partition("@")
    if not at or domain.lower() != config.domain.lower():  # a second @ stays in `domain`
        return None
    user, plus, book = local.partition("+")
    if plus and (book not in config.book_logins or realm not in config.book_realms):
        return None
    if user not in config.accounts:
        return None
    return f"{local}@{config.domain}"


# Argon2 holds its memory (64 MiB for bulwark's hashes) while it runs: at most one check per CPU
# at a time, however many connections nginx opens.
_HASHER = argon2.PasswordHasher()
_VERIFYING = threading.BoundedSemaphore(os.cpu_count() or 1)


def verify_argon2(hashed: str, password: str) -> bool:
    """Whether `password` matches the Argon2 PHC string `hashed` (a broken hash matches none)."""
    with _VERIFYING:
        try:
            return _HASHER.verify(hashed, password)
        except (VerificationError, InvalidHash):
            return False


def check(
    config: Config, realm: str, login: str, password: str, verify: Verify = verify_argon2
) -> str | None:
    """The principal when `password` is one of the account's app passwords, else None. An
    unknown login is refused without hashing: addresses are no secret, and hashing for them
    would only hand an attacker our CPU."""
    name = principal(config, realm, login)
    if name is None:
        return None
    account = name.partition("@")[0].partition("+")[0]
    return name if any(verify(hashed, password) for hashed in config.accounts[account]) else None


def cache_key(realm: str, login: str, password: str) -> bytes:
    """SHA-256 over the length-prefixed parts: no two triples share a key, and the password is
    not kept."""
    digest = hashlib.sha256()
    for part in (realm, login, password):
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


class Cache:
    """Successful checks for `seconds`, at most `size` of them. Every entry lives equally long,
    so insertion order is expiry order: the oldest entries are the first to go."""

    def __init__(
        self, seconds: float, clock: Callable[[], float] = time.monotonic, size: int = MAX_CACHED
    ):
        self.seconds = seconds
        self.size = size
        self._clock = clock
        self._entries: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Entries held: expired ones too, until a put() drops them."""
        return len(self._entries)

    def get(self, key: bytes) -> str | None:
        """The principal cached under `key`, unless it has expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._entries[key]
                return None
            return entry[0]

    def put(self, key: bytes, name: str) -> None:
        """Remember `name` under `key`, dropping expired entries, then the oldest, for room."""
        now = self._clock()
        with self._lock:
            self._entries.pop(key, None)
            while self._entries:
                oldest = next(iter(self._entries))
                if self._entries[oldest][1] > now and len(self._entries) < self.size:
                    break
                del self._entries[oldest]
            self._entries[key] = (name, now + self.seconds)


class Checker:
    """`check` with its successes cached."""

    def __init__(self, config: Config, cache: Cache, verify: Verify = verify_argon2):
        self.config = config
        self.cache = cache
        self.verify = verify

    def __call__(self, realm: str, login: str, password: str) -> str | None:
        key = cache_key(realm, login, password)
        name = self.cache.get(key)
        if name is None:
            name = check(self.config, realm, login, password, self.verify)
            if name is not None:
                self.cache.put(key, name)
        return name


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """(login, password) from an `Authorization: Basic` value (RFC 7617: UTF-8, the password
    after the first colon), or None when it is not one."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def failure_line(address: str | None, realm: str, login: str) -> str:
    """The log line bulwark-banwatch counts: the address nginx saw (`-` unless it is one) first,
    the login the client chose last, escaped and cut short."""
    return f"login failed: rip={_address(address)} realm={realm} user={repr(login)[:MAX_LOGGED]}"


def _address(text: str | None) -> str:
    """`text` if it is an IP address without a scope (free text), else `-`."""
    try:
        return str(ipaddress.ip_address(text)) if text and "%" not in text else "-"
    except ValueError:
        return "-"


def log(line: str) -> None:
    """One line to stderr, which systemd sends to the journal."""
    print(line, file=sys.stderr, flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    """One auth_request subrequest: any method and path, the answer in the status and headers."""

    server: Server
    timeout = 30  # a connection that sends nothing does not keep its thread

    def __getattr__(self, name: str) -> Callable[[], None]:
        """http.server calls do_<METHOD>: every method gets the same answer."""
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def answer(self) -> None:
        realm = self.headers.get("X-Bulwark-Realm", "")
        if not REALM.fullmatch(realm):
            log(f"misconfigured: X-Bulwark-Realm missing or not a name: {realm!r:.{MAX_LOGGED}}")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        authorization = self.headers.get("Authorization")
        credentials = basic_credentials(authorization) if authorization else None
        name = self.server.checker(realm, *credentials) if credentials else None
        if name is not None:
            self._reply(HTTPStatus.OK, ("X-Bulwark-User", name))
            return
        if credentials:  # clients first ask without credentials: that is no failed login
            log(failure_line(self.headers.get("X-Real-IP"), realm, credentials[0]))
        challenge = f'Basic realm="{realm}", charset="UTF-8"'
        self._reply(HTTPStatus.UNAUTHORIZED, ("WWW-Authenticate", challenge))

    def _reply(self, status: HTTPStatus, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        for header, value in headers:
            self.send_header(header, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Nothing per request: answer() logs the failures, and successes are not news."""

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own complaints, without client_address[0], which a Unix socket lacks."""
        log(format % args)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per connection, on a socket already listening: an Argon2 check in one does not
    hold up the requests whose checks are cached."""

    daemon_threads = True

    def __init__(self, listening: socket.socket, checker: Checker):
        super().__init__(listening.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening
        self.checker = checker


def listening_socket(path: Path | None) -> socket.socket:
    """systemd's socket when it passed one (socket activation), else a new one at `path`."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        if os.environ.get("LISTEN_FDS") != "1":
            raise StartupError("systemd must pass exactly one socket (LISTEN_FDS)")
        listening = socket.socket(fileno=SD_LISTEN_FDS_START)
        if (listening.family, listening.type) != (socket.AF_UNIX, socket.SOCK_STREAM):
            raise StartupError("systemd passed a socket that is not a Unix stream socket")
        return listening
    if path is None:
        raise StartupError("no socket: start through systemd socket activation or give --socket")
    if path.is_socket():  # left by an earlier run
        path.unlink()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(str(path))
        listening.listen()
    except OSError as error:
        listening.close()
        raise StartupError(f"{path}: cannot listen: {error.strerror}") from None
    return listening


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text}")
    return value


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bulwark-webauth", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--accounts", type=Path, help="the accounts file (default $CREDENTIALS_DIRECTORY/accounts)"
    )
    parser.add_argument("--socket", type=Path, help="listen here if systemd passes no socket")
    parser.add_argument(
        "--cache-seconds", type=_seconds, default=60.0, help="remember a good login this long"
    )
    return parser.parse_args(argv)


def build_server(argv: Sequence[str]) -> Server:
    """Everything main() does before serving: options, accounts file, socket."""
    options = _arguments(argv)
    path = options.accounts
    if path is None:
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if not credentials:
            raise StartupError("no accounts file: give --accounts or LoadCredential=accounts:...")
        path = Path(credentials, "accounts")
    checker = Checker(load_config(path), Cache(options.cache_seconds))
    return Server(listening_socket(options.socket), checker)


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """Serve until systemd stops the service."""
    try:
        server = build_server(argv)
    except StartupError as error:
        print(f"bulwark-webauth: {error}", file=sys.stderr)
        return 2
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
