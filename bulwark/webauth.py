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

Files (realm `files`) are authorised as well as authenticated: nginx also sends the request's
method, raw URI, host and Destination, and the answer names the backend path (and destination)
to proxy to, inside the account's own tree, or is 403 (`files_access`). The accounts file maps
each account to the name of its tree (`files_roots`): a path's first segment is looked up there,
never split. pure-ftpd asks about FTP logins on a second socket, in its `extauth` protocol
(`FtpHandler`), and is told the uid, gid and chroot of the account's tree.

An account may have a quota (`files_quotas`, bytes), counted one way for both (`tree_usage`,
over the FTP chroot `<files_dir>/<root>/`, which holds `<root>/files/`). nginx also sends a
files request's X-Content-Length ($content_length), X-Expected-Entity-Length (macOS Finder's
length of a chunked PUT) and X-Overwrite (the Overwrite header); a PUT or COPY that would take
the tree past its quota is refused (`quota_refusal`). An FTP login first writes the usage into
the chroot's `.ftpquota`, which pure-ftpd then keeps up to date itself (`write_ftp_quota`).

auth_request turns any answer but 2xx, 401 and 403 into a 500, so every refusal of a files
request is a 403 saying why in X-Bulwark-Refusal: `forbidden` (the path), `quota`,
`length-required` (a PUT without a length, under a quota), `content` (see below).

Files are untrusted content: shown by a browser on the files origin, a page could script the
user's session there. With a `content_origin` and a key (`--content-key`), a browser navigating
to a file (X-Fetch-Dest, nginx's copy of Sec-Fetch-Dest, a page or a frame) is refused with
X-Bulwark-Refusal `content` and X-Bulwark-Location, an expiring signed link on that other origin
(`content_link`), for nginx to redirect to. There the realm `content` needs no login: nginx
sends the link (X-Original-URI) and method (X-Original-Method, GET or HEAD alone), the link
itself is checked (`content_target`), and the answer names the backend path or is 403.

Apache's mod_dav_fs does not know RFC 4331's quota properties, so nginx sends the files
servers' PROPFIND requests here, once their auth_request has passed, instead of to Apache:
without X-Bulwark-Realm, with the tree in X-Bulwark-Root. They go on to Apache (`--backend`)
as they came and its answer comes back unchanged, except that a PROPFIND naming
DAV:quota-available-bytes or DAV:quota-used-bytes in a tree with a quota gets them found,
valued with the usage the quota counts (`with_quota`).

It imports nothing from bulwark: Debian's python3-argon2 (21.1) is its only dependency.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import math
import os
import posixpath
import re
import socket
import socketserver
import stat
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
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
# Control characters (C0, DEL, C1): in no file name bulwark serves, nor in what it logs or tells
# pure-ftpd. Other characters, spaces and non-ASCII letters included, are names like any.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The realms of the files role: WebDAV through nginx, and pure-ftpd's logins.
FILES_REALM = "files"
FTP_REALM = "ftp"
# How nginx tells which files server a request came to (X-Bulwark-Files-Mode): webdav.DOMAIN
# serves every tree under /<root>/files/, myfiles.DOMAIN the logged-in account's at /.
FILES_MODES = ("tree", "rooted")
# The folder of an account's tree that holds its files: /<root>/files/.
FILES_FOLDER = "files"
# WebDAV methods naming a second resource in Destination (RFC 4918 §9.8, §9.9).
DESTINATION_METHODS = frozenset({"COPY", "MOVE"})
# Methods that remove the resource they name: never the top of a tree (/<root>/files/ itself).
REMOVING_METHODS = frozenset({"DELETE", "MOVE"})
# Linux user and group ids pure-ftpd may be told (it refuses 0; 2**32 - 1 is "no id").
MAX_ID = 2**32 - 2
# pure-ftpd's extauth request is at most 4096 bytes (log_extauth.c: char line[4096]).
MAX_FTP_REQUEST = 4096
# pure-ftpd's usage file at the top of a chroot (src/quotas.h: QUOTA_FILE).
QUOTA_FILE = ".ftpquota"
# The largest quota: pure-ftpd holds it in an unsigned long long but subtracts usage from it
# into an off_t (ftpd.c: dostor), and ULONG_LONG_MAX means no quota at all (quotas.c: hasquota).
MAX_QUOTA = 2**63 - 1
# A length nginx ($content_length) or Finder (X-Expected-Entity-Length) declares: what fits an
# off_t; anything else counts as no length.
DECLARED_LENGTH = re.compile(r"[0-9]{1,18}")
# The realm of the content origin: no login, the signed link is the permission.
CONTENT_REALM = "content"
# Methods that only read: the content origin serves nothing else, and only their answers are
# shown to a browser as a page.
READING_METHODS = frozenset({"GET", "HEAD"})
# Sec-Fetch-Dest values of a browser about to show the answer as a document of its own (a page,
# a frame, an embedded object): where a file's scripts would run on the origin serving it.
DOCUMENT_DESTINATIONS = frozenset({"document", "iframe", "frame", "embed", "object"})
# How long a content link works unless the accounts file says (`content_link_seconds`).
DEFAULT_CONTENT_LINK_SECONDS = 3600
# The content key is HMAC-SHA256's: shorter than the hash's 32 bytes weakens it (RFC 2104 §3).
MIN_CONTENT_KEY = 32
# A content link's parts before the backend path: its expiry (Unix time) and its MAC
# (HMAC-SHA256, base64url without padding: 43 characters).
LINK_EXPIRES = re.compile(r"[0-9]{1,20}")
LINK_MAC = re.compile(r"[A-Za-z0-9_-]{43}")
# A PROPFIND passed on to Apache (nginx names no realm then): its body at most this long, which
# is Apache's LimitXMLRequestBody too (roles/files.py writes it there).
MAX_PROPFIND_BODY = 1_000_000
# Bytes of Apache's answer to a PROPFIND passed on at a time, as they come.
RELAY_CHUNK = 64 * 1024
# Seconds a PROPFIND refused before its body is read (too long, no length) keeps reading what
# nginx still sends of it, so nginx gets the refusal rather than a broken pipe.
LINGER_SECONDS = 2
# Seconds Apache may take over a PROPFIND's answer: nginx's proxy_read_timeout on the files
# servers.
BACKEND_TIMEOUT = 300
# WebDAV's XML namespace, and RFC 4331's properties in it ({namespace}name, as ElementTree
# spells them).
DAV = "DAV:"
QUOTA_AVAILABLE = f"{{{DAV}}}quota-available-bytes"
QUOTA_USED = f"{{{DAV}}}quota-used-bytes"
# Headers of one connection alone (RFC 9110 §7.6.1), never passed on from Apache's answer; with
# the names its Connection header lists.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "proxy-authenticate", "proxy-authorization"}
)  # fmt: skip
# What of a PROPFIND Apache is told: its virtual host, the tree nginx names, and what mod_dav
# reads (RFC 4918 §10); nginx's other headers concern the connection between them.
PROPFIND_HEADERS = ("Host", "X-Bulwark-Root", "Depth", "Content-Type", "If")

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
    # user -> the name of the account's files tree (`alice.example.net`), from the topology.
    files_roots: Mapping[str, str] = field(default_factory=dict)
    # Where the trees are (each `<files_dir>/<root>/` is its account's FTP chroot, holding
    # `<root>/files/`; FTP and quotas need it), and who owns them (FTP).
    files_dir: str | None = None
    files_uid: int | None = None
    files_gid: int | None = None
    # user -> bytes its tree may hold (`tree_usage`); users without one have no quota.
    files_quotas: Mapping[str, int] = field(default_factory=dict)
    # The host serving files to browsers as pages, by signed link (`content_link`), if any.
    content_origin: str | None = None
    content_link_seconds: int = DEFAULT_CONTENT_LINK_SECONDS

    @cached_property
    def files_owners(self) -> Mapping[str, str]:
        """Tree name -> its account: how a path's first segment finds its owner."""
        return {root: user for user, root in self.files_roots.items()}


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
    files_roots = _files_roots(data, accounts, path)
    files_dir = _files_dir(data, path)
    return Config(
        domain=domain,
        separators=tuple(separators),
        book_logins=frozenset(_names(data, "book_logins", path)),
        book_realms=frozenset(_names(data, "book_realms", path)),
        accounts={user: tuple(hashes) for user, hashes in accounts.items()},
        files_roots=files_roots,
        files_dir=files_dir,
        files_uid=_files_id(data, "files_uid", path),
        files_gid=_files_id(data, "files_gid", path),
        files_quotas=_files_quotas(data, files_roots, files_dir, path),
        content_origin=_content_origin(data, path),
        content_link_seconds=_content_link_seconds(data, path),
    )


def tree_name(text: object) -> bool:
    """Whether `text` can name a files tree: one path segment that is not `.`, `..` or hidden,
    with no slash, backslash or control character (it also ends up in pure-ftpd's reply)."""
    return (
        isinstance(text, str)
        and bool(text)
        and not text.startswith(".")
        and "/" not in text
        and "\\" not in text
        and not CONTROL.search(text)
    )


def _files_roots(data: Mapping[str, Any], accounts: Mapping[str, Any], path: Path) -> dict:
    roots = data.get("files_roots", {})
    if not isinstance(roots, dict):
        raise StartupError(f"{path}: field 'files_roots' must be an object")
    owners: dict[str, str] = {}
    for user, root in roots.items():
        if user not in accounts:
            raise StartupError(f"{path}: field 'files_roots' {user!r}: not in 'accounts'")
        if not tree_name(root):
            raise StartupError(
                f"{path}: field 'files_roots' {user!r}: not one path segment (empty, a '/' or "
                "'\\', a leading '.', or a control character)"
            )
        if root in owners:
            raise StartupError(
                f"{path}: field 'files_roots' {user!r}: {root!r} is {owners[root]!r}'s already"
            )
        owners[root] = user
    return roots


def _files_dir(data: Mapping[str, Any], path: Path) -> str | None:
    directory = data.get("files_dir")
    if directory is not None and not (
        isinstance(directory, str)
        and directory.startswith("/")
        and not directory.startswith("//")
        and directory != "/"
        and posixpath.normpath(directory) == directory
        and not CONTROL.search(directory)
    ):
        raise StartupError(f"{path}: field 'files_dir' must be a normalised absolute path")
    return directory


def _files_id(data: Mapping[str, Any], name: str, path: Path) -> int | None:
    value = data.get(name)
    if value is not None and not (type(value) is int and 0 < value <= MAX_ID):
        raise StartupError(f"{path}: field {name!r} must be a number from 1 to {MAX_ID}")
    return value


def _files_quotas(
    data: Mapping[str, Any], roots: Mapping[str, str], files_dir: str | None, path: Path
) -> dict:
    quotas = data.get("files_quotas", {})
    if not isinstance(quotas, dict):
        raise StartupError(f"{path}: field 'files_quotas' must be an object")
    for user, quota in quotas.items():
        if user not in roots:
            raise StartupError(f"{path}: field 'files_quotas' {user!r}: not in 'files_roots'")
        if not (type(quota) is int and 0 <= quota <= MAX_QUOTA):
            raise StartupError(
                f"{path}: field 'files_quotas' {user!r}: {quota!r} is not a number of bytes "
                f"from 0 to {MAX_QUOTA}"
            )
    if quotas and files_dir is None:
        raise StartupError(
            f"{path}: field 'files_quotas' needs 'files_dir' (usage is counted there)"
        )
    return quotas


def _content_origin(data: Mapping[str, Any], path: Path) -> str | None:
    origin = data.get("content_origin")
    if origin is not None and not (isinstance(origin, str) and DOMAIN.fullmatch(origin)):
        raise StartupError(f"{path}: field 'content_origin' must be a host name")
    return origin


def _content_link_seconds(data: Mapping[str, Any], path: Path) -> int:
    seconds = data.get("content_link_seconds", DEFAULT_CONTENT_LINK_SECONDS)
    if not (type(seconds) is int and seconds > 0):
        raise StartupError(f"{path}: field 'content_link_seconds' must be a whole number above 0")
    return seconds


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


@dataclass(frozen=True)
class FilesDecision:
    """A files request allowed: the principal, and the backend's path (and Destination path for
    COPY and MOVE), percent-encoded, to proxy to instead of what the client sent."""

    user: str
    path: str
    destination: str | None = None
    # What files_access resolved them from (decoded segments, and whether each names a
    # collection): how they are found on disk without parsing the encoded strings again. Not
    # compared, the strings say the same; None only in decisions written by hand.
    resolved: _Resolved | None = field(default=None, compare=False, repr=False)
    resolved_destination: _Resolved | None = field(default=None, compare=False, repr=False)


def files_access(
    config: Config,
    principal: str,
    mode: str,
    method: str,
    raw_uri: str,
    raw_destination: str | None,
    host: str | None,
) -> FilesDecision | None:
    """Where a files request by `principal` (what `check` returned) may go, or None to refuse.

    `raw_uri` is the request's target as the client sent it (nginx's $request_uri), `host` the
    name it came to ($host), `raw_destination` its Destination header or None; header values
    are bytes, one character each (ISO-8859-1, as http.server reads them). The path is
    percent-decoded once (the query dropped) and normalised as posixpath.normpath would; a `/`,
    NUL, backslash or control character decoded inside a segment, a `..` above `/`, a `#` or a
    malformed escape refuses it. In mode `tree` (webdav.DOMAIN) it must be the principal's
    `/<root>/files` or below, `<root>` being looked up in `files_roots`; in mode `rooted`
    (myfiles.DOMAIN) `/x` means `/<root>/files/x`. COPY and MOVE need a Destination (an https
    URL on `host`, or an absolute path) that resolves the same way, into the same tree; other
    methods' Destination is ignored. No one removes or overwrites the top of a tree: DELETE and
    MOVE from it, COPY and MOVE onto it, are refused. Book logins (`user+Book@domain`) never
    reach files."""
    local, at, _ = principal.partition("@")
    root = config.files_roots.get(local)
    if not at or "+" in local or root is None or mode not in FILES_MODES:
        return None
    path = _files_path(config, local, root, mode, raw_uri)
    if path is None or (method.upper() in REMOVING_METHODS and _is_tree_top(path)):
        return None
    destination = None
    if method.upper() in DESTINATION_METHODS:
        target = _destination_target(raw_destination or "", host)
        destination = None if target is None else _files_path(config, local, root, mode, target)
        if destination is None or _is_tree_top(destination):
            return None
    return FilesDecision(
        principal,
        _encoded(path),
        None if destination is None else _encoded(destination),
        path,
        destination,
    )


# A resolved path: its segments, and whether it named a collection (ended in `/`).
_Resolved = tuple[tuple[str, ...], bool]


def _files_path(config: Config, user: str, root: str, mode: str, raw: str) -> _Resolved | None:
    """The backend path `raw` resolves to in `user`'s tree `root`, or None when it is outside."""
    resolved = decoded_path(raw.partition("?")[0])
    if resolved is None:
        return None
    segments, collection = resolved
    if mode == "rooted":
        return (root, FILES_FOLDER, *segments), collection
    if len(segments) < 2 or segments[1] != FILES_FOLDER:  # / and /<root> are nobody's files
        return None
    if config.files_owners.get(segments[0]) != user or segments[0] != root:
        return None
    return segments, collection


def decoded_path(raw: str) -> _Resolved | None:
    """The segments of the absolute path `raw` (no query), each percent-decoded once as UTF-8,
    `.` and `..` resolved and empty segments dropped, and whether it names a collection; None
    when it is not a clean path (see `files_access`)."""
    if not raw.startswith("/") or "#" in raw:
        return None
    try:
        parts = raw.encode("latin-1").split(b"/")[1:]
    except UnicodeEncodeError:  # not a header value as http.server reads one
        return None
    segments: list[str] = []
    collection = False
    for part in parts:
        segment = _percent_decoded(part)
        if segment is None or "/" in segment or "\\" in segment or CONTROL.search(segment):
            return None
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
        collection = segment in ("", ".", "..")  # the last one says
    return tuple(segments), collection


_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _percent_decoded(part: bytes) -> str | None:
    """`part` with each %XX decoded once, as UTF-8; None when a `%` starts no escape or the
    bytes are not UTF-8."""
    if part.count(b"%") != len(_ESCAPE.findall(part)):
        return None
    try:
        return _ESCAPE.sub(lambda match: bytes.fromhex(match[1].decode()), part).decode()
    except UnicodeDecodeError:
        return None


def _destination_target(raw: str, host: str | None) -> str | None:
    """The path and query of a Destination (RFC 4918 §10.3: an absolute URI, or an absolute
    path), when it names this server: https, and `host` (or `host:443`) without user info."""
    if raw.startswith("/"):
        return None if raw.startswith("//") else raw  # `//x/...` names a host, not a path
    scheme, separator, rest = raw.partition("://")
    if not separator or scheme.lower() != "https" or not host:
        return None
    end = min((rest.find(mark) for mark in "/?#" if mark in rest), default=len(rest))
    authority, target = rest[:end].lower(), rest[end:]
    if authority not in (host.lower(), f"{host.lower()}:443") or not target.startswith("/"):
        return None
    return target


def _is_tree_top(path: _Resolved) -> bool:
    return len(path[0]) == 2


def _encoded(path: _Resolved) -> str:
    segments, collection = path
    text = "/" + "/".join(segments) + ("/" if collection and segments else "")
    return urllib.parse.quote(text, safe="/")


# --- quotas: one count of usage for WebDAV and FTP -------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What a tree holds, counted as pure-ftpd counts it (src/pure-quotacheck.c: traverse;
    ftpd.c: domkd adds one per folder): `files` is its regular files and folders, `size` the
    regular files' bytes."""

    files: int
    size: int


def tree_usage(path: str | os.PathLike[str]) -> Usage:
    """The usage of the tree at `path` (an account's chroot `<files_dir>/<root>`), for its
    quota over WebDAV and FTP alike: every regular file and folder below it, symbolic links
    neither followed nor counted, and at the top pure-ftpd's `.ftpquota` (and our temporary
    copies of it) left out, as pure-quotacheck leaves it out. A missing tree holds nothing."""
    return _usage(path, quota_file_at_top=True)


def _usage(path: str | os.PathLike[str], quota_file_at_top: bool) -> Usage:
    """`tree_usage`, or with `quota_file_at_top` False the plain count of a folder inside a
    tree (a `.ftpquota` there is a user's file like any)."""
    files = size = 0
    pending = [(os.fspath(path), quota_file_at_top)]
    while pending:
        directory, top = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if top and entry.name == QUOTA_FILE:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        files += 1
                        pending.append((entry.path, False))
                    elif entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                            size += entry.stat(follow_symlinks=False).st_size
                            files += 1
        except (FileNotFoundError, NotADirectoryError):  # not there (any more): holds nothing
            continue
    return Usage(files, size)


def _on_disk(files_dir: str, path: _Resolved) -> Path:
    """Where a backend path is kept: `/<root>/files/x` in `<files_dir>/<root>/<root>/files/x`
    (the account's FTP chroot holds its tree)."""
    segments = path[0]
    return Path(files_dir, segments[0], *segments)


def _stored_bytes(path: Path, folders: bool) -> int:
    """The bytes kept at `path`: a regular file's size, a folder's files' when `folders`, else
    (nothing there, a link, a folder when not `folders`) none."""
    try:
        status = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return 0
    if stat.S_ISREG(status.st_mode):
        return status.st_size
    if folders and stat.S_ISDIR(status.st_mode):
        return _usage(path, quota_file_at_top=False).size
    return 0


def declared_length(content_length: str | None, expected_entity_length: str | None) -> int | None:
    """The length a request body declares: nginx's $content_length (X-Content-Length, empty for
    a chunked body), else macOS Finder's X-Expected-Entity-Length, else None."""
    for value in (content_length, expected_entity_length):
        if value and DECLARED_LENGTH.fullmatch(value):
            return int(value)
    return None


def quota_refusal(
    config: Config, decision: FilesDecision, method: str, length: int | None, overwrite: bool
) -> str | None:
    """Why a request `files_access` allowed would take its tree past its quota (`quota`, or
    `length-required` for a PUT declaring no `length`), or None when it fits or there is no
    quota. Only what adds bytes is counted: a PUT its length less the file it replaces, a COPY
    its source's bytes (a file, or a folder's files) less what it overwrites (unless Overwrite
    is F: `overwrite`). Usage plus that may reach the quota, as in pure-ftpd (ftpd.c: dostor),
    not pass it. MKCOL is never refused: a folder holds no bytes, and pure-ftpd's size quota
    lets MKD through too. MOVE, DELETE, PROPPATCH, LOCK and reads add nothing."""
    local = decision.user.partition("@")[0]
    quota = config.files_quotas.get(local)
    verb = method.upper()
    if quota is None or config.files_dir is None or verb not in ("PUT", "COPY"):
        return None
    source = _on_disk(config.files_dir, decision.resolved)
    if verb == "PUT":
        if length is None:
            return "length-required"
        needed = length - _stored_bytes(source, folders=False)
    else:
        replaced = decision.resolved_destination if overwrite else None
        needed = _stored_bytes(source, folders=True) - (
            0 if replaced is None else _stored_bytes(_on_disk(config.files_dir, replaced), True)
        )
    usage = tree_usage(Path(config.files_dir, config.files_roots[local]))
    return None if usage.size + needed <= quota else "quota"


# --- untrusted content on its own origin ------------------------------------------------------


def tree_root(backend_path: str) -> str:
    """The tree a backend path (`/<root>/files/...`, as `FilesDecision.path` spells it) is in:
    the backend serves that tree alone (X-Bulwark-Root)."""
    return urllib.parse.unquote(backend_path.split("/")[1])


def _content_mac(key: bytes, backend_path: str, expires: int | str) -> str:
    """The MAC of a content link: HMAC-SHA256 over the expiry and the backend path (as
    `FilesDecision.path` spells it), base64url without padding."""
    digest = hmac.new(key, f"{expires}\n{backend_path}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def content_link(key: bytes, origin: str, backend_path: str, expires: int) -> str:
    """The link serving `backend_path` on `origin` until the Unix time `expires`, to anyone
    holding it: `https://<origin>/<expires>/<mac>/<root>/files/<rest>`."""
    return f"https://{origin}/{expires}/{_content_mac(key, backend_path, expires)}{backend_path}"


def content_target(key: bytes, raw_uri: str, now: float) -> str | None:
    """The backend path a content link (the request target on the content origin, as nginx's
    $request_uri) names, or None when it is malformed, was not made with `key`, or has expired
    by `now`."""
    return _content_check(key, raw_uri, now)[0]


def _content_check(key: bytes, raw_uri: str, now: float) -> tuple[str | None, str]:
    """`content_target`, and why not: (backend path, `ok`) or (None, `expired` or `invalid`).
    The MAC is checked before the expiry (a forged link is invalid, whatever its time), and the
    path must be a file below some `/<root>/files/`, spelled as files_access spells it: no
    collection, no `.` or `..`, nothing decoded differently."""
    parts = raw_uri.partition("?")[0].split("/", 3)
    if len(parts) != 4 or parts[0] or not LINK_EXPIRES.fullmatch(parts[1]):
        return None, "invalid"
    expires, mac, backend_path = parts[1], parts[2], f"/{parts[3]}"
    if not LINK_MAC.fullmatch(mac) or not hmac.compare_digest(
        mac.encode(), _content_mac(key, backend_path, expires).encode()
    ):
        return None, "invalid"
    resolved = decoded_path(backend_path)
    if (
        resolved is None
        or resolved[1]
        or len(resolved[0]) < 3
        or resolved[0][1] != FILES_FOLDER
        or _encoded(resolved) != backend_path
    ):
        return None, "invalid"
    if int(expires) <= now:
        return None, "expired"
    return backend_path, "ok"


def navigation_link(
    config: Config,
    key: bytes | None,
    decision: FilesDecision,
    method: str,
    fetch_destination: str | None,
    now: float,
) -> str | None:
    """The content link to send a browser to instead of showing it the file `decision` allows
    on the files origin, or None to serve it there: only with a content origin and key, for a
    GET or HEAD the browser will show as a page or frame (`fetch_destination`, its
    Sec-Fetch-Dest), of a file (not a collection, nor a folder on disk). Other fetches (an
    image, a script, a WebDAV client, which sends no Sec-Fetch-Dest) are served as before."""
    if (
        key is None
        or config.content_origin is None
        or method not in READING_METHODS
        or fetch_destination not in DOCUMENT_DESTINATIONS
        or decision.resolved[1]
        or _is_tree_top(decision.resolved)
    ):
        return None
    if config.files_dir is not None and _on_disk(config.files_dir, decision.resolved).is_dir():
        return None
    expires = int(now) + config.content_link_seconds
    return content_link(key, config.content_origin, decision.path, expires)


# --- RFC 4331's quota properties, which Apache's mod_dav_fs answers 404 -------------------------

# Rewritten answers spell DAV: as Apache does (D:), where ElementTree would make up ns0. Its
# prefixes are the process's: this one, and the standard library's (nothing else is imported
# here to register one; radicale, for one, takes "" for DAV:).
ET.register_namespace("D", DAV)


def asks_for_quota(body: bytes) -> bool:
    """Whether a PROPFIND's `body` names DAV:quota-available-bytes or DAV:quota-used-bytes in its
    DAV:prop. An empty body or allprop never does (RFC 4331 leaves them out of allprop); one
    that is not XML names nothing (Apache refuses it). The body is the client's: at most
    MAX_PROPFIND_BODY, and expat (2.4.1 and later) limits entity expansion and reads no external
    entity."""
    try:
        propfind = ET.fromstring(body) if body.strip() else None  # noqa: S314 - see above
    except ET.ParseError:
        return False
    if propfind is None or propfind.tag != f"{{{DAV}}}propfind":
        return False
    wanted = {QUOTA_AVAILABLE, QUOTA_USED}
    return any(name.tag in wanted for prop in propfind.findall(f"{{{DAV}}}prop") for name in prop)


def with_quota(multistatus: bytes, quota: int, used: int) -> bytes:
    """Apache's 207 answer to a PROPFIND asking for RFC 4331's properties, with them found: in
    each response, those in a 404 propstat (dropped once empty) move to its 200 one (a new one
    if it has none) with their values, `used` bytes and what the `quota` leaves (never below
    0). Everything else stays, re-serialised: the same elements in the same namespaces,
    prefixes aside. Raises ET.ParseError when Apache's answer is not XML."""
    root = ET.fromstring(multistatus)  # noqa: S314 - Apache's own answer
    values = {QUOTA_USED: used, QUOTA_AVAILABLE: max(0, quota - used)}
    for response in root.findall(f"{{{DAV}}}response"):
        propstats = response.findall(f"{{{DAV}}}propstat")
        if not propstats:  # a resource answered with a status alone
            continue
        place = list(response).index(propstats[0])
        found: list[str] = []
        for propstat in propstats:
            prop = propstat.find(f"{{{DAV}}}prop")
            if prop is None or _propstat_code(propstat) != "404":
                continue
            for name in [name for name in prop if name.tag in values]:
                prop.remove(name)
                found.append(name.tag)
            if len(prop) == 0:
                response.remove(propstat)
        if found:
            prop = _found_prop(response, place)
            for tag in dict.fromkeys(found):
                ET.SubElement(prop, tag).text = str(values[tag])
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _propstat_code(propstat: ET.Element) -> str:
    """The status code of a propstat (`HTTP/1.1 404 Not Found`: `404`), empty without one."""
    words = (propstat.findtext(f"{{{DAV}}}status") or "").split()
    return words[1] if len(words) > 1 else ""


def _found_prop(response: ET.Element, place: int) -> ET.Element:
    """The DAV:prop of `response`'s 200 propstat, made at `place` when it has none."""
    for propstat in response.findall(f"{{{DAV}}}propstat"):
        prop = propstat.find(f"{{{DAV}}}prop")
        if prop is not None and _propstat_code(propstat) == "200":
            return prop
    propstat = ET.Element(f"{{{DAV}}}propstat")
    prop = ET.SubElement(propstat, f"{{{DAV}}}prop")
    ET.SubElement(propstat, f"{{{DAV}}}status").text = "HTTP/1.1 200 OK"
    response.insert(place, propstat)
    return prop


def backend_target(target: str) -> str:
    """A request target as http.server read it (each byte one ISO-8859-1 character), for
    http.client, which sends ASCII alone: each byte outside printable ASCII percent-encoded
    (nginx passes a client's raw UTF-8 on; Apache decodes either spelling to the same path)."""
    return re.sub(r"[^\x21-\x7e]", lambda byte: f"%{ord(byte[0]):02X}", target)


def passed_headers(message: http.client.HTTPMessage, *dropped: str) -> list[tuple[str, str]]:
    """The headers of Apache's answer to pass on: all but the hop-by-hop ones (HOP_BY_HOP and
    those its Connection header names) and `dropped` (lower case)."""
    named = {
        token.strip().lower()
        for value in message.get_all("Connection", [])
        for token in value.split(",")
    }
    skipped = HOP_BY_HOP | named | set(dropped)
    return [(name, value) for name, value in message.items() if name.lower() not in skipped]


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


def refusal_line(
    address: str | None, principal: str, raw_uri: str, reason: str | None = None
) -> str:
    """The log line of a files request refused after a good login, by `files_access` or, with
    its `reason`, by `quota_refusal`: not a failed login (banwatch does not count it), the path
    the client chose last."""
    user = repr(principal)[:MAX_LOGGED]
    why = "" if reason is None else f" reason={reason}"
    path = repr(raw_uri)[:MAX_LOGGED]
    return f"files refused: rip={_address(address)}{why} user={user} path={path}"


def content_refusal_line(address: str | None, reason: str) -> str:
    """The log line of a content link refused (`expired`, `invalid`, or `method` for one asked
    to do more than read): no login was tried, so banwatch does not count it."""
    return f"content refused: rip={_address(address)} reason={reason}"


def _address(text: str | None) -> str:
    """`text` if it is an IP address without a scope (free text), else `-`; an IPv4 address
    mapped into IPv6 (`::ffff:198.51.100.200`, from a dual-stack socket) as IPv4."""
    try:
        address = ipaddress.ip_address(text) if text and "%" not in text else None
    except ValueError:
        return "-"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return "-" if address is None else str(address)


def log(line: str) -> None:
    """One line to stderr, which systemd sends to the journal."""
    print(line, file=sys.stderr, flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    """One auth_request subrequest: any method and path, the answer in the status and headers;
    or a files PROPFIND nginx passes on (no realm, a tree in X-Bulwark-Root), for Apache."""

    server: Server
    timeout = 30  # a connection that sends nothing does not keep its thread

    def __getattr__(self, name: str) -> Callable[[], None]:
        """http.server calls do_<METHOD>: every method gets the same answer."""
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def answer(self) -> None:
        if (
            self.command == "PROPFIND"
            and "X-Bulwark-Realm" not in self.headers
            and "X-Bulwark-Root" in self.headers
        ):
            self._propfind()
            return
        realm = self.headers.get("X-Bulwark-Realm", "")
        if not REALM.fullmatch(realm):
            log(f"misconfigured: X-Bulwark-Realm missing or not a name: {realm!r:.{MAX_LOGGED}}")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        if realm == CONTENT_REALM:  # the link is the permission: credentials are never read
            self._content()
            return
        mode = self.headers.get("X-Bulwark-Files-Mode", "")
        if realm == FILES_REALM and (
            mode not in FILES_MODES
            or not self.headers.get("X-Original-URI")
            or not self.headers.get("X-Original-Method")
        ):
            log(
                "misconfigured: realm files needs X-Bulwark-Files-Mode (tree or rooted), "
                "X-Original-URI and X-Original-Method"
            )
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        authorization = self.headers.get("Authorization")
        credentials = basic_credentials(authorization) if authorization else None
        name = self.server.checker(realm, *credentials) if credentials else None
        if name is not None and realm == FILES_REALM:
            self._files(name, mode)
            return
        if name is not None:
            self._reply(HTTPStatus.OK, ("X-Bulwark-User", name))
            return
        if credentials:  # clients first ask without credentials: that is no failed login
            log(failure_line(self.headers.get("X-Real-IP"), realm, credentials[0]))
        challenge = f'Basic realm="{realm}", charset="UTF-8"'
        self._reply(HTTPStatus.UNAUTHORIZED, ("WWW-Authenticate", challenge))

    def _files(self, name: str, mode: str) -> None:
        """200 with the backend path (and destination) for a request `name` may make, else 403
        with the reason in X-Bulwark-Refusal (auth_request passes both on)."""
        config = self.server.checker.config
        uri = self.headers["X-Original-URI"]
        method = self.headers["X-Original-Method"]
        address = self.headers.get("X-Real-IP")
        decision = files_access(
            config,
            name,
            mode,
            method,
            uri,
            self.headers.get("X-Destination") or None,  # nginx sends no header for no value
            self.headers.get("X-Original-Host"),
        )
        if decision is None:
            log(refusal_line(address, name, uri))
            self._refuse("forbidden")
            return
        length = declared_length(
            self.headers.get("X-Content-Length"), self.headers.get("X-Expected-Entity-Length")
        )
        overwrite = self.headers.get("X-Overwrite", "T") == "T"  # mod_dav knows T and F alone
        try:
            refusal = quota_refusal(config, decision, method, length, overwrite)
        except OSError as error:  # the tree cannot be counted: never guess it fits
            self._uncounted(name, error)
            return
        if refusal is not None:
            log(refusal_line(address, name, uri, refusal))
            self._refuse(refusal)
            return
        link = navigation_link(
            config,
            self.server.content_key,
            decision,
            method,
            self.headers.get("X-Fetch-Dest"),
            time.time(),
        )
        if link is not None:
            self._refuse("content", ("X-Bulwark-Location", link))
            return
        headers = [
            ("X-Bulwark-User", decision.user),
            ("X-Bulwark-Root", tree_root(decision.path)),
            ("X-Bulwark-Backend-Path", decision.path),
        ]
        if decision.destination is not None:
            headers.append(("X-Bulwark-Backend-Destination", decision.destination))
        self._reply(HTTPStatus.OK, *headers)

    def _content(self) -> None:
        """200 with the backend path a valid, unexpired content link names, for GET and HEAD;
        else 403, logged."""
        key = self.server.content_key
        uri = self.headers.get("X-Original-URI")
        method = self.headers.get("X-Original-Method")
        if key is None or not uri or not method:
            log(
                "misconfigured: realm content needs a content key (--content-key), "
                "X-Original-URI and X-Original-Method"
            )
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        target, reason = _content_check(key, uri, time.time())
        if target is not None and method not in READING_METHODS:
            target, reason = None, "method"
        if target is None:
            log(content_refusal_line(self.headers.get("X-Real-IP"), reason))
            self._refuse("forbidden")
            return
        self._reply(
            HTTPStatus.OK, ("X-Bulwark-Root", tree_root(target)), ("X-Bulwark-Backend-Path", target)
        )

    def _propfind(self) -> None:
        """A files PROPFIND nginx has authorised, to Apache and back: RFC 4331's properties
        found (`with_quota`, the tree counted once) when it names them and the tree has a
        quota, else Apache's answer as it is. Apache failing is a 502, logged."""
        body = self._propfind_body()
        if body is None:
            return
        config = self.server.checker.config
        backend = self.server.backend
        user = config.files_owners.get(self.headers["X-Bulwark-Root"])
        if backend is None or user is None:
            log(
                "misconfigured: a PROPFIND to pass on needs --backend, and X-Bulwark-Root naming "
                "a tree of files_roots"
            )
            self._reply(HTTPStatus.BAD_GATEWAY)
            return
        quota = config.files_quotas.get(user)
        counted = quota is not None and config.files_dir is not None and asks_for_quota(body)
        headers = {name: self.headers[name] for name in PROPFIND_HEADERS if name in self.headers}
        with contextlib.closing(
            http.client.HTTPConnection(*backend, timeout=BACKEND_TIMEOUT)
        ) as connection:
            try:
                connection.request("PROPFIND", backend_target(self.path), body, headers)
                answer = connection.getresponse()
                # Read whole to be rewritten: one folder's listing at most (mod_dav refuses
                # Depth infinity unless told otherwise).
                rewritten = counted and answer.status == HTTPStatus.MULTI_STATUS
                multistatus = answer.read() if rewritten else None
            except (OSError, http.client.HTTPException) as error:
                log(f"backend: PROPFIND to {backend[0]}:{backend[1]} failed: {error!r}")
                self._reply(HTTPStatus.BAD_GATEWAY)
                return
            if multistatus is None:
                self._relay(answer)
                return
        try:
            usage = tree_usage(Path(config.files_dir, config.files_roots[user]))
        except OSError as error:
            self._uncounted(user, error)
            return
        try:
            multistatus = with_quota(multistatus, quota, usage.size)
        except ET.ParseError as error:
            log(f"backend: Apache's answer to a PROPFIND is not XML: {error}")
            self._reply(HTTPStatus.BAD_GATEWAY)
            return
        self.send_response_only(answer.status, answer.reason)
        for name, value in passed_headers(answer.msg, "content-length"):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(multistatus)))
        self.end_headers()
        self.wfile.write(multistatus)

    def _propfind_body(self) -> bytes | None:
        """The body of a PROPFIND to pass on, or None once answered: 411 for a chunked one
        (nginx passes it on as the client sent it), 413 past MAX_PROPFIND_BODY, 400 for a
        Content-Length that is no number; nothing when nginx went away before its end. No
        length is no body."""
        length = self.headers.get("Content-Length", "0")
        if "Transfer-Encoding" in self.headers:
            self._refuse_unread(HTTPStatus.LENGTH_REQUIRED)
        elif not DECLARED_LENGTH.fullmatch(length):
            self._refuse_unread(HTTPStatus.BAD_REQUEST)
        elif int(length) > MAX_PROPFIND_BODY:
            self._refuse_unread(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        else:
            body = self.rfile.read(int(length))
            return body if len(body) == int(length) else None
        return None

    def _refuse_unread(self, status: HTTPStatus) -> None:
        """`status` for a body left unread, then what nginx still sends of it read and dropped
        until nginx, answered, closes (LINGER_SECONDS at most, as Apache's lingering close):
        closed under it, nginx would fail to send the body and answer 502 instead."""
        self._reply(status)
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(LINGER_SECONDS)
        deadline = time.monotonic() + LINGER_SECONDS
        with contextlib.suppress(OSError):
            while self.connection.recv(RELAY_CHUNK) and time.monotonic() < deadline:
                continue

    def _relay(self, answer: http.client.HTTPResponse) -> None:
        """Apache's answer as it is, streamed in HTTP/1.1 chunks: should Apache break off, the
        missing last chunk tells nginx the answer is cut, where the end of an HTTP/1.0 body
        would look like its end."""
        self.protocol_version = "HTTP/1.1"
        self.send_response_only(answer.status, answer.reason)
        for name, value in passed_headers(answer.msg, "content-length"):
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while chunk := answer.read1(RELAY_CHUNK):
                self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException) as error:
            log(f"backend: the answer to a PROPFIND was cut short: {error!r}")

    def _uncounted(self, name: str, error: OSError) -> None:
        """500 for a tree that cannot be counted: a quota is never guessed."""
        log(f"misconfigured: cannot count the files of {name!r:.{MAX_LOGGED}}: {error.strerror}")
        self._reply(HTTPStatus.INTERNAL_SERVER_ERROR)

    def _refuse(self, reason: str, *headers: tuple[str, str]) -> None:
        """403 saying why: auth_request passes a 403 on, but would turn any other refusal into a
        500."""
        self._reply(HTTPStatus.FORBIDDEN, ("X-Bulwark-Refusal", reason), *headers)

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


# --- FTP: pure-ftpd's extauth protocol -------------------------------------------------------
#
# pure-ftpd 1.0.50 (`-l extauth:SOCKET`, src/log_extauth.c and log_extauth.h) connects for each
# PASS, writes `account:`, `password:`, `localhost:`, `localport:`, `peer:`, `sni_name:` and
# `encrypted:` lines (encrypted: 1 when the control connection is TLS), then `end`; it reads the
# reply until the connection closes and takes the lines it knows by prefix: `auth_ok:` (1 yes,
# 0 ask the next method, -1 no), `uid:`, `gid:`, `dir:` (`/./` marks the chroot),
# `user_quota_size:` (bytes: callback_reply_user_quota_size takes strtoull's number as it is,
# where LDAP, MySQL, PostgreSQL and the -n option count megabytes), `end`. Without `end`, or
# with auth_ok 1 and no uid, gid (both above 0) or dir, it refuses the login.
#
# Under a quota, pure-ftpd keeps the chroot's usage in its `/.ftpquota` and never counts it
# itself (src/quotas.c: quota_update opens it O_NOFOLLOW, reads `<files> <bytes>` as two
# decimal numbers split at the first space, adds each upload, folder and deletion, and writes
# it back as "%llu %llu\n"; a missing or empty file is 0 0). pure-quotacheck recounts it
# (src/pure-quotacheck.c: traverse): folders and regular files, `.ftpquota` left out, sizes in
# bytes.

FTP_REFUSED = b"auth_ok:-1\nend\n"


def read_extauth(stream: Any) -> dict[str, bytes] | None:
    """pure-ftpd's request, `key:value` lines up to `end`, from the binary file `stream`; None
    when it is not one (a line without a colon, a key twice, too long, or no `end`)."""
    fields: dict[str, bytes] = {}
    size = 0
    while True:
        line = stream.readline(MAX_FTP_REQUEST + 1)
        size += len(line)
        if not line.endswith(b"\n") or size > MAX_FTP_REQUEST:
            return None
        if line == b"end\n":
            return fields
        key, colon, value = line[:-1].partition(b":")
        name = key.decode("latin-1")
        if not colon or name in fields:
            return None
        fields[name] = value


def write_ftp_quota(chroot: Path, usage: Usage) -> None:
    """Write `usage` into the chroot's `.ftpquota` as pure-ftpd 1.0.50 does (quotas.c:
    quota_update: in place, "%llu %llu\n", files then bytes, under an fcntl write lock on the
    whole file), so neither of us loses the other's update. In place: the chroot's top is
    root's, which keeps sessions from writing beside their files; the deploy creates the file,
    owned by the files' owner (a symbolic link there is refused, never followed)."""
    descriptor = os.open(chroot / QUOTA_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{usage.files} {usage.size}\n".encode("ascii"), 0)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)  # releases the lock


def ftp_login(checker: Checker, request: Mapping[str, bytes]) -> tuple[bytes, str | None]:
    """The reply to pure-ftpd's request, and the line to log, if any. Logins are checked as
    HTTP ones (realm `ftp`, the same cache; book logins are no account), over TLS only; the
    session is chrooted to `<files_dir>/<root>/`, which holds `<root>/files/`. Under a quota
    the chroot's usage is counted afresh into its `.ftpquota` first (pure-ftpd only adds to
    what it finds there, and WebDAV changes the tree too), or the login is refused."""
    config = checker.config
    if not {"account", "password", "peer", "encrypted"} <= request.keys():
        return FTP_REFUSED, "misconfigured: pure-ftpd's extauth request lacks a field"
    peer = _address(request["peer"].decode("latin-1"))
    try:
        account = request["account"].decode()
        password = request["password"].decode()
    except UnicodeDecodeError:
        account = request["account"].decode(errors="backslashreplace")
        return FTP_REFUSED, failure_line(peer, FTP_REALM, account)
    if request["encrypted"] != b"1":  # pure-ftpd requires TLS too: this never happens
        return FTP_REFUSED, f"ftp refused: rip={peer} reason=no-tls user={account!r:.{MAX_LOGGED}}"
    name = checker(FTP_REALM, account, password)
    if name is None:
        return FTP_REFUSED, failure_line(peer, FTP_REALM, account)
    local = name.partition("@")[0]
    root = config.files_roots.get(local)
    if "+" in local or root is None:
        return FTP_REFUSED, f"ftp refused: rip={peer} reason=no-files user={name!r:.{MAX_LOGGED}}"
    reply = (
        f"auth_ok:1\nuid:{config.files_uid}\ngid:{config.files_gid}\n"
        f"dir:{config.files_dir}/{root}/./\n"
    )
    quota = config.files_quotas.get(local)
    if quota is not None:
        chroot = Path(f"{config.files_dir}/{root}")  # as the reply's dir: names it
        try:
            write_ftp_quota(chroot, tree_usage(chroot))
        except OSError as error:
            if error.errno == errno.EROFS:  # a read-only replica: no upload to count
                return f"{reply}end\n".encode(), None
            return FTP_REFUSED, (
                f"ftp refused: rip={peer} reason=quota-file error={error.strerror!r} "
                f"user={name!r:.{MAX_LOGGED}}"
            )
        reply += f"user_quota_size:{quota}\n"
    return f"{reply}end\n".encode(), None


class FtpHandler(socketserver.StreamRequestHandler):
    """One pure-ftpd login: its request, our reply, then the connection closes (pure-ftpd reads
    to the end)."""

    server: FtpServer
    timeout = 30

    def handle(self) -> None:
        try:
            request = read_extauth(self.rfile)
            if request is None:
                reply, line = FTP_REFUSED, "misconfigured: not a pure-ftpd extauth request"
            else:
                reply, line = ftp_login(self.server.checker, request)
            if line is not None:
                log(line)
            self.wfile.write(reply)
        except OSError:  # pure-ftpd went away or sent nothing: nobody to answer
            return


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per connection, on a socket already listening: an Argon2 check in one does not
    hold up the requests whose checks are cached."""

    daemon_threads = True

    def __init__(
        self,
        listening: socket.socket,
        checker: Checker,
        handler: type[socketserver.BaseRequestHandler],
    ):
        super().__init__(listening.getsockname(), handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening
        self.checker = checker


class Server(UnixServer):
    """nginx's auth_request subrequests (HTTP), with the content links' key, if any; and the
    files PROPFIND requests it passes on to Apache at `backend` (address, port), if any."""

    def __init__(
        self,
        listening: socket.socket,
        checker: Checker,
        content_key: bytes | None = None,
        backend: tuple[str, int] | None = None,
    ):
        super().__init__(listening, checker, Handler)
        self.content_key = content_key
        self.backend = backend


class FtpServer(UnixServer):
    """pure-ftpd's extauth requests."""

    def __init__(self, listening: socket.socket, checker: Checker):
        super().__init__(listening, checker, FtpHandler)


class Daemon:
    """The HTTP server and, when asked for, the FTP one: one checker, one cache."""

    def __init__(self, http: Server, ftp: FtpServer | None = None):
        self.http = http
        self.ftp = ftp
        self._ftp_thread: threading.Thread | None = None

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve FTP in a thread and HTTP in this one, until shutdown()."""
        if self.ftp is not None and self._ftp_thread is None:
            self._ftp_thread = threading.Thread(
                target=self.ftp.serve_forever, args=(poll_interval,), daemon=True
            )
            self._ftp_thread.start()
        self.http.serve_forever(poll_interval)

    def shutdown(self) -> None:
        """Stop serving (from another thread than serve_forever's)."""
        self.http.shutdown()
        if self.ftp is not None and self._ftp_thread is not None:
            self.ftp.shutdown()
            self._ftp_thread.join()

    def server_close(self) -> None:
        self.http.server_close()
        if self.ftp is not None:
            self.ftp.server_close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server_close()


# The sockets systemd may pass, by FileDescriptorName=.
SOCKET_NAMES = ("http", "ftp")


def activated_fds(environ: Mapping[str, str], pid: int) -> dict[str, int]:
    """The sockets systemd passed (sd_listen_fds(3)): name -> file descriptor. A single socket
    is the HTTP one whatever its name (systemd names it after its unit unless told); two must be
    named `http` and `ftp` (FileDescriptorName=, in LISTEN_FDNAMES)."""
    if environ.get("LISTEN_PID") != str(pid):
        return {}
    count = environ.get("LISTEN_FDS")
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    if count == "1" and names != ["ftp"]:
        return {"http": SD_LISTEN_FDS_START}
    if count == "2" and sorted(names) == sorted(SOCKET_NAMES):
        return {name: SD_LISTEN_FDS_START + index for index, name in enumerate(names)}
    raise StartupError(
        "systemd must pass one socket (HTTP) or two named http and ftp "
        "(LISTEN_FDS, LISTEN_FDNAMES: FileDescriptorName=)"
    )


def listening_socket(path: Path | None, name: str = "http") -> socket.socket:
    """systemd's socket `name` when it passed one (socket activation), else a new one at
    `path`."""
    fds = activated_fds(os.environ, os.getpid())
    if name in fds:
        listening = socket.socket(fileno=fds[name])
        if (listening.family, listening.type) != (socket.AF_UNIX, socket.SOCK_STREAM):
            raise StartupError(f"systemd passed a {name} socket that is not a Unix stream socket")
        return listening
    if path is None:
        option = "--socket" if name == "http" else f"--{name}-socket"
        raise StartupError(
            f"no {name} socket: start through systemd socket activation or give {option}"
        )
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


def _backend(text: str) -> tuple[str, int]:
    """`ADDRESS:PORT`, an IPv4 address: the checker resolves no name (it has no network of its
    own but Apache's)."""
    address, _, port = text.rpartition(":")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address and port: {text}") from None
    if not (port.isdigit() and 0 < int(port) < 2**16):
        raise argparse.ArgumentTypeError(f"not an IPv4 address and port: {text}")
    return address, int(port)


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bulwark-webauth", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--accounts", type=Path, help="the accounts file (default $CREDENTIALS_DIRECTORY/accounts)"
    )
    parser.add_argument("--socket", type=Path, help="listen here if systemd passes no socket")
    parser.add_argument(
        "--ftp-socket",
        type=Path,
        help="answer pure-ftpd (extauth) here if systemd passes no socket named ftp",
    )
    parser.add_argument(
        "--cache-seconds", type=_seconds, default=60.0, help="remember a good login this long"
    )
    parser.add_argument(
        "--files",
        action="store_true",
        help="this is the files role's checker: the accounts file must name files_dir, and "
        "a content_origin needs the content key",
    )
    parser.add_argument(
        "--backend",
        type=_backend,
        help="pass files PROPFIND requests on to Apache at this ADDRESS:PORT, adding RFC 4331's "
        "quota properties",
    )
    parser.add_argument(
        "--content-key",
        type=Path,
        help="the content links' HMAC key, at least 32 bytes "
        "(default $CREDENTIALS_DIRECTORY/content-key when there is one)",
    )
    return parser.parse_args(argv)


def load_content_key(path: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The content links' key from `path` (--content-key), else from the systemd credential
    `content-key` when there is one, else None (no links). Errors name the file, never the
    key."""
    if path is None:
        credentials = environ.get("CREDENTIALS_DIRECTORY")
        path = Path(credentials, "content-key") if credentials else None
        if path is None or not path.exists():
            return None
    try:
        key = path.read_bytes()
    except OSError as error:
        raise StartupError(f"{path}: cannot read: {error.strerror}") from None
    if len(key) < MIN_CONTENT_KEY:
        raise StartupError(f"{path}: a content key needs at least {MIN_CONTENT_KEY} bytes")
    return key


def build_server(argv: Sequence[str]) -> Daemon:
    """Everything main() does before serving: options, accounts file, content key,
    sockets."""
    options = _arguments(argv)
    path = options.accounts
    if path is None:
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if not credentials:
            raise StartupError("no accounts file: give --accounts or LoadCredential=accounts:...")
        path = Path(credentials, "accounts")
    config = load_config(path)
    content_key = load_content_key(options.content_key, os.environ)
    if options.files and config.content_origin is not None and content_key is None:
        raise StartupError(
            f"{path}: field 'content_origin' needs a content key "
            "(--content-key, or the credential content-key)"
        )
    ftp = options.ftp_socket is not None or "ftp" in activated_fds(os.environ, os.getpid())
    if (options.files or ftp) and config.files_dir is None:
        raise StartupError(f"{path}: missing field 'files_dir' (files and FTP need it)")
    if ftp and config.files_uid is None:
        # The files role's checker runs as the files' owner: FTP sessions run as it too.
        if os.getuid() == 0 or os.getgid() == 0:
            raise StartupError(f"{path}: no files_uid and files_gid, and FTP never runs as root")
        config = replace(config, files_uid=os.getuid(), files_gid=os.getgid())
    checker = Checker(config, Cache(options.cache_seconds))
    http = Server(listening_socket(options.socket), checker, content_key, options.backend)
    if not ftp:
        return Daemon(http)
    try:
        return Daemon(http, FtpServer(listening_socket(options.ftp_socket, "ftp"), checker))
    except StartupError:
        http.server_close()
        raise


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
