"""The web hosts' credential checker (bulwark/webauth.py): how logins are spelled, real Argon2
hashes, the cache of successes, the accounts file, and the server answering nginx over a Unix
socket, with the failure line bulwark-banwatch counts; for files, which backend path a request
may reach (tables of traversal tricks), and pure-ftpd's extauth logins on a second socket;
quotas counted on real trees (WebDAV refusals, pure-ftpd's .ftpquota), and the signed, expiring
links that send browsers to the content origin."""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import http.client
import http.server
import io
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import argon2
import pytest

from bulwark import banwatch, webauth
from bulwark.webauth import (
    Cache,
    Checker,
    Config,
    FilesDecision,
    StartupError,
    check,
    files_access,
    principal,
)

# Test passwords, hashed in the `hashes` fixture; MAIN_PASSWORD's hash is never in the file.
APP_PASSWORD = "abcd-efgh-ijkl-mnop"  # noqa: S105
OTHER_APP_PASSWORD = "qrst-uvwx-yz01-2345"  # noqa: S105
MAIN_PASSWORD = "main-password-never-given"  # noqa: S105
ATTACKER = "198.51.100.200"
FILES_DIR = "/var/lib/bulwark/files"
FILES_ID = 2001


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    """Real Argon2id hashes, made cheap (1 pass, 8 KiB) so the unit tier stays fast."""
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    passwords = (APP_PASSWORD, OTHER_APP_PASSWORD, MAIN_PASSWORD)
    return {password: hasher.hash(password) for password in passwords}


def _accounts(hashes: dict[str, str]) -> dict:
    return {
        "domain": "example.net",
        "separators": ["#", "/", "="],
        "book_logins": ["Default", "Shared"],
        "book_realms": ["carddav"],
        "accounts": {
            "alice": [hashes[APP_PASSWORD], hashes[OTHER_APP_PASSWORD]],
            "bob": [hashes[OTHER_APP_PASSWORD]],
        },
        "files_roots": {"alice": "alice.example.net", "bob": "bob.example.net"},
        "files_dir": FILES_DIR,
        "files_uid": FILES_ID,
        "files_gid": FILES_ID,
    }


@pytest.fixture(scope="module")
def config(hashes, tmp_path_factory) -> Config:
    path = tmp_path_factory.mktemp("webauth") / "accounts"
    path.write_text(json.dumps(_accounts(hashes)))
    return webauth.load_config(path)


# --- logins ------------------------------------------------------------------------------------

PRINCIPALS = [
    ("caldav", "alice@example.net", "alice@example.net"),
    ("caldav", "alice#example.net", "alice@example.net"),
    ("caldav", "alice/example.net", "alice@example.net"),
    ("caldav", "alice=example.net", "alice@example.net"),
    ("caldav", "alice@EXAMPLE.Net", "alice@example.net"),
    ("caldav", "alice@example.org", None),
    ("caldav", "alice@sub.example.net", None),
    ("caldav", "alice", None),
    ("caldav", "alice@example.net@example.net", None),
    ("caldav", "alice#example.net@example.net", None),
    ("caldav", "Alice@example.net", None),
    ("caldav", "carol@example.net", None),
    ("caldav", "@example.net", None),
    ("caldav", "", None),
    ("carddav", "alice+Default@example.net", "alice+Default@example.net"),
    ("carddav", "bob+Shared#example.net", "bob+Shared@example.net"),
    ("caldav", "alice+Default@example.net", None),
    ("caldav", "alice+Shared@example.net", None),
    ("carddav", "alice+default@example.net", None),
    ("carddav", "alice+Foo@example.net", None),
    ("carddav", "alice+@example.net", None),
    ("carddav", "alice+Default+Shared@example.net", None),
    ("carddav", "carol+Default@example.net", None),
    ("carddav", "+Default@example.net", None),
]


@pytest.mark.parametrize(("realm", "login", "expected"), PRINCIPALS, ids=lambda v: str(v))
def test_a_login_names_one_principal_or_none(config, realm, login, expected):
    assert principal(config, realm, login) == expected


def test_app_passwords_log_in_and_other_passwords_do_not(config):
    assert check(config, "caldav", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    assert check(config, "caldav", "alice#example.net", OTHER_APP_PASSWORD) == "alice@example.net"
    assert check(config, "carddav", "bob+Shared@example.net", OTHER_APP_PASSWORD) == (
        "bob+Shared@example.net"
    )
    assert check(config, "caldav", "alice@example.net", "wrong") is None
    assert check(config, "caldav", "alice@example.net", "") is None
    assert check(config, "caldav", "alice@example.net", MAIN_PASSWORD) is None  # not in the file
    assert check(config, "caldav", "bob@example.net", APP_PASSWORD) is None  # alice's


def test_a_broken_hash_matches_nothing_and_the_next_hash_is_tried(config):
    broken = Config(
        config.domain,
        config.separators,
        config.book_logins,
        config.book_realms,
        {"alice": ("$argon2id$v=19$broken", *config.accounts["alice"])},
    )
    assert check(broken, "caldav", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    assert webauth.verify_argon2("$argon2id$v=19$broken", APP_PASSWORD) is False
    assert webauth.verify_argon2("not a hash", APP_PASSWORD) is False


def test_an_unknown_login_costs_no_hashing(config):
    calls = []
    refused = check(config, "caldav", "carol@example.net", "x", lambda *a: calls.append(a) or True)
    assert refused is None and calls == []


# --- the cache of successes --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingVerify:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, hashed: str, password: str) -> bool:
        self.calls += 1
        return webauth.verify_argon2(hashed, password)


@pytest.fixture
def cached(config):
    clock, verify = Clock(), CountingVerify()
    return Checker(config, Cache(60, clock), verify), clock, verify


def test_a_success_is_served_from_the_cache_until_it_expires(cached):
    checker, clock, verify = cached
    assert checker("caldav", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    first = verify.calls
    assert first >= 1
    clock.now += 59
    assert checker("caldav", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    assert verify.calls == first
    clock.now += 1
    assert checker("caldav", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    assert verify.calls == 2 * first


def test_the_cache_serves_only_the_same_realm_login_and_password(cached):
    checker, _, verify = cached
    assert checker("carddav", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    calls = verify.calls
    assert checker("carddav", "alice@example.net", "wrong") is None
    assert checker("carddav", "alice#example.net", APP_PASSWORD) == "alice@example.net"
    assert checker("caldav", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    assert verify.calls > calls + 3


def test_failures_are_never_cached(cached):
    checker, _, verify = cached
    assert checker("caldav", "alice@example.net", "wrong") is None
    calls = verify.calls
    assert checker("caldav", "alice@example.net", "wrong") is None
    assert verify.calls == 2 * calls


def test_the_cache_keeps_digests_not_passwords_and_stays_bounded():
    clock = Clock()
    cache = Cache(60, clock, size=2)
    keys = [webauth.cache_key("caldav", "alice@example.net", f"password{i}") for i in range(3)]
    assert len(set(keys)) == 3 and all(len(key) == 32 for key in keys)
    # Parts are length-prefixed: moving text between them changes the key.
    assert webauth.cache_key("a", "b:c", "d") != webauth.cache_key("a", "b", ":cd")
    cache.put(keys[0], "one")
    clock.now += 1
    cache.put(keys[1], "two")
    cache.put(keys[2], "three")  # full: the oldest goes
    assert [cache.get(key) for key in keys] == [None, "two", "three"]
    clock.now += 60  # both have expired: a put drops them all
    cache.put(keys[0], "one")
    assert len(cache) == 1
    assert [cache.get(key) for key in keys] == ["one", None, None]


# --- the accounts file -------------------------------------------------------------------------


def test_a_missing_accounts_file_stops_the_daemon_naming_it(tmp_path, capsys):
    path = tmp_path / "absent"
    assert webauth.main(["--accounts", str(path), "--socket", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "cannot read" in error
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data.pop("accounts"), "missing field 'accounts'"),
        (lambda data: data.pop("domain"), "missing field 'domain'"),
        (lambda data: data.update(domain="a@example.net"), "field 'domain'"),
        (lambda data: data.pop("book_realms"), "missing field 'book_realms'"),
        (lambda data: data.update(separators=["@"]), "field 'separators'"),
        (lambda data: data.update(book_logins="Default"), "field 'book_logins'"),
        (lambda data: data["accounts"].update(bob="$argon2id$x"), "field 'accounts' 'bob'"),
        (lambda data: data["accounts"].update(bob=["{SHA}x"]), "field 'accounts' 'bob'"),
    ],
)
def test_a_bad_accounts_file_stops_the_daemon_naming_the_field(
    tmp_path, hashes, capsys, change, message
):
    data = _accounts(hashes)
    change(data)
    path = tmp_path / "accounts"
    path.write_text(json.dumps(data))
    with pytest.raises(StartupError, match=message):
        webauth.load_config(path)
    assert webauth.main(["--accounts", str(path), "--socket", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and message in error
    assert not any(hashed in error for hashed in hashes.values())


def test_the_accounts_file_must_be_a_json_object(tmp_path):
    path = tmp_path / "accounts"
    path.write_text("[]")
    with pytest.raises(StartupError, match="not a JSON object"):
        webauth.load_config(path)
    path.write_text('{"domain": ')
    with pytest.raises(StartupError, match="not JSON"):
        webauth.load_config(path)


def test_the_accounts_file_comes_from_systemd_credentials_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(StartupError, match="LoadCredential"):
        webauth.build_server(["--socket", str(tmp_path / "s")])
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(StartupError, match=re.escape(f"{tmp_path / 'accounts'}: cannot read")):
        webauth.build_server(["--socket", str(tmp_path / "s")])


def test_without_systemd_a_socket_path_is_needed(monkeypatch, tmp_path):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    with pytest.raises(StartupError, match="--socket"):
        webauth.listening_socket(None)
    (tmp_path / "file").write_text("not a socket")
    with pytest.raises(StartupError, match="cannot listen"):
        webauth.listening_socket(tmp_path / "file")


# --- files: which backend path a request may reach ---------------------------------------------

TREE_HOST = "webdav.example.net"
ROOTED_HOST = "myfiles.example.net"
# alice's files on webdav.DOMAIN, as a path and as a URL.
ALICE = "/alice.example.net/files"
ALICE_URL = f"https://{TREE_HOST}{ALICE}"


@pytest.fixture(scope="module")
def files_config(hashes, tmp_path_factory) -> Config:
    """alice and bob, plus trees whose names a string split would confuse: user `a.b` and user
    `a` (whose tree a.b.example.net would be, split at the first dot), and mallory's tree named
    like a.example.net with more after it. dave has no files."""
    data = _accounts(hashes)
    for user in ("a", "a.b", "mallory", "dave"):
        data["accounts"][user] = [hashes[OTHER_APP_PASSWORD]]
    data["files_roots"].update(
        {"a": "a.example.net", "a.b": "a.b.example.net", "mallory": "a.example.net.evil"}
    )
    path = tmp_path_factory.mktemp("files") / "accounts"
    path.write_text(json.dumps(data))
    return webauth.load_config(path)


# (request target as nginx's $request_uri, the backend path or None for 403), for alice on
# webdav.DOMAIN. Header values reach the daemon as ISO-8859-1: "\xc3\xa9" is a raw UTF-8 é.
TREE = [
    ("/alice.example.net/files/", "/alice.example.net/files/"),
    ("/alice.example.net/files", "/alice.example.net/files"),
    ("/alice.example.net/files/x.txt", "/alice.example.net/files/x.txt"),
    ("/alice.example.net/files/dir/", "/alice.example.net/files/dir/"),
    ("/alice.example.net/files/dir/sub/x", "/alice.example.net/files/dir/sub/x"),
    ("/alice.example.net/files/.hidden", "/alice.example.net/files/.hidden"),
    ("/alice.example.net/files/.../x", "/alice.example.net/files/.../x"),
    ("/alice.example.net/files/..x/x..", "/alice.example.net/files/..x/x.."),
    # Names: decoded once, re-encoded as the backend will decode them once.
    ("/alice.example.net/files/a%20b/c%2Bd", "/alice.example.net/files/a%20b/c%2Bd"),
    ("/alice.example.net/files/caf%C3%A9", "/alice.example.net/files/caf%C3%A9"),
    ("/alice.example.net/files/caf%c3%a9", "/alice.example.net/files/caf%C3%A9"),
    ("/alice.example.net/files/caf\xc3\xa9", "/alice.example.net/files/caf%C3%A9"),
    (f"{ALICE}/%E2%82%AC%C2%A0%E6%97%A5", f"{ALICE}/%E2%82%AC%C2%A0%E6%97%A5"),
    ("/alice.example.net/files/a;b=c,d'e", "/alice.example.net/files/a%3Bb%3Dc%2Cd%27e"),
    ("/alice.example.net/files/%3Fnot-a-query", "/alice.example.net/files/%3Fnot-a-query"),
    ("/alice.example.net/files/%23not-a-fragment", "/alice.example.net/files/%23not-a-fragment"),
    # Double encoding is a name: %252e%252e is the file "%2e%2e", never "..".
    ("/alice.example.net/files/%252e%252e/x", "/alice.example.net/files/%252e%252e/x"),
    (f"{ALICE}/%252e%252e%252f..%252f", f"{ALICE}/%252e%252e%252f..%252f"),
    # The query is dropped, whatever it holds.
    ("/alice.example.net/files/x?a=1", "/alice.example.net/files/x"),
    ("/alice.example.net/files/x?/../../bob.example.net/files/y", "/alice.example.net/files/x"),
    ("/alice.example.net/files/?", "/alice.example.net/files/"),
    # Normalised like posixpath.normpath: //, ., .. inside the tree.
    ("//alice.example.net//files///x", "/alice.example.net/files/x"),
    ("/alice.example.net/./files/./x/.", "/alice.example.net/files/x/"),
    ("/alice.example.net/files/d/../x", "/alice.example.net/files/x"),
    ("/alice.example.net/files/d/..", "/alice.example.net/files/"),
    ("/alice.example.net/files/d/%2e%2e/x", "/alice.example.net/files/x"),
    ("/bob.example.net/../alice.example.net/files/x", "/alice.example.net/files/x"),
    # Out of the tree, or above /.
    ("/alice.example.net/files/../../bob.example.net/files/x", None),
    ("/alice.example.net/files/%2e%2e/%2e%2e/bob.example.net/files/x", None),
    ("/alice.example.net/files/%2E%2E/%2E%2E/bob.example.net/files/x", None),
    ("/alice.example.net/files/.%2e/%2e./bob.example.net/files/x", None),
    ("/alice.example.net/files/../x", None),
    ("/alice.example.net/files/..", None),
    ("/alice.example.net/files/d/../../files2/x", None),
    ("/../alice.example.net/files/x", None),
    ("/alice.example.net/../../alice.example.net/files/x", None),
    ("/alice.example.net/files/../../../../etc/passwd", None),
    ("/alice.example.net/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd", None),
    # A decoded / inside a segment, NUL, backslash, control characters.
    ("/alice.example.net/files/..%2f..%2fbob.example.net%2ffiles%2fx", None),
    ("/alice.example.net/files/a%2Fb", None),
    ("/alice.example.net%2Ffiles/x", None),
    ("/alice.example.net/files%2fx", None),
    ("/alice.example.net/files/a%00b", None),
    ("/alice.example.net/files/a%00/../../../bob.example.net/files/x", None),
    ("/alice.example.net/files/a\\b", None),
    ("/alice.example.net/files/a%5Cb", None),
    ("/alice.example.net/files/..%5C..%5Cbob.example.net%5Cfiles", None),
    ("/alice.example.net\\files\\x", None),
    ("/alice.example.net/files/a%0D%0ASet-Cookie:%20x", None),
    ("/alice.example.net/files/a%7Fb", None),
    ("/alice.example.net/files/a%C2%85b", None),
    # Malformed escapes and bytes that are not UTF-8 (overlong dots included).
    ("/alice.example.net/files/a%", None),
    ("/alice.example.net/files/a%2", None),
    ("/alice.example.net/files/a%zz", None),
    ("/alice.example.net/files/%u002e%u002e/x", None),
    ("/alice.example.net/files/%C3", None),
    ("/alice.example.net/files/%C0%AE%C0%AE/x", None),
    ("/alice.example.net/files/%E0%80%AF", None),
    ("/alice.example.net/files/caf\xe9", None),
    ("/alice.example.net/files/\u20ac", None),  # not one byte per character: not from nginx
    # Fragments, other request-target forms.
    ("/alice.example.net/files/x#y", None),
    ("https://webdav.example.net/alice.example.net/files/x", None),
    ("alice.example.net/files/x", None),
    ("*", None),
    ("", None),
    # Not a file: / and /<root> themselves; other folders and other trees.
    ("/", None),
    ("//", None),
    ("/?x", None),
    ("/alice.example.net", None),
    ("/alice.example.net/", None),
    ("/alice.example.net/other/x", None),
    ("/alice.example.net/Files/x", None),
    ("/alice.example.net/files.x/y", None),
    ("/Alice.Example.Net/files/x", None),
    ("/alice.example.net./files/x", None),
    ("/alice/files/x", None),
    ("/alice@example.net/files/x", None),
    ("/bob.example.net/files/x", None),
    ("/bob.example.net/files/", None),
    ("/bob.example.net/files/../../alice.example.net/files/../../bob.example.net/files/x", None),
    ("/carol.example.net/files/x", None),
    ("/files/x", None),
]  # fmt: skip


@pytest.mark.parametrize(("uri", "expected"), TREE, ids=lambda value: repr(value)[:60])
def test_webdav_reaches_the_own_tree_alone(files_config, uri, expected):
    decision = files_access(files_config, "alice@example.net", "tree", "GET", uri, None, TREE_HOST)
    assert decision == (None if expected is None else FilesDecision("alice@example.net", expected))


# (user, path): whose tree a path is is looked up, never read off its spelling.
LOOKUPS = [
    ("a", "/a.example.net/files/x", True),
    ("a", "/a.b.example.net/files/x", False),
    ("a.b", "/a.b.example.net/files/x", True),
    ("a.b", "/a.example.net/files/x", False),
    ("a", "/a.example.net.evil/files/x", False),
    ("mallory", "/a.example.net.evil/files/x", True),
    ("mallory", "/a.example.net/files/x", False),
    ("mallory", "/a.example.net.evil/../a.example.net/files/x", False),
    ("a", "/a.example.net/files/../../a.b.example.net/files/x", False),
    ("a", "/a.example.net/files/../../a.example.net.evil/files/x", False),
    ("a", "/a.example.net.evil/../a.example.net/files/x", True),
    ("bob", "/bob.example.net/files/x", True),
    ("bob", "/alice.example.net/files/x", False),
    ("dave", "/dave.example.net/files/x", False),  # no files
]


@pytest.mark.parametrize(("user", "uri", "allowed"), LOOKUPS, ids=lambda value: str(value))
def test_a_path_belongs_to_the_account_the_lookup_table_names(files_config, user, uri, allowed):
    decision = files_access(files_config, f"{user}@example.net", "tree", "PUT", uri, None, None)
    assert (decision is not None) is allowed


ROOTED = [
    ("/", "/alice.example.net/files/"),
    ("/?x=1", "/alice.example.net/files/"),
    ("//", "/alice.example.net/files/"),
    ("/x.txt", "/alice.example.net/files/x.txt"),
    ("/d/", "/alice.example.net/files/d/"),
    ("/d/../x", "/alice.example.net/files/x"),
    ("/./d/./x", "/alice.example.net/files/d/x"),
    ("/caf%C3%A9", "/alice.example.net/files/caf%C3%A9"),
    ("/%252e%252e/x", "/alice.example.net/files/%252e%252e/x"),
    # Another tree's spelling is a folder of one's own here.
    ("/bob.example.net/files/x", "/alice.example.net/files/bob.example.net/files/x"),
    ("/alice.example.net/files/x", "/alice.example.net/files/alice.example.net/files/x"),
    ("/..", None),
    ("/../bob.example.net/files/x", None),
    ("/d/../../x", None),
    ("/%2e%2e/x", None),
    ("/%2E%2E%2Fx", None),
    ("/a%2Fb", None),
    ("/a%00", None),
    ("/a%5Cb", None),
    ("/a\\b", None),
    ("/a%", None),
    ("/x#y", None),
    ("", None),
    ("x", None),
    ("https://myfiles.example.net/x", None),
]


@pytest.mark.parametrize(("uri", "expected"), ROOTED, ids=lambda value: repr(value)[:60])
def test_myfiles_maps_every_path_into_the_own_tree(files_config, uri, expected):
    decision = files_access(
        files_config, "alice@example.net", "rooted", "GET", uri, None, ROOTED_HOST
    )
    assert decision == (None if expected is None else FilesDecision("alice@example.net", expected))


@pytest.mark.parametrize(
    ("principal", "mode"),
    [
        ("alice+Default@example.net", "tree"),  # a book login never reaches files
        ("alice+Shared@example.net", "rooted"),
        ("dave@example.net", "rooted"),  # an account without files
        ("carol@example.net", "rooted"),  # no account
        ("alice", "rooted"),
        ("", "rooted"),
        ("alice@example.net", ""),
        ("alice@example.net", "TREE"),
        ("alice@example.net", "webdav"),
    ],
)
def test_files_need_a_plain_account_with_files_and_a_known_mode(files_config, principal, mode):
    uri = "/alice.example.net/files/x" if mode == "tree" else "/x"
    assert files_access(files_config, principal, mode, "GET", uri, None, TREE_HOST) is None


# (Destination, backend destination or None), for COPY and MOVE of alice's /a on webdav.DOMAIN.
TREE_DESTINATIONS = [
    ("https://webdav.example.net/alice.example.net/files/b", "/alice.example.net/files/b"),
    ("HTTPS://WebDAV.Example.NET/alice.example.net/files/b", "/alice.example.net/files/b"),
    ("https://webdav.example.net:443/alice.example.net/files/b", "/alice.example.net/files/b"),
    ("/alice.example.net/files/b", "/alice.example.net/files/b"),
    (f"{ALICE_URL}/d/b%20c/", f"{ALICE}/d/b%20c/"),
    ("https://webdav.example.net/alice.example.net/files/b?x=1", "/alice.example.net/files/b"),
    (f"{ALICE_URL}/b?x=/../../bob.example.net", f"{ALICE}/b"),
    (f"{ALICE_URL}/%252e%252e", f"{ALICE}/%252e%252e"),
    ("https://webdav.example.net//alice.example.net/files/d/../b", "/alice.example.net/files/b"),
    # Another tree, out of the tree, the tree's top.
    ("https://webdav.example.net/bob.example.net/files/b", None),
    ("/bob.example.net/files/b", None),
    ("https://webdav.example.net/alice.example.net/files/../../bob.example.net/files/b", None),
    (f"{ALICE_URL}/%2e%2e/%2e%2e/bob.example.net/files/b", None),
    ("https://webdav.example.net/alice.example.net/files/..%2F..%2Fbob.example.net%2Ffiles", None),
    ("https://webdav.example.net/alice.example.net/files/b%00", None),
    ("https://webdav.example.net/alice.example.net/files/b%5C..", None),
    ("https://webdav.example.net/alice.example.net/b", None),
    ("https://webdav.example.net/alice.example.net/files/", None),
    ("https://webdav.example.net/alice.example.net/files", None),
    ("https://webdav.example.net/alice.example.net/", None),
    ("https://webdav.example.net/", None),
    ("https://webdav.example.net/../alice.example.net/files/b", None),
    # Another host, scheme or port; user info; not a URL at all.
    ("https://myfiles.example.net/alice.example.net/files/b", None),
    ("https://evil.example.org/alice.example.net/files/b", None),
    ("https://webdav.example.net.evil.example.org/alice.example.net/files/b", None),
    ("https://webdav.example.net@evil.example.org/alice.example.net/files/b", None),
    ("https://alice@webdav.example.net/alice.example.net/files/b", None),
    ("https://webdav.example.net\\@evil.example.org/alice.example.net/files/b", None),
    ("https://webdav.example.net:8443/alice.example.net/files/b", None),
    ("https://webdav.example.net:/alice.example.net/files/b", None),
    ("http://webdav.example.net/alice.example.net/files/b", None),
    ("file:///alice.example.net/files/b", None),
    ("//webdav.example.net/alice.example.net/files/b", None),
    ("//evil.example.org/alice.example.net/files/b", None),
    ("//alice.example.net/files/b", None),  # a network-path reference: host alice.example.net
    ("webdav.example.net/alice.example.net/files/b", None),
    ("alice.example.net/files/b", None),
    ("https://webdav.example.net", None),
    ("https://webdav.example.net?/alice.example.net/files/b", None),
    ("https://webdav.example.net#/alice.example.net/files/b", None),
    ("https://webdav.example.net/alice.example.net/files/b#c", None),
    ("https:/alice.example.net/files/b", None),
    ("", None),
    (None, None),
]  # fmt: skip


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
@pytest.mark.parametrize(("destination", "expected"), TREE_DESTINATIONS, ids=lambda v: repr(v)[:70])
def test_copy_and_move_stay_in_the_own_tree(files_config, method, destination, expected):
    source = "/alice.example.net/files/a"
    decision = files_access(
        files_config, "alice@example.net", "tree", method, source, destination, TREE_HOST
    )
    if expected is None:
        assert decision is None
    else:
        assert decision == FilesDecision("alice@example.net", source, expected)


ROOTED_DESTINATIONS = [
    ("https://myfiles.example.net/b", "/alice.example.net/files/b"),
    ("/b", "/alice.example.net/files/b"),
    ("https://myfiles.example.net/d/../c/", "/alice.example.net/files/c/"),
    ("https://myfiles.example.net/bob.example.net/files/b", f"{ALICE}/bob.example.net/files/b"),
    ("https://myfiles.example.net/", None),
    ("https://myfiles.example.net/../b", None),
    ("https://myfiles.example.net/%2e%2e/b", None),
    ("https://webdav.example.net/alice.example.net/files/b", None),
    ("https://webdav.example.net/b", None),
    ("//myfiles.example.net/b", None),
    ("//evil.example.org/b", None),
    ("/", None),
    (None, None),
]  # fmt: skip


@pytest.mark.parametrize(("destination", "expected"), ROOTED_DESTINATIONS, ids=repr)
def test_copy_and_move_on_myfiles_map_the_destination_the_same_way(
    files_config, destination, expected
):
    decision = files_access(
        files_config, "alice@example.net", "rooted", "MOVE", "/a", destination, ROOTED_HOST
    )
    if expected is None:
        assert decision is None
    else:
        assert decision == FilesDecision(
            "alice@example.net", "/alice.example.net/files/a", expected
        )


def test_destination_counts_for_copy_and_move_alone(files_config):
    source = "/alice.example.net/files/a"
    elsewhere = "https://webdav.example.net/bob.example.net/files/b"
    for method in ("GET", "PUT", "PROPFIND", "PROPPATCH", "DELETE", "LOCK", "MKCOL", "OPTIONS"):
        decision = files_access(
            files_config, "alice@example.net", "tree", method, source, elsewhere, TREE_HOST
        )
        assert decision == FilesDecision("alice@example.net", source)
    for method in ("COPY", "MOVE", "copy", "Move"):  # methods are case-sensitive: be safe
        assert (
            files_access(files_config, "alice@example.net", "tree", method, source, None, TREE_HOST)
            is None
        )
        assert (
            files_access(
                files_config, "alice@example.net", "tree", method, source, elsewhere, TREE_HOST
            )
            is None
        )


def test_the_top_of_a_tree_is_never_removed_or_overwritten(files_config):
    def allowed(mode, method, uri, destination=None, host=TREE_HOST):
        decision = files_access(
            files_config, "alice@example.net", mode, method, uri, destination, host
        )
        return decision is not None

    top, inside = "/alice.example.net/files/", "/alice.example.net/files/x"
    for uri in (top, "/alice.example.net/files", "/alice.example.net/files/x/.."):
        assert allowed("tree", "PROPFIND", uri)
        assert not allowed("tree", "DELETE", uri)
        assert not allowed("tree", "MOVE", uri, inside)
        assert not allowed("tree", "COPY", inside, uri)
        assert not allowed("tree", "MOVE", inside, uri)
    assert allowed("tree", "COPY", top, "/alice.example.net/files/backup/")
    assert allowed("tree", "DELETE", inside)
    assert allowed("rooted", "PROPFIND", "/", host=ROOTED_HOST)
    assert not allowed("rooted", "DELETE", "/", host=ROOTED_HOST)
    assert not allowed("rooted", "DELETE", "/x/..", host=ROOTED_HOST)
    assert not allowed("rooted", "MOVE", "/", "/x", host=ROOTED_HOST)
    assert not allowed("rooted", "COPY", "/x", "/", host=ROOTED_HOST)
    assert allowed("rooted", "DELETE", "/x", host=ROOTED_HOST)


def test_backend_paths_are_plain_ascii_whatever_the_request_held(files_config):
    """They go back to nginx as header values: nothing in them can start another header."""
    for uri, _ in TREE:
        decision = files_access(
            files_config, "alice@example.net", "tree", "GET", uri, None, TREE_HOST
        )
        if decision is not None:
            assert re.fullmatch(r"[A-Za-z0-9/%._~-]+", decision.path), uri
            assert webauth.decoded_path(decision.path) is not None


# --- the files part of the accounts file ------------------------------------------------------


def test_the_files_fields_are_optional(hashes, tmp_path):
    data = _accounts(hashes)
    for name in ("files_roots", "files_dir", "files_uid", "files_gid"):
        del data[name]
    path = tmp_path / "accounts"
    path.write_text(json.dumps(data))
    config = webauth.load_config(path)
    assert config.files_roots == {} and config.files_dir is None
    assert config.files_uid is None and config.files_gid is None
    assert files_access(config, "alice@example.net", "rooted", "GET", "/", None, None) is None


def test_the_files_fields_are_read(config):
    assert config.files_roots == {"alice": "alice.example.net", "bob": "bob.example.net"}
    assert config.files_owners == {"alice.example.net": "alice", "bob.example.net": "bob"}
    assert (config.files_dir, config.files_uid, config.files_gid) == (FILES_DIR, 2001, 2001)


def _set(name, value):
    return lambda data: data.update({name: value})


def _root(user, root):
    return lambda data: data["files_roots"].update({user: root})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("files_roots", ["alice.example.net"]), "field 'files_roots' must be an object"),
        (_root("carol", "carol.example.net"), "field 'files_roots' 'carol': not in 'accounts'"),
        (_root("bob", "alice.example.net"), "field 'files_roots' 'bob': 'alice.example.net' is"),
        (_root("bob", ""), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", "bob/example.net"), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", "bob\\example.net"), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", ".bob.example.net"), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", ".."), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", "."), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", "bob\nexample.net"), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", "bob\x00"), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", 5), "field 'files_roots' 'bob': not one path segment"),
        (_root("bob", None), "field 'files_roots' 'bob': not one path segment"),
        (_set("files_dir", "var/lib/bulwark/files"), "field 'files_dir'"),
        (_set("files_dir", "/"), "field 'files_dir'"),
        (_set("files_dir", "//var/files"), "field 'files_dir'"),
        (_set("files_dir", "/var/files/"), "field 'files_dir'"),
        (_set("files_dir", "/var/./files"), "field 'files_dir'"),
        (_set("files_dir", "/var/../files"), "field 'files_dir'"),
        (_set("files_dir", "/var/files\n"), "field 'files_dir'"),
        (_set("files_dir", 5), "field 'files_dir'"),
        (_set("files_uid", 0), "field 'files_uid'"),
        (_set("files_uid", -1), "field 'files_uid'"),
        (_set("files_uid", 2**32 - 1), "field 'files_uid'"),
        (_set("files_uid", "2001"), "field 'files_uid'"),
        (_set("files_uid", True), "field 'files_uid'"),
        (_set("files_uid", 2001.0), "field 'files_uid'"),
        (_set("files_gid", 0), "field 'files_gid'"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_bad_files_field_stops_the_daemon_naming_it(tmp_path, hashes, change, message):
    data = _accounts(hashes)
    change(data)
    path = tmp_path / "accounts"
    path.write_text(json.dumps(data))
    with pytest.raises(StartupError, match=re.escape(message)) as error:
        webauth.load_config(path)
    assert str(path) in str(error.value)
    assert not any(hashed in str(error.value) for hashed in hashes.values())


def test_an_ftp_socket_needs_the_files_directory(tmp_path, hashes, monkeypatch):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    data = _accounts(hashes)
    del data["files_dir"]
    path = tmp_path / "accounts"
    path.write_text(json.dumps(data))
    http, ftp = tmp_path / "http", tmp_path / "ftp"
    argv = ["--accounts", str(path), "--socket", str(http)]
    for extra in (["--ftp-socket", str(ftp)], ["--files"]):
        with pytest.raises(
            StartupError, match=re.escape(f"{path}: missing field 'files_dir' (files and FTP")
        ):
            webauth.build_server([*argv, *extra])
        assert not http.exists() and not ftp.exists()
    webauth.build_server(argv).server_close()  # HTTP alone does without


def test_ftp_sessions_run_as_the_checker_itself_unless_told_and_never_as_root(
    tmp_path, hashes, monkeypatch
):
    """The files role's checker runs as the files' owner: without files_uid and files_gid,
    FTP sessions get its own ids, and a checker running as root refuses to start."""
    monkeypatch.delenv("LISTEN_PID", raising=False)
    data = _accounts(hashes)
    del data["files_uid"], data["files_gid"]
    path = tmp_path / "accounts"
    path.write_text(json.dumps(data))
    argv = ["--accounts", str(path), "--socket", str(tmp_path / "http")]
    ftp = ["--ftp-socket", str(tmp_path / "ftp")]
    monkeypatch.setattr(webauth.os, "getuid", lambda: 0)
    with pytest.raises(StartupError, match="FTP never runs as root"):
        webauth.build_server([*argv, *ftp])
    monkeypatch.setattr(webauth.os, "getuid", lambda: 1234)
    monkeypatch.setattr(webauth.os, "getgid", lambda: 4321)
    with webauth.build_server([*argv, *ftp]) as daemon:
        config = daemon.ftp.checker.config
        assert (config.files_uid, config.files_gid) == (1234, 4321)


# --- the server --------------------------------------------------------------------------------


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, as nginx talks to the daemon."""

    def __init__(self, socket_path: Path):
        super().__init__("localhost", timeout=10)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.socket_path))


def _basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def ask(
    socket_path: Path, headers: dict[str, str], method: str = "GET"
) -> http.client.HTTPResponse:
    connection = UnixConnection(socket_path)
    connection.request(method, "/auth", headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.fixture
def served(hashes, tmp_path, monkeypatch):
    """The daemon as main() builds it from its command line, serving in a thread."""
    monkeypatch.delenv("LISTEN_PID", raising=False)
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(_accounts(hashes)))
    socket_path = tmp_path / "webauth.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))  # a stale socket left by an earlier run is replaced
    stale.close()
    server = webauth.build_server(["--accounts", str(accounts), "--socket", str(socket_path)])
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield socket_path
    server.shutdown()
    server.server_close()
    thread.join()


def test_good_credentials_get_200_and_the_principal(served, capsys):
    login = _basic("alice+Default#example.net", APP_PASSWORD)
    for method in ("GET", "HEAD", "PROPFIND"):
        response = ask(served, {"X-Bulwark-Realm": "carddav", "Authorization": login}, method)
        assert response.status == 200
        assert response.getheader("X-Bulwark-User") == "alice+Default@example.net"
        assert response.getheader("Content-Length") == "0"
    assert capsys.readouterr().err == ""


def test_the_password_follows_the_first_colon():
    assert webauth.basic_credentials(_basic("alice@example.net", "a:b:c")) == (
        "alice@example.net",
        "a:b:c",
    )
    assert webauth.basic_credentials("basic " + _basic("a", "b").split()[1]) == ("a", "b")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer abc", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no colon").decode(),
     "Basic " + base64.b64encode(b"\xff:x").decode()],
)  # fmt: skip
def test_malformed_credentials_are_none(authorization):
    assert webauth.basic_credentials(authorization) is None


def test_bad_credentials_get_401_and_one_line_for_banwatch(served, capsys):
    headers = {"X-Bulwark-Realm": "caldav", "X-Real-IP": ATTACKER}
    for login in ("alice@example.net", "carol@example.net"):
        response = ask(served, {**headers, "Authorization": _basic(login, "guess-1234")})
        assert response.status == 401
        assert response.getheader("WWW-Authenticate") == 'Basic realm="caldav", charset="UTF-8"'
        assert response.getheader("X-Bulwark-User") is None
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"login failed: rip={ATTACKER} realm=caldav user='alice@example.net'",
        f"login failed: rip={ATTACKER} realm=caldav user='carol@example.net'",
    ]
    assert all("guess-1234" not in line for line in lines)
    assert banwatch.parse(lines[0]) == banwatch.Failure(ipaddress.IPv4Address(ATTACKER), 1)


def test_a_request_without_credentials_gets_401_and_no_line(served, capsys):
    response = ask(served, {"X-Bulwark-Realm": "caldav", "X-Real-IP": ATTACKER})
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == 'Basic realm="caldav", charset="UTF-8"'
    response = ask(served, {"X-Bulwark-Realm": "caldav", "Authorization": "Basic !!!"})
    assert response.status == 401
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("realm", [None, "", 'caldav", evil="1'])
def test_a_request_without_a_realm_is_a_misconfiguration(served, capsys, realm):
    headers = {"Authorization": _basic("alice@example.net", APP_PASSWORD)}
    if realm is not None:
        headers["X-Bulwark-Realm"] = realm
    response = ask(served, headers)
    assert response.status == 500
    assert response.getheader("X-Bulwark-User") is None
    (line,) = capsys.readouterr().err.splitlines()
    assert "X-Bulwark-Realm" in line and APP_PASSWORD not in line


def test_the_failure_line_is_anchored_escaped_and_short():
    forged = "x\nlogin failed: rip=6.6.6.6 realm=caldav user=" + "y" * 200
    line = webauth.failure_line(ATTACKER, "caldav", forged)
    assert "\n" not in line
    assert line.startswith(f"login failed: rip={ATTACKER} realm=caldav user='x\\nlogin")
    assert len(line.partition(" user=")[2]) == webauth.MAX_LOGGED
    for address in (None, "", "not-an-address", "6.6.6.6 realm=x", "fe80::1%eth0 realm=x"):
        line = webauth.failure_line(address, "caldav", "alice")
        assert line == "login failed: rip=- realm=caldav user='alice'"
        assert banwatch.parse(line) is None
    assert webauth.failure_line("2001:db8::1", "caldav", "a").startswith("login failed: rip=2001")


# --- files over HTTP ----------------------------------------------------------------------------


def _files_headers(
    login: str, mode: str, method: str, uri: str, destination: str | None = None
) -> dict[str, str]:
    """What nginx's auth_request location sends for the files servers."""
    headers = {
        "X-Bulwark-Realm": "files",
        "X-Real-IP": ATTACKER,
        "Authorization": _basic(login, APP_PASSWORD),
        "X-Bulwark-Files-Mode": mode,
        "X-Original-URI": uri,
        "X-Original-Method": method,
        "X-Original-Host": TREE_HOST if mode == "tree" else ROOTED_HOST,
    }
    if destination is not None:
        headers["X-Destination"] = destination
    return headers


def _no_secrets(text: str, hashes: dict[str, str]) -> None:
    for secret in (APP_PASSWORD, OTHER_APP_PASSWORD, MAIN_PASSWORD, *hashes.values()):
        assert secret not in text


def test_files_get_the_backend_path_in_the_own_tree(served, capsys, hashes):
    login = "alice#example.net"
    response = ask(served, _files_headers(login, "tree", "PROPFIND", "/alice.example.net/files/"))
    assert response.status == 200
    assert response.getheader("X-Bulwark-User") == "alice@example.net"
    assert response.getheader("X-Bulwark-Backend-Path") == "/alice.example.net/files/"
    assert response.getheader("X-Bulwark-Backend-Destination") is None
    response = ask(served, _files_headers(login, "rooted", "GET", "/d/caf%C3%A9?x=1"))
    assert response.status == 200
    assert response.getheader("X-Bulwark-Backend-Path") == "/alice.example.net/files/d/caf%C3%A9"
    headers = _files_headers(login, "tree", "MOVE", f"{ALICE}/a%20b", f"{ALICE_URL}/d/b")
    response = ask(served, headers)
    assert response.status == 200
    assert response.getheader("X-Bulwark-Backend-Path") == "/alice.example.net/files/a%20b"
    assert response.getheader("X-Bulwark-Backend-Destination") == "/alice.example.net/files/d/b"
    headers = _files_headers(login, "rooted", "COPY", "/a", "https://myfiles.example.net/b")
    response = ask(served, headers)
    assert response.getheader("X-Bulwark-Backend-Destination") == "/alice.example.net/files/b"
    # What the daemon reads is what nginx sends: raw UTF-8 bytes in the request target.
    connection = UnixConnection(served)
    connection.putrequest("GET", "/auth", skip_accept_encoding=True)
    for header, value in _files_headers(login, "rooted", "GET", "/").items():
        if header != "X-Original-URI":
            connection.putheader(header, value)
    connection.putheader("X-Original-URI", "/caf\u00e9 \u2014".encode())
    connection.endheaders()
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200
    assert response.getheader("X-Bulwark-Backend-Path") == (
        "/alice.example.net/files/caf%C3%A9%20%E2%80%94"
    )
    assert capsys.readouterr().err == ""


def test_a_path_outside_the_own_tree_gets_403_and_a_line_banwatch_does_not_count(
    served, capsys, hashes
):
    attempts = [
        ("tree", "GET", "/bob.example.net/files/x", None),
        ("tree", "GET", "/alice.example.net/files/%2e%2e/%2e%2e/bob.example.net/files/x", None),
        ("tree", "PROPFIND", "/", None),
        ("rooted", "GET", "/../bob.example.net/files/x", None),
        ("tree", "COPY", "/alice.example.net/files/a", "https://webdav.example.net/bob.example.net/files/a"),
        ("tree", "MOVE", "/alice.example.net/files/a", "https://evil.example.org/alice.example.net/files/b"),
        ("tree", "MOVE", "/alice.example.net/files/a", None),
        ("rooted", "DELETE", "/", None),
    ]  # fmt: skip
    for mode, method, uri, destination in attempts:
        response = ask(served, _files_headers("alice@example.net", mode, method, uri, destination))
        assert response.status == 403
        assert response.getheader("X-Bulwark-Backend-Path") is None
        assert response.getheader("WWW-Authenticate") is None
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        f"files refused: rip={ATTACKER} user='alice@example.net' path='/bob.example.net/files/x'"
    )
    assert len(lines) == len(attempts)
    for line, (_, _, uri, _) in zip(lines, attempts, strict=True):
        assert line == webauth.refusal_line(ATTACKER, "alice@example.net", uri)
        assert banwatch.parse(line) is None
    _no_secrets("\n".join(lines), hashes)


def test_the_refusal_line_is_anchored_escaped_and_short():
    forged = "/x\nlogin failed: rip=6.6.6.6 realm=files user=" + "y" * 200
    line = webauth.refusal_line(ATTACKER, "alice@example.net", forged)
    assert "\n" not in line
    assert line.startswith(f"files refused: rip={ATTACKER} user='alice@example.net' path='/x\\n")
    assert len(line.partition(" path=")[2]) == webauth.MAX_LOGGED
    assert banwatch.parse(line) is None
    assert webauth.refusal_line(None, "a@example.net", "/").startswith("files refused: rip=- ")


def test_bad_credentials_for_files_get_401_and_the_counted_line(served, capsys, hashes):
    for login, password in [
        ("alice@example.net", "guess-1234"),
        ("alice@example.net", MAIN_PASSWORD),
        ("alice+Default@example.net", APP_PASSWORD),  # a book login is no files login
        ("carol@example.net", APP_PASSWORD),
    ]:
        headers = _files_headers(login, "tree", "GET", "/alice.example.net/files/")
        headers["Authorization"] = _basic(login, password)
        response = ask(served, headers)
        assert response.status == 401
        assert response.getheader("WWW-Authenticate") == 'Basic realm="files", charset="UTF-8"'
        assert response.getheader("X-Bulwark-Backend-Path") is None
    lines = capsys.readouterr().err.splitlines()
    assert [banwatch.parse(line) for line in lines] == [
        banwatch.Failure(ipaddress.IPv4Address(ATTACKER), 1)
    ] * 4
    assert lines[2] == f"login failed: rip={ATTACKER} realm=files user='alice+Default@example.net'"
    _no_secrets("\n".join(lines), hashes)
    headers = _files_headers("alice@example.net", "tree", "GET", "/alice.example.net/files/")
    del headers["Authorization"]
    assert ask(served, headers).status == 401
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "change",
    [
        lambda headers: headers.pop("X-Bulwark-Files-Mode"),
        lambda headers: headers.update({"X-Bulwark-Files-Mode": "both"}),
        lambda headers: headers.pop("X-Original-URI"),
        lambda headers: headers.pop("X-Original-Method"),
    ],
)
def test_files_without_what_nginx_must_send_is_a_misconfiguration(served, capsys, change):
    headers = _files_headers("alice@example.net", "tree", "GET", "/alice.example.net/files/")
    change(headers)
    response = ask(served, headers)
    assert response.status == 500
    assert response.getheader("X-Bulwark-User") is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("misconfigured: realm files needs X-Bulwark-Files-Mode")


def test_other_realms_ignore_the_files_headers(served):
    headers = _files_headers("alice@example.net", "tree", "GET", "/bob.example.net/files/x")
    headers["X-Bulwark-Realm"] = "caldav"
    response = ask(served, headers)
    assert response.status == 200
    assert response.getheader("X-Bulwark-Backend-Path") is None


# --- FTP: pure-ftpd's extauth -----------------------------------------------------------------


def pure_ftpd(
    socket_path: Path,
    account: str,
    password: str,
    peer: str = ATTACKER,
    encrypted: int = 1,
    request: bytes | None = None,
) -> tuple[dict, bytes]:
    """Ask as pure-ftpd 1.0.50 does (src/log_extauth.c: pw_extauth_check): one request, no
    shutdown of its side, the reply read until the daemon closes, lines taken by keyword
    prefix, and a reply without `end`, or auth_ok 1 without uid, gid or dir, refused."""
    if request is None:
        request = (
            f"account:{account}\npassword:{password}\nlocalhost:198.51.100.11\n"
            f"localport:21\npeer:{peer}\nsni_name:ftp.example.net\nencrypted:{encrypted}\nend\n"
        ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(str(socket_path))
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(4095 - len(reply)):
            reply += chunk
    result = {"auth_ok": 0, "uid": 0, "gid": 0, "dir": None, "end": False}
    for line in reply.decode().split("\n")[:-1]:
        for keyword, key, value in (
            ("auth_ok:", "auth_ok", int),
            ("uid:", "uid", int),
            ("gid:", "gid", int),
            ("dir:", "dir", str),
            ("end", "end", lambda _: True),
        ):
            if line.startswith(keyword):
                text = line[len(keyword) :]
                if key != "dir" or text.startswith("/"):
                    result[key] = value(text)
                break
    if not result["end"] or (
        result["auth_ok"] == 1 and (result["uid"] <= 0 or result["gid"] <= 0 or not result["dir"])
    ):
        result["auth_ok"] = -1
    return result, reply


@pytest.fixture
def served_ftp(hashes, tmp_path, monkeypatch):
    """The daemon with its FTP socket, as main() builds it: (HTTP socket, FTP socket)."""
    monkeypatch.delenv("LISTEN_PID", raising=False)
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(_accounts(hashes)))
    http, ftp = tmp_path / "webauth.sock", tmp_path / "ftpauth.sock"
    server = webauth.build_server(
        ["--accounts", str(accounts), "--socket", str(http), "--ftp-socket", str(ftp)]
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield http, ftp
    server.shutdown()
    server.server_close()
    thread.join()


def test_an_ftp_login_gets_the_ids_and_the_chroot_of_the_own_tree(served_ftp, capsys):
    _, ftp = served_ftp
    for login in ("alice@example.net", "alice#example.net", "alice=example.net"):
        result, reply = pure_ftpd(ftp, login, APP_PASSWORD)
        assert result == {
            "auth_ok": 1,
            "uid": FILES_ID,
            "gid": FILES_ID,
            "dir": f"{FILES_DIR}/alice.example.net/./",
            "end": True,
        }
        assert (
            reply
            == (
                f"auth_ok:1\nuid:{FILES_ID}\ngid:{FILES_ID}\ndir:{FILES_DIR}/alice.example.net/./\n"
                "end\n"
            ).encode()
        )
    result, _ = pure_ftpd(ftp, "bob@example.net", OTHER_APP_PASSWORD)
    assert result["auth_ok"] == 1 and result["dir"] == f"{FILES_DIR}/bob.example.net/./"
    assert capsys.readouterr().err == ""


def test_a_failed_ftp_login_is_refused_and_counted(served_ftp, capsys, hashes):
    http, ftp = served_ftp
    for login, password in [
        ("alice@example.net", "guess-1234"),
        ("alice@example.net", MAIN_PASSWORD),
        ("bob@example.net", APP_PASSWORD),  # alice's
        ("alice+Default@example.net", APP_PASSWORD),  # book logins are for CardDAV alone
        ("alice+Shared#example.net", APP_PASSWORD),
        ("carol@example.net", APP_PASSWORD),
        ("alice", APP_PASSWORD),
        ("", ""),
    ]:
        result, reply = pure_ftpd(ftp, login, password)
        assert result["auth_ok"] == -1 and reply == b"auth_ok:-1\nend\n"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"login failed: rip={ATTACKER} realm=ftp user='alice@example.net'"
    assert lines[3] == f"login failed: rip={ATTACKER} realm=ftp user='alice+Default@example.net'"
    assert [banwatch.parse(line) for line in lines] == [
        banwatch.Failure(ipaddress.IPv4Address(ATTACKER), 1)
    ] * 8
    _no_secrets("\n".join(lines), hashes)
    # The HTTP socket is still there, beside it.
    login = _basic("bob@example.net", OTHER_APP_PASSWORD)
    response = ask(http, {"X-Bulwark-Realm": "caldav", "Authorization": login})
    assert response.status == 200


def test_an_ftp_login_from_a_dual_stack_socket_is_counted_for_its_ipv4_address(served_ftp, capsys):
    _, ftp = served_ftp
    result, _ = pure_ftpd(ftp, "alice@example.net", "guess-1234", peer=f"::ffff:{ATTACKER}")
    assert result["auth_ok"] == -1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"login failed: rip={ATTACKER} realm=ftp user='alice@example.net'"
    result, _ = pure_ftpd(ftp, "alice@example.net", "guess-1234", peer="2001:db8::1")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("login failed: rip=2001:db8::1 ") and banwatch.parse(line) is None


def test_an_ftp_login_without_tls_is_refused_unchecked_and_not_counted(served_ftp, capsys, hashes):
    _, ftp = served_ftp
    result, reply = pure_ftpd(ftp, "alice@example.net", APP_PASSWORD, encrypted=0)
    assert result["auth_ok"] == -1 and reply == b"auth_ok:-1\nend\n"
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"ftp refused: rip={ATTACKER} reason=no-tls user='alice@example.net'"
    assert banwatch.parse(line) is None
    _no_secrets(line, hashes)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"",  # pure-ftpd went away
        b"account:alice@example.net\npassword:x\n",  # no end before the connection closed
        b"account:alice@example.net\npassword:x\nend",
        b"account:alice@example.net\naccount:bob@example.net\npassword:x\nend\n",
        b"account:alice@example.net\nno colon\nend\n",
        b"account:" + b"a" * 5000 + b"\nend\n",
        b"".join(b"key%d:%s\n" % (number, b"a" * 100) for number in range(50)) + b"end\n",
    ],
    ids=lambda value: repr(value)[:40],
)
def test_a_request_that_is_not_pure_ftpds_is_none(request_bytes):
    assert webauth.read_extauth(io.BytesIO(request_bytes)) is None


def test_a_request_that_is_not_pure_ftpds_is_refused_on_the_socket(served_ftp, capsys, hashes):
    _, ftp = served_ftp
    request = f"account:alice@example.net\npassword:{APP_PASSWORD}\nno colon\nend\n".encode()
    result, reply = pure_ftpd(ftp, "", "", request=request)
    assert result["auth_ok"] == -1 and reply == b"auth_ok:-1\nend\n"
    request = f"account:alice@example.net\npassword:{APP_PASSWORD}\nend\n".encode()  # no peer
    result, reply = pure_ftpd(ftp, "", "", request=request)
    assert result["auth_ok"] == -1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "misconfigured: not a pure-ftpd extauth request",
        "misconfigured: pure-ftpd's extauth request lacks a field",
    ]
    _no_secrets("\n".join(lines), hashes)


def test_the_extauth_request_is_read_by_its_keys():
    stream = io.BytesIO(
        b"account:alice@example.net\npassword:a:b:c\nlocalhost:198.51.100.11\nlocalport:21\n"
        b"peer:198.51.100.200\nsni_name:\nencrypted:1\nfuture_key:x\nend\nafter the end\n"
    )
    assert webauth.read_extauth(stream) == {
        "account": b"alice@example.net",
        "password": b"a:b:c",
        "localhost": b"198.51.100.11",
        "localport": b"21",
        "peer": b"198.51.100.200",
        "sni_name": b"",
        "encrypted": b"1",
        "future_key": b"x",
    }


def _ftp_request(account: bytes, password: bytes, encrypted: bytes = b"1") -> dict[str, bytes]:
    return {"account": account, "password": password, "peer": ATTACKER.encode(),
            "encrypted": encrypted}  # fmt: skip


def test_ftp_logins_share_the_checks_cache_under_their_own_realm(files_config):
    clock, verify = Clock(), CountingVerify()
    checker = Checker(files_config, Cache(60, clock), verify)
    request = _ftp_request(b"alice@example.net", APP_PASSWORD.encode())
    assert webauth.ftp_login(checker, request)[0].startswith(b"auth_ok:1\n")
    calls = verify.calls
    assert webauth.ftp_login(checker, request)[0].startswith(b"auth_ok:1\n")
    assert verify.calls == calls
    assert checker("files", "alice@example.net", APP_PASSWORD) == "alice@example.net"
    assert verify.calls > calls  # a realm of its own
    clock.now += 60
    assert webauth.ftp_login(checker, request)[0].startswith(b"auth_ok:1\n")
    assert verify.calls > calls + 1


def test_ftp_refusals_that_are_no_failed_login(files_config):
    verify = CountingVerify()
    checker = Checker(files_config, Cache(60), verify)
    reply, line = webauth.ftp_login(
        checker, _ftp_request(b"alice@example.net", APP_PASSWORD.encode(), encrypted=b"0")
    )
    assert reply == webauth.FTP_REFUSED and verify.calls == 0  # no hashing without TLS
    assert line == f"ftp refused: rip={ATTACKER} reason=no-tls user='alice@example.net'"
    reply, line = webauth.ftp_login(
        checker, _ftp_request(b"dave@example.net", OTHER_APP_PASSWORD.encode())
    )
    assert reply == webauth.FTP_REFUSED  # dave logs in, but has no files
    assert line == f"ftp refused: rip={ATTACKER} reason=no-files user='dave@example.net'"
    assert banwatch.parse(line) is None
    reply, line = webauth.ftp_login(checker, _ftp_request(b"\xffalice@example.net", b"x"))
    assert reply == webauth.FTP_REFUSED
    assert line == f"login failed: rip={ATTACKER} realm=ftp user='\\\\xffalice@example.net'"
    reply, line = webauth.ftp_login(checker, _ftp_request(b"alice@example.net", b"\xff"))
    assert reply == webauth.FTP_REFUSED
    assert line == f"login failed: rip={ATTACKER} realm=ftp user='alice@example.net'"


# --- sockets from systemd ---------------------------------------------------------------------

ACTIVATIONS = [
    ({"LISTEN_FDS": "1"}, {"http": 3}),
    ({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "bulwark-webauth.socket"}, {"http": 3}),
    ({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}, {"http": 3}),
    ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:ftp"}, {"http": 3, "ftp": 4}),
    ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "ftp:http"}, {"ftp": 3, "http": 4}),
    ({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "ftp"}, None),
    ({"LISTEN_FDS": "2"}, None),
    ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:http"}, None),
    ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a.socket:b.socket"}, None),
    ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:ftp:extra"}, None),
    ({"LISTEN_FDS": "3", "LISTEN_FDNAMES": "http:ftp:x"}, None),
    ({"LISTEN_FDS": "0"}, None),
    ({}, None),
]


@pytest.mark.parametrize(("environ", "expected"), ACTIVATIONS, ids=str)
def test_systemds_sockets_are_told_apart_by_name(environ, expected):
    environ = {"LISTEN_PID": "42", **environ}
    if expected is None:
        with pytest.raises(StartupError, match="LISTEN_FDNAMES"):
            webauth.activated_fds(environ, 42)
    else:
        assert webauth.activated_fds(environ, 42) == expected
    assert webauth.activated_fds({**environ, "LISTEN_PID": "41"}, 42) == {}  # not for us


# --- installed on hosts ------------------------------------------------------------------------


def test_the_checker_needs_the_standard_library_and_argon2_alone():
    """It runs as /usr/local/sbin/bulwark-webauth on hosts without bulwark."""
    tree = ast.parse(Path(webauth.__file__).read_text())
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) == {"argon2"}


def test_systemd_socket_activation(hashes, tmp_path):
    """Started with LISTEN_FDS=1 and LISTEN_PID=its pid, it serves on file descriptor 3."""
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(_accounts(hashes)))
    socket_path = tmp_path / "activated.sock"
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(socket_path))
    listening.listen()
    # What systemd does between fork and exec: the socket on fd 3, LISTEN_PID the child's pid.
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid());"
        "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
    )
    script = tmp_path / "bulwark-webauth"
    script.write_text(Path(webauth.__file__).read_text())
    env = {**os.environ, "LISTEN_FDS": "1", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, "-c", launcher, str(listening.fileno()), "-I", str(script)],
        env=env,
        pass_fds=[listening.fileno()],
        stderr=subprocess.PIPE,
    ) as daemon:
        try:
            login = _basic("bob=example.net", OTHER_APP_PASSWORD)
            response = ask(socket_path, {"X-Bulwark-Realm": "caldav", "Authorization": login})
            assert response.status == 200
            assert response.getheader("X-Bulwark-User") == "bob@example.net"
        finally:
            daemon.terminate()
        assert daemon.stderr is not None and daemon.stderr.read() == b""
    listening.close()


@pytest.mark.parametrize("names", ["http:ftp", "ftp:http"])
def test_systemd_socket_activation_with_two_named_sockets(hashes, tmp_path, names):
    """Started with LISTEN_FDS=2 and LISTEN_FDNAMES naming them (FileDescriptorName=), it
    serves nginx on the socket named http and pure-ftpd on the one named ftp."""
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(_accounts(hashes)))
    paths = {name: tmp_path / f"{name}.sock" for name in ("http", "ftp")}
    listening = {}
    for name, path in paths.items():
        listening[name] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening[name].bind(str(path))
        listening[name].listen()
    ordered = [listening[name].fileno() for name in names.split(":")]
    # What systemd does between fork and exec: the sockets on fds 3 and 4 (moved out of the way
    # first, so that neither lands on the other), LISTEN_PID the child's pid.
    launcher = (
        "import fcntl, os, sys\n"
        "fds = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]\n"
        "for target, fd in enumerate(fds, 3):\n"
        "    os.dup2(fd, target)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])\n"
    )
    script = tmp_path / "bulwark-webauth"
    script.write_text(Path(webauth.__file__).read_text())
    env = {
        **os.environ,
        "LISTEN_FDS": "2",
        "LISTEN_FDNAMES": names,
        "CREDENTIALS_DIRECTORY": str(tmp_path),
    }
    with subprocess.Popen(
        [sys.executable, "-c", launcher, *map(str, ordered), "-I", str(script)],
        env=env,
        pass_fds=ordered,
        stderr=subprocess.PIPE,
    ) as daemon:
        try:
            login = _basic("bob=example.net", OTHER_APP_PASSWORD)
            response = ask(paths["http"], {"X-Bulwark-Realm": "caldav", "Authorization": login})
            assert response.status == 200
            assert response.getheader("X-Bulwark-User") == "bob@example.net"
            result, _ = pure_ftpd(paths["ftp"], "bob@example.net", OTHER_APP_PASSWORD)
            assert result["auth_ok"] == 1
            assert result["dir"] == f"{FILES_DIR}/bob.example.net/./"
        finally:
            daemon.terminate()
        assert daemon.stderr is not None and daemon.stderr.read() == b""
    for sock in listening.values():
        sock.close()


# --- quotas: usage on disk, WebDAV refusals, pure-ftpd's .ftpquota -----------------------------

# alice's quota in the quota tests, bytes; bob has none.
QUOTA = 1000
ALICE_ROOT = "alice.example.net"


def _write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def _alice_files(files_dir: Path) -> Path:
    """Where alice's WebDAV tree is on disk: `<files_dir>/<root>/<root>/files`."""
    return files_dir / ALICE_ROOT / ALICE_ROOT / "files"


def _load(tmp_path: Path, data: dict) -> Config:
    path = tmp_path / "accounts"
    path.write_text(json.dumps(data))
    return webauth.load_config(path)


@pytest.fixture
def quota_config(hashes, tmp_path) -> Config:
    """alice with a quota of QUOTA bytes and 600 of them used (`a`); bob without a quota."""
    files_dir = tmp_path / "files"
    _write(_alice_files(files_dir) / "a", 600)
    data = _accounts(hashes)
    data.update(files_dir=str(files_dir), files_quotas={"alice": QUOTA})
    return _load(tmp_path, data)


def test_usage_counts_regular_files_and_folders_never_following_links(tmp_path):
    chroot = tmp_path / "chroot"
    _write(chroot / "r" / "files" / "a", 100)
    _write(chroot / "r" / "files" / "d" / "b", 20)
    _write(chroot / "r" / "files" / "d" / ".ftpquota", 3)  # a user's file, below the top
    (chroot / "r" / "files" / "empty").mkdir()
    _write(chroot / ".ftpquota", 50)  # pure-ftpd's, at the top
    outside = _write(tmp_path / "outside" / "big", 10_000)
    (chroot / "r" / "files" / "link").symlink_to(outside)
    (chroot / "r" / "files" / "dirlink").symlink_to(outside.parent)
    os.mkfifo(chroot / "r" / "files" / "fifo")
    # Folders r, files, d, empty; files a, b and d/.ftpquota.
    assert webauth.tree_usage(chroot) == webauth.Usage(files=7, size=123)
    assert webauth.tree_usage(str(chroot / "r")) == webauth.Usage(files=6, size=123)
    assert webauth.tree_usage(tmp_path / "absent") == webauth.Usage(0, 0)
    assert webauth.tree_usage(outside) == webauth.Usage(0, 0)  # a file is no tree
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OSError, match="symbolic links"):  # what cannot be counted is no 0
        webauth.tree_usage(loop)


def test_the_quota_field_is_read_and_optional(quota_config, config):
    assert quota_config.files_quotas == {"alice": QUOTA}
    assert config.files_quotas == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("files_quotas", [1000]), "field 'files_quotas' must be an object"),
        (_set("files_quotas", {"carol": 1}), "field 'files_quotas' 'carol': not in 'files_roots'"),
        (_set("files_quotas", {"alice": -1}), "field 'files_quotas' 'alice': -1 is not a number"),
        (_set("files_quotas", {"alice": "1000"}), "field 'files_quotas' 'alice': '1000' is not"),
        (_set("files_quotas", {"alice": 1000.0}), "field 'files_quotas' 'alice': 1000.0 is not"),
        (_set("files_quotas", {"alice": True}), "field 'files_quotas' 'alice': True is not"),
        (_set("files_quotas", {"alice": None}), "field 'files_quotas' 'alice': None is not"),
        (_set("files_quotas", {"alice": 2**63}), "field 'files_quotas' 'alice': 922"),
        (
            lambda data: data.update(files_quotas={"alice": 1}, files_dir=None),
            "field 'files_quotas' needs 'files_dir'",
        ),
        (_set("content_origin", "https://usercontent.example.net"), "field 'content_origin'"),
        (_set("content_origin", "usercontent"), "field 'content_origin'"),
        (_set("content_origin", 5), "field 'content_origin'"),
        (_set("content_link_seconds", 0), "field 'content_link_seconds'"),
        (_set("content_link_seconds", -5), "field 'content_link_seconds'"),
        (_set("content_link_seconds", "3600"), "field 'content_link_seconds'"),
        (_set("content_link_seconds", True), "field 'content_link_seconds'"),
        (_set("content_link_seconds", 1.5), "field 'content_link_seconds'"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_bad_quota_or_content_field_stops_the_daemon_naming_it(tmp_path, hashes, change, message):
    data = _accounts(hashes)
    change(data)
    path = tmp_path / "accounts"
    path.write_text(json.dumps(data))
    with pytest.raises(StartupError, match=re.escape(message)) as error:
        webauth.load_config(path)
    assert str(path) in str(error.value)


def _quota(config, method, uri, length=None, destination=None, overwrite=True, user="alice"):
    """quota_refusal for a request files_access allowed (in mode tree)."""
    decision = files_access(
        config, f"{user}@example.net", "tree", method, uri, destination, TREE_HOST
    )
    assert decision is not None
    return webauth.quota_refusal(config, decision, method, length, overwrite)


def test_a_put_fits_up_to_the_quota_and_not_a_byte_more(quota_config):
    new = f"{ALICE}/b"
    assert _quota(quota_config, "PUT", new, 399) is None
    assert _quota(quota_config, "PUT", new, 400) is None  # exactly at the quota
    assert _quota(quota_config, "PUT", new, 401) == "quota"
    assert _quota(quota_config, "PUT", new, 10**12) == "quota"
    assert _quota(quota_config, "put", new, 401) == "quota"  # methods: be safe


def test_a_put_over_a_file_needs_only_what_it_adds(quota_config):
    assert _quota(quota_config, "PUT", f"{ALICE}/a", 1000) is None  # replaces a's 600 bytes
    assert _quota(quota_config, "PUT", f"{ALICE}/a", 1001) == "quota"
    assert _quota(quota_config, "PUT", f"{ALICE}/a", 0) is None
    _write(_alice_files(Path(quota_config.files_dir)) / "d" / "a", 300)
    # A folder of the same name is no file replaced (mod_dav refuses that PUT anyway).
    assert _quota(quota_config, "PUT", f"{ALICE}/d", 101) == "quota"


def test_a_put_without_a_length_is_refused_under_a_quota_alone(quota_config):
    assert _quota(quota_config, "PUT", f"{ALICE}/b", None) == "length-required"
    assert _quota(quota_config, "PUT", "/bob.example.net/files/b", None, user="bob") is None


def test_the_declared_length_is_nginxs_else_finders():
    assert webauth.declared_length("400", None) == 400
    assert webauth.declared_length("400", "9000") == 400
    assert webauth.declared_length("", "9000") == 9000  # chunked: $content_length is empty
    assert webauth.declared_length(None, "0") == 0
    assert webauth.declared_length(None, None) is None
    assert webauth.declared_length("", "") is None
    for bad in ("-1", "1e3", " 12", "0x10", "12 ", "9" * 19, "\u0661"):
        assert webauth.declared_length(bad, None) is None
        assert webauth.declared_length(None, bad) is None


def test_a_copy_needs_the_size_of_its_source_less_what_it_overwrites(quota_config):
    tree = _alice_files(Path(quota_config.files_dir))

    def copy(source, destination, overwrite=True):
        return _quota(
            quota_config, "COPY", f"{ALICE}/{source}", None, f"{ALICE_URL}/{destination}", overwrite
        )

    _write(tree / "d" / "x", 200)
    _write(tree / "d" / "sub" / "y", 100)  # usage 900 (a: 600)
    assert copy("d/", "new/") == "quota"  # a folder: its files' 300 bytes
    assert copy("d", "new") == "quota"
    assert copy("d/sub", "n") is None  # 100: exactly at the quota
    _write(tree / "e" / "z", 100)  # usage 1000
    assert copy("d", "e") == "quota"  # replaces 100 bytes with 300
    (tree / "e" / "z").write_bytes(b"x" * 300)  # usage 1200: over
    assert copy("d", "e") == "quota"  # adds nothing, but the tree is past its quota already
    (tree / "a").write_bytes(b"x" * 400)  # usage 1000
    assert copy("d", "e") is None  # replaces 300 bytes with 300
    assert copy("d", "e", overwrite=False) == "quota"  # Overwrite: F replaces nothing
    # A file: its size, less the file it replaces.
    assert copy("d/x", "e/z") is None  # 200 over 300
    assert copy("a", "e/z") == "quota"  # 400 over 300
    assert copy("d/x", "b") == "quota"


def test_what_adds_no_bytes_is_never_refused_for_quota(quota_config):
    _write(_alice_files(Path(quota_config.files_dir)) / "big", 5000)  # far over
    for method in ("MKCOL", "MOVE", "DELETE", "PROPPATCH", "LOCK", "UNLOCK", "GET", "HEAD",
                   "PROPFIND", "OPTIONS"):  # fmt: skip
        destination = f"{ALICE_URL}/moved" if method == "MOVE" else None
        assert _quota(quota_config, method, f"{ALICE}/big", destination=destination) is None
    assert _quota(quota_config, "PUT", f"{ALICE}/n", 0) == "quota"  # still over


def test_myfiles_counts_the_same_tree(quota_config):
    decision = files_access(
        quota_config, "alice@example.net", "rooted", "PUT", "/b", None, ROOTED_HOST
    )
    assert webauth.quota_refusal(quota_config, decision, "PUT", 400, True) is None
    assert webauth.quota_refusal(quota_config, decision, "PUT", 401, True) == "quota"


# --- quotas and content links over HTTP ----------------------------------------------------------

CONTENT_ORIGIN = "usercontent.example.net"
CONTENT_KEY = bytes(range(32)) + b"-the rest of the content key"


@pytest.fixture
def served_files(hashes, tmp_path, monkeypatch):
    """The daemon with alice's tree on disk (`a`, 600 bytes, of a quota of QUOTA), a content
    origin and its key: (socket, alice's tree on disk)."""
    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    files_dir = tmp_path / "files"
    tree = _alice_files(files_dir)
    _write(tree / "a", 600)
    (tree / "d").mkdir()
    data = _accounts(hashes)
    data.update(
        files_dir=str(files_dir), files_quotas={"alice": QUOTA}, content_origin=CONTENT_ORIGIN
    )
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(data))
    key = tmp_path / "content-key"
    key.write_bytes(CONTENT_KEY)
    socket_path = tmp_path / "webauth.sock"
    server = webauth.build_server(
        ["--accounts", str(accounts), "--socket", str(socket_path), "--content-key", str(key)]
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield socket_path, tree
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_put_over_the_quota_gets_403_saying_why(served_files, capsys, hashes):
    socket_path, _ = served_files
    put = _files_headers("alice@example.net", "tree", "PUT", f"{ALICE}/b")
    response = ask(socket_path, {**put, "X-Content-Length": "400"})
    assert response.status == 200
    assert response.getheader("X-Bulwark-Backend-Path") == f"{ALICE}/b"
    assert response.getheader("X-Bulwark-Refusal") is None
    response = ask(socket_path, {**put, "X-Content-Length": "401"})
    assert response.status == 403
    assert response.getheader("X-Bulwark-Refusal") == "quota"
    assert response.getheader("X-Bulwark-Backend-Path") is None
    # Chunked: no $content_length; Finder says how much, others cannot be counted.
    response = ask(socket_path, {**put, "X-Content-Length": "", "X-Expected-Entity-Length": "400"})
    assert response.status == 200
    response = ask(socket_path, {**put, "X-Expected-Entity-Length": "401"})
    assert response.getheader("X-Bulwark-Refusal") == "quota"
    response = ask(socket_path, put)
    assert response.status == 403
    assert response.getheader("X-Bulwark-Refusal") == "length-required"
    rooted = _files_headers("alice@example.net", "rooted", "PUT", "/a")
    assert ask(socket_path, {**rooted, "X-Content-Length": "1000"}).status == 200  # replaces a
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"files refused: rip={ATTACKER} reason=quota user='alice@example.net' path='{ALICE}/b'",
        f"files refused: rip={ATTACKER} reason=quota user='alice@example.net' path='{ALICE}/b'",
        f"files refused: rip={ATTACKER} reason=length-required user='alice@example.net' "
        f"path='{ALICE}/b'",
    ]
    assert all(banwatch.parse(line) is None for line in lines)
    _no_secrets("\n".join(lines), hashes)


def test_a_copy_over_the_quota_gets_403_and_overwrite_f_counts_nothing_replaced(
    served_files, capsys
):
    socket_path, tree = served_files
    _write(tree / "d" / "x", 300)
    _write(tree / "e" / "x", 300)
    (tree / "a").write_bytes(b"x" * 200)  # usage 800
    copy = _files_headers("alice@example.net", "tree", "COPY", f"{ALICE}/d", f"{ALICE_URL}/e")
    assert ask(socket_path, copy).status == 200  # replaces e's 300 bytes
    assert ask(socket_path, {**copy, "X-Overwrite": "T"}).status == 200
    response = ask(socket_path, {**copy, "X-Overwrite": "F"})
    assert response.status == 403
    assert response.getheader("X-Bulwark-Refusal") == "quota"
    assert response.getheader("X-Bulwark-Backend-Destination") is None
    elsewhere = _files_headers(
        "alice@example.net", "tree", "COPY", f"{ALICE}/d/", f"{ALICE_URL}/f/"
    )
    assert ask(socket_path, elsewhere).getheader("X-Bulwark-Refusal") == "quota"
    (line, _) = capsys.readouterr().err.splitlines()
    assert line == webauth.refusal_line(ATTACKER, "alice@example.net", f"{ALICE}/d", "quota")


def test_a_path_refusal_says_forbidden(served_files, capsys):
    socket_path, _ = served_files
    headers = _files_headers("alice@example.net", "tree", "PUT", "/bob.example.net/files/x")
    response = ask(socket_path, {**headers, "X-Content-Length": "1"})
    assert response.status == 403
    assert response.getheader("X-Bulwark-Refusal") == "forbidden"
    (line,) = capsys.readouterr().err.splitlines()
    assert line == webauth.refusal_line(ATTACKER, "alice@example.net", "/bob.example.net/files/x")


def test_a_tree_that_cannot_be_counted_is_no_tree_that_fits(served_files, capsys):
    socket_path, tree = served_files
    chroot = tree.parent.parent
    moved = chroot.with_name("moved")
    chroot.rename(moved)
    chroot.symlink_to(chroot)  # a loop: os.scandir fails with ELOOP, even for root
    headers = _files_headers("alice@example.net", "tree", "PUT", f"{ALICE}/b")
    response = ask(socket_path, {**headers, "X-Content-Length": "1"})
    assert response.status == 500
    assert response.getheader("X-Bulwark-Backend-Path") is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("misconfigured: cannot count the files of 'alice@example.net': ")


# --- content links -------------------------------------------------------------------------------

NOW = 1_700_000_000
FILE_PATH = f"{ALICE}/d/caf%C3%A9%20%E2%80%94.html"


def _link_target(link: str) -> str:
    """The request target a link makes on the content origin."""
    prefix = f"https://{CONTENT_ORIGIN}"
    assert link.startswith(f"{prefix}/")
    return link[len(prefix) :]


def test_a_content_link_names_its_backend_path_until_it_expires():
    link = webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, FILE_PATH, NOW + 60)
    expires, mac, rest = _link_target(link)[1:].split("/", 2)
    assert expires == str(NOW + 60) and f"/{rest}" == FILE_PATH
    expected = hmac.new(CONTENT_KEY, f"{NOW + 60}\n{FILE_PATH}".encode(), hashlib.sha256).digest()
    assert mac == base64.urlsafe_b64encode(expected).decode().rstrip("=") and len(mac) == 43
    target = _link_target(link)
    assert webauth.content_target(CONTENT_KEY, target, NOW) == FILE_PATH
    assert webauth.content_target(CONTENT_KEY, target, NOW + 59.9) == FILE_PATH
    assert webauth.content_target(CONTENT_KEY, f"{target}?download=1", NOW) == FILE_PATH
    assert webauth.content_target(CONTENT_KEY, target, NOW + 60) is None  # expired
    assert webauth.content_target(CONTENT_KEY, target, NOW + 10**6) is None
    assert webauth.content_target(b"another key" * 4, target, NOW) is None


def _tampered(target: str) -> list[str]:
    """The link's target with its expiry, MAC or path changed, one at a time."""
    _, expires, mac, rest = target.split("/", 3)
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    return [
        f"/{int(expires) + 1}/{mac}/{rest}",  # a later expiry
        f"/0{expires}/{mac}/{rest}",  # the same time, spelled otherwise
        f"/{expires}/{flipped}/{rest}",
        f"/{expires}/{mac[:-1]}/{rest}",
        f"/{expires}/{mac}=/{rest}",
        f"/{expires}/{mac}/{rest.replace('d/', 'e/')}",
        f"/{expires}/{mac}/{rest}x",
        f"/{expires}/{mac}/{rest.replace('alice', 'bob')}",
        f"/{expires}/{mac}/{rest.replace('%C3%A9', '%c3%a9')}",  # decodes the same, signed not
        f"/{expires}/{mac}//{rest}",
        f"/{expires}/{mac}/{rest}/",
        f"/{expires}/{mac}",
        f"/{expires}/{mac}/",
        f"/{expires}",
        f"{expires}/{mac}/{rest}",
        f"//{expires}/{mac}/{rest}",
        "/",
        "",
    ]


def test_a_tampered_content_link_names_nothing():
    target = _link_target(webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, FILE_PATH, NOW + 60))
    for tampered in _tampered(target):
        assert webauth.content_target(CONTENT_KEY, tampered, NOW) is None, tampered


@pytest.mark.parametrize(
    "path",
    [
        f"{ALICE}/d/",  # a collection
        f"{ALICE}/",
        ALICE,  # the top of a tree
        "/alice.example.net/",
        "/alice.example.net/other/x",
        "/x",
        f"{ALICE}/d/../x",
        f"{ALICE}/../../bob.example.net/files/x",
        f"{ALICE}/%2e%2e/x",
        f"{ALICE}/./x",
        f"{ALICE}//x",
        f"{ALICE}/a%2Fb",
        f"{ALICE}/a%00",
        f"{ALICE}/caf\xc3\xa9",  # not as files_access spells it
        f"{ALICE}/x#y",
        "",
    ],
)
def test_a_link_signed_for_no_file_below_a_tree_names_nothing(path):
    """Even a link made with the key (no such link is ever made) must name a file as
    files_access spells one."""
    target = _link_target(webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, path, NOW + 60))
    assert webauth.content_target(CONTENT_KEY, target, NOW) is None


def test_the_content_realm_serves_a_valid_link_without_any_login(served_files, capsys, hashes):
    socket_path, _ = served_files
    link = webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, FILE_PATH, int(time.time()) + 60)
    headers = {
        "X-Bulwark-Realm": "content",
        "X-Real-IP": ATTACKER,
        "X-Original-URI": _link_target(link),
        "X-Original-Method": "GET",
    }
    for extra in ({}, {"Authorization": _basic("alice@example.net", "wrong")},
                  {"Authorization": "Basic !!!"}, {"X-Original-Method": "HEAD"}):  # fmt: skip
        response = ask(socket_path, {**headers, **extra})
        assert response.status == 200
        assert response.getheader("X-Bulwark-Backend-Path") == FILE_PATH
        assert response.getheader("X-Bulwark-User") is None
        assert response.getheader("WWW-Authenticate") is None
    assert capsys.readouterr().err == ""  # a wrong password here is never checked nor counted


def test_the_content_realm_refuses_expired_and_invalid_links(served_files, capsys, hashes):
    socket_path, _ = served_files
    now = int(time.time())
    expired = webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, FILE_PATH, now - 1)
    valid = webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, FILE_PATH, now + 60)
    headers = {"X-Bulwark-Realm": "content", "X-Real-IP": ATTACKER, "X-Original-Method": "GET"}
    attempts = [
        (_link_target(expired), "GET", "expired"),
        (_tampered(_link_target(valid))[0], "GET", "invalid"),
        (_tampered(_link_target(expired))[0], "GET", "invalid"),  # later, but forged
        ("/x login failed: rip=6.6.6.6", "GET", "invalid"),
        (_link_target(valid), "PUT", "method"),
        (_link_target(valid), "DELETE", "method"),
    ]
    for uri, method, _ in attempts:
        response = ask(socket_path, {**headers, "X-Original-URI": uri, "X-Original-Method": method})
        assert response.status == 403
        assert response.getheader("X-Bulwark-Refusal") == "forbidden"
        assert response.getheader("X-Bulwark-Backend-Path") is None
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"content refused: rip={ATTACKER} reason={reason}" for *_, reason in attempts]
    assert all(banwatch.parse(line) is None for line in lines)
    response = ask(socket_path, {"X-Bulwark-Realm": "content", "X-Original-Method": "GET"})
    assert response.status == 500
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("misconfigured: realm content needs")
    line = webauth.content_refusal_line("6.6.6.6 reason=expired", "invalid")
    assert line == "content refused: rip=- reason=invalid"


def test_the_content_realm_without_a_key_is_a_misconfiguration(served, capsys):
    link = webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, FILE_PATH, int(time.time()) + 60)
    headers = {
        "X-Bulwark-Realm": "content",
        "X-Original-URI": _link_target(link),
        "X-Original-Method": "GET",
    }
    response = ask(served, headers)
    assert response.status == 500
    assert response.getheader("X-Bulwark-Backend-Path") is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("misconfigured: realm content needs a content key")


@pytest.mark.parametrize("destination", ["document", "iframe", "frame", "embed", "object"])
def test_a_browser_shown_a_file_as_a_page_is_sent_to_the_content_origin(
    served_files, capsys, destination
):
    socket_path, tree = served_files
    _write(tree / "d" / "caf\u00e9 \u2014.html", 10)
    for mode, uri in (("tree", FILE_PATH), ("rooted", "/d/caf%C3%A9%20%E2%80%94.html")):
        for method in ("GET", "HEAD"):
            headers = _files_headers("alice@example.net", mode, method, uri)
            before = int(time.time())
            response = ask(socket_path, {**headers, "X-Fetch-Dest": destination})
            after = int(time.time())
            assert response.status == 403
            assert response.getheader("X-Bulwark-Refusal") == "content"
            assert response.getheader("X-Bulwark-Backend-Path") is None
            link = response.getheader("X-Bulwark-Location")
            target = _link_target(link)
            assert webauth.content_target(CONTENT_KEY, target, after) == FILE_PATH
            expires = int(target.split("/")[1])
            assert before + 3600 <= expires <= after + 3600
            assert webauth.content_target(CONTENT_KEY, target, expires) is None
    assert capsys.readouterr().err == ""


def test_other_fetches_of_a_file_are_served_as_before(served_files):
    socket_path, tree = served_files
    _write(tree / "d" / "x.html", 10)
    path = f"{ALICE}/d/x.html"
    for method, destination in [
        ("GET", None),  # a WebDAV client, curl
        ("GET", "image"),
        ("GET", "script"),
        ("GET", "empty"),  # fetch()
        ("GET", "Document"),
        ("PROPFIND", "document"),
        ("PUT", "document"),
    ]:
        headers = _files_headers("alice@example.net", "tree", method, path)
        headers["X-Content-Length"] = "1"
        if destination is not None:
            headers["X-Fetch-Dest"] = destination
        response = ask(socket_path, headers)
        assert response.status == 200, (method, destination)
        assert response.getheader("X-Bulwark-Backend-Path") == path
        assert response.getheader("X-Bulwark-Location") is None
    # Folders are listings the files origin makes itself, however they are spelled.
    for uri in (f"{ALICE}/d/", f"{ALICE}/d", ALICE, f"{ALICE}/"):
        headers = _files_headers("alice@example.net", "tree", "GET", uri)
        response = ask(socket_path, {**headers, "X-Fetch-Dest": "document"})
        assert response.status == 200, uri
        assert response.getheader("X-Bulwark-Location") is None


def test_without_a_content_origin_and_key_files_are_served_as_before(served, config):
    headers = _files_headers("alice@example.net", "tree", "GET", f"{ALICE}/x.html")
    response = ask(served, {**headers, "X-Fetch-Dest": "document"})
    assert response.status == 200
    assert response.getheader("X-Bulwark-Backend-Path") == f"{ALICE}/x.html"
    decision = files_access(
        config, "alice@example.net", "tree", "GET", f"{ALICE}/x.html", None, TREE_HOST
    )
    with_origin = dataclasses.replace(config, content_origin=CONTENT_ORIGIN)
    assert webauth.navigation_link(config, CONTENT_KEY, decision, "GET", "document", NOW) is None
    assert webauth.navigation_link(with_origin, None, decision, "GET", "document", NOW) is None
    link = webauth.navigation_link(with_origin, CONTENT_KEY, decision, "GET", "document", NOW)
    assert link == webauth.content_link(CONTENT_KEY, CONTENT_ORIGIN, f"{ALICE}/x.html", NOW + 3600)


# --- the content key ----------------------------------------------------------------------------


def test_the_content_key_comes_from_its_option_or_the_credential(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(CONTENT_KEY)
    credential = tmp_path / "credentials" / "content-key"
    _write(credential, 40)
    environ = {"CREDENTIALS_DIRECTORY": str(credential.parent)}
    assert webauth.load_content_key(key, environ) == CONTENT_KEY
    assert webauth.load_content_key(None, environ) == b"x" * 40
    assert webauth.load_content_key(None, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None
    assert webauth.load_content_key(None, {}) is None
    key.write_bytes(b"k" * 32)
    assert webauth.load_content_key(key, {}) == b"k" * 32


@pytest.mark.parametrize("where", ["option", "credential"])
def test_a_short_or_missing_content_key_stops_the_daemon_naming_it(
    hashes, tmp_path, monkeypatch, where
):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(_accounts(hashes)))
    key = tmp_path / "content-key"
    secret = b"short-secret-31-bytes-long-here"
    key.write_bytes(secret)
    argv = ["--accounts", str(accounts), "--socket", str(tmp_path / "s")]
    if where == "option":
        argv += ["--content-key", str(key)]
    else:
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    message = f"{key}: a content key needs at least 32 bytes"
    with pytest.raises(StartupError, match=re.escape(message)) as error:
        webauth.build_server(argv)
    assert secret.decode() not in str(error.value)
    assert not (tmp_path / "s").exists()
    if where == "option":
        argv[-1] = str(tmp_path / "absent")
        with pytest.raises(StartupError, match=re.escape(f"{tmp_path / 'absent'}: cannot read")):
            webauth.build_server(argv)


def test_a_content_origin_needs_a_content_key(hashes, tmp_path, monkeypatch):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    data = _accounts(hashes)
    data["content_origin"] = CONTENT_ORIGIN
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(data))
    argv = ["--accounts", str(accounts), "--socket", str(tmp_path / "s")]
    dav = ["--accounts", str(accounts), "--socket", str(tmp_path / "dav")]
    webauth.build_server(dav).server_close()  # bulwark-webauth (DAV) reads the file, no key
    argv.append("--files")
    with pytest.raises(StartupError, match="field 'content_origin' needs a content key"):
        webauth.build_server(argv)
    assert not (tmp_path / "s").exists()
    key = tmp_path / "content-key"
    key.write_bytes(CONTENT_KEY)
    webauth.build_server([*argv, "--content-key", str(key)]).server_close()
    data.pop("content_origin")  # a key alone serves the content realm: fine
    accounts.write_text(json.dumps(data))
    webauth.build_server([*argv, "--content-key", str(key)]).server_close()


# --- FTP under a quota ------------------------------------------------------------------------


@pytest.fixture
def ftp_quota(hashes, tmp_path):
    """A checker whose accounts give alice a quota of QUOTA bytes; alice's chroot holds a
    600-byte file and a folder, bob's nothing."""
    files_dir = tmp_path / "files"
    _write(_alice_files(files_dir) / "a", 600)
    _write(files_dir / "bob.example.net" / "bob.example.net" / "files" / "b", 5)
    data = _accounts(hashes)
    data.update(files_dir=str(files_dir), files_quotas={"alice": QUOTA})
    return Checker(_load(tmp_path, data), Cache(60)), files_dir / ALICE_ROOT


def test_an_ftp_login_under_a_quota_writes_the_usage_for_pure_ftpd(ftp_quota):
    checker, chroot = ftp_quota
    (chroot / ".ftpquota").write_text("1 999999 and more\n")  # pure-ftpd's stale count
    reply, line = webauth.ftp_login(
        checker, _ftp_request(b"alice@example.net", APP_PASSWORD.encode())
    )
    assert line is None
    assert (
        reply
        == (
            f"auth_ok:1\nuid:{FILES_ID}\ngid:{FILES_ID}\ndir:{chroot}/./\n"
            f"user_quota_size:{QUOTA}\nend\n"
        ).encode()
    )
    quota_file = chroot / ".ftpquota"
    # Folders alice.example.net and files, file a: as pure-quotacheck counts them.
    assert quota_file.read_text() == "3 600\n"  # rewritten whole, in place
    assert sorted(path.name for path in chroot.iterdir()) == [".ftpquota", ALICE_ROOT]
    _write(_alice_files(chroot.parent) / "d" / "b", 50)
    webauth.ftp_login(checker, _ftp_request(b"alice@example.net", APP_PASSWORD.encode()))
    assert quota_file.read_text() == "5 650\n"  # recounted, its own bytes left out


def test_an_ftp_login_without_a_quota_writes_nothing(ftp_quota):
    checker, chroot = ftp_quota
    reply, line = webauth.ftp_login(
        checker, _ftp_request(b"bob@example.net", OTHER_APP_PASSWORD.encode())
    )
    assert line is None and b"user_quota_size" not in reply and reply.endswith(b"\nend\n")
    assert not (chroot.parent / "bob.example.net" / ".ftpquota").exists()


def test_an_ftp_login_whose_usage_cannot_be_written_is_refused(ftp_quota, hashes):
    checker, chroot = ftp_quota
    (chroot / ".ftpquota").mkdir()  # a folder cannot be written
    request = _ftp_request(b"alice@example.net", APP_PASSWORD.encode())
    reply, line = webauth.ftp_login(checker, request)
    assert reply == webauth.FTP_REFUSED
    assert line == (
        f"ftp refused: rip={ATTACKER} reason=quota-file error='Is a directory' "
        "user='alice@example.net'"
    )
    assert banwatch.parse(line) is None
    _no_secrets(line, hashes)
    assert sorted(path.name for path in chroot.iterdir()) == [".ftpquota", ALICE_ROOT]  # no litter
    (chroot / ".ftpquota").rmdir()
    moved = chroot.with_name("elsewhere")
    chroot.rename(moved)  # no chroot at all
    reply, line = webauth.ftp_login(checker, request)
    assert reply == webauth.FTP_REFUSED and "reason=quota-file" in line


def test_the_usage_file_is_created_owner_only_and_never_followed_as_a_link(ftp_quota, tmp_path):
    checker, chroot = ftp_quota
    request = _ftp_request(b"alice@example.net", APP_PASSWORD.encode())
    webauth.ftp_login(checker, request)
    assert (chroot / ".ftpquota").stat().st_mode & 0o7777 == 0o600
    (chroot / ".ftpquota").unlink()
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    (chroot / ".ftpquota").symlink_to(target)
    reply, line = webauth.ftp_login(checker, request)
    assert reply == webauth.FTP_REFUSED and "reason=quota-file" in line
    assert target.read_text() == "untouched\n"


# --- PROPFIND through the checker: RFC 4331's quota properties ----------------------------------

# What Apache 2.4's mod_dav_fs answers a PROPFIND (Depth 1) naming a client's property, the
# resource type and RFC 4331's two, which it does not know: those in a 404 propstat of each
# response, with mod_dav's prefixes (lp1 its live properties, g0 what it does not know, ns1 the
# client's namespace, declared on the root or where used).
APACHE_MULTISTATUS = b"""<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns1="urn:bulwark:test" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:" xmlns:g0="DAV:">
<D:href>/alice.example.net/files/</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype><D:collection/></lp1:resourcetype>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
<D:propstat>
<D:prop>
<ns1:colour/>
<g0:quota-available-bytes/>
<g0:quota-used-bytes/>
</D:prop>
<D:status>HTTP/1.1 404 Not Found</D:status>
</D:propstat>
</D:response>
<D:response xmlns:lp1="DAV:" xmlns:g0="DAV:">
<D:href>/alice.example.net/files/a</D:href>
<D:propstat>
<D:prop>
<ns1:colour xmlns:ns1="urn:bulwark:test" xml:lang="en">teal <ns1:shade>dark</ns1:shade></ns1:colour>
<lp1:resourcetype/>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
<D:propstat>
<D:prop>
<g0:quota-available-bytes/>
<g0:quota-used-bytes/>
</D:prop>
<D:status>HTTP/1.1 404 Not Found</D:status>
</D:propstat>
</D:response>
</D:multistatus>
"""
QUOTA_PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:b="urn:bulwark:test">'
    b"<D:prop><b:colour/><D:resourcetype/><D:quota-available-bytes/><D:quota-used-bytes/>"
    b"</D:prop></D:propfind>"
)
XML = 'text/xml; charset="utf-8"'


class ApacheDouble(http.server.ThreadingHTTPServer):
    """Stands in for Apache on its loopback address (the e2e tests reach the real one): records
    each request (method, target, headers, body) and gives the canned `answer` (status, headers,
    body), or with `cut` half of it and no end."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ApacheHandler)
        self.requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.answer: tuple[int, list[tuple[str, str]], bytes] = (
            207,
            [("Content-Type", XML)],
            APACHE_MULTISTATUS,
        )
        self.cut = False

    @property
    def address(self) -> str:
        return f"{self.server_address[0]}:{self.server_address[1]}"


class ApacheHandler(http.server.BaseHTTPRequestHandler):
    """As mod_dav answers: HTTP/1.1, in chunks unless a Content-Length is given."""

    protocol_version = "HTTP/1.1"
    server: ApacheDouble

    def do_PROPFIND(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append((self.command, self.path, self.headers.items(), body))
        status, headers, content = self.server.answer
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        if any(name.lower() == "content-length" for name, _ in headers):
            self.end_headers()
            self.wfile.write(content)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        half = len(content) // 2
        for chunk in (content[:half], b"" if self.server.cut else content[half:]):
            if chunk:
                self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
        if self.server.cut:
            self.close_connection = True
        else:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the daemon's lines are what the tests read."""


@pytest.fixture
def apache():
    server = ApacheDouble()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _serve_propfind(hashes, tmp_path, monkeypatch, backend: str | None):
    """The daemon passing PROPFIND on to `backend`, alice's tree on disk (`a`, 600 bytes, and
    `d/b`, 100, of a quota of QUOTA), bob without a quota: (socket, alice's tree on disk)."""
    monkeypatch.delenv("LISTEN_PID", raising=False)
    files_dir = tmp_path / "files"
    tree = _alice_files(files_dir)
    _write(tree / "a", 600)
    _write(tree / "d" / "b", 100)
    outside = _write(tmp_path / "outside" / "big", 10_000)
    (tree / "link").symlink_to(outside)  # never followed, never counted
    data = _accounts(hashes)
    data.update(files_dir=str(files_dir), files_quotas={"alice": QUOTA})
    accounts = tmp_path / "accounts"
    accounts.write_text(json.dumps(data))
    socket_path = tmp_path / "filesauth.sock"
    argv = ["--files", "--accounts", str(accounts), "--socket", str(socket_path)]
    server = webauth.build_server([*argv, *(("--backend", backend) if backend else ())])
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    return server, thread, socket_path, tree


@pytest.fixture
def served_propfind(hashes, tmp_path, monkeypatch, apache):
    server, thread, socket_path, tree = _serve_propfind(
        hashes, tmp_path, monkeypatch, apache.address
    )
    yield socket_path, tree
    server.shutdown()
    server.server_close()
    thread.join()


def nginx_propfind(
    socket_path: Path,
    body: bytes | Iterator[bytes] = QUOTA_PROPFIND,
    target: str = f"{ALICE}/",
    root: str = ALICE_ROOT,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    """A PROPFIND as nginx's `location /` of the files servers passes it on: no realm, the tree
    in X-Bulwark-Root, the client's WebDAV headers and nginx's own."""
    sent = {
        "Host": TREE_HOST,
        "X-Bulwark-Root": root,
        "Depth": "1",
        "Content-Type": XML,
        "X-Forwarded-For": ATTACKER,
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    connection = UnixConnection(socket_path)
    # Refused before its body is sent, the checker may have closed: its answer is there to read.
    with contextlib.suppress(BrokenPipeError):
        connection.request("PROPFIND", target, body, sent)
    response = connection.getresponse()
    content = response.read()
    connection.close()
    return response, content


def _propstats(multistatus: bytes) -> dict[str, dict[str, list[str]]]:
    """href -> status code -> its properties, each as canonical XML (C14N 2.0, prefixes
    rewritten): what a client reads, whatever the prefixes."""
    found: dict[str, dict[str, list[str]]] = {}
    for response in ET.fromstring(multistatus).iter("{DAV:}response"):  # noqa: S314 - ours
        statuses = found.setdefault(response.findtext("{DAV:}href"), {})
        for propstat in response.iter("{DAV:}propstat"):
            code = propstat.findtext("{DAV:}status").split()[1]
            statuses.setdefault(code, []).extend(
                ET.canonicalize(ET.tostring(prop, encoding="unicode"), rewrite_prefixes=True)
                for prop in propstat.find("{DAV:}prop")
            )
    return found


def _quota_prop(name: str, value: int) -> str:
    """DAV:`name` found with `value`, as `_propstats` spells it."""
    return ET.canonicalize(f'<D:{name} xmlns:D="DAV:">{value}</D:{name}>', rewrite_prefixes=True)


def _quota_props(available: int, used: int) -> list[str]:
    return [_quota_prop("quota-available-bytes", available), _quota_prop("quota-used-bytes", used)]


def test_a_propfind_naming_the_quota_gets_it_found_and_all_else_as_apache_said(
    served_propfind, apache, capsys
):
    """Each response of a Depth 1 PROPFIND: the two properties moved from the 404 propstat
    (dropped once empty) to the 200 one, valued with the tree's usage (600 + 100 bytes, the
    link not followed); every other property as Apache answered it."""
    socket_path, _ = served_propfind
    response, content = nginx_propfind(socket_path)
    assert response.status == 207
    assert response.getheader("Content-Type") == XML
    assert response.getheader("Content-Length") == str(len(content))
    assert content.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n")
    expected = _propstats(APACHE_MULTISTATUS)
    collection, file = expected["/alice.example.net/files/"], expected["/alice.example.net/files/a"]
    collection["404"] = collection["404"][:1]  # the client's colour, unknown there
    collection["200"] += _quota_props(QUOTA - 700, 700)
    file["200"] += _quota_props(QUOTA - 700, 700)
    del file["404"]
    assert _propstats(content) == expected
    (request,) = apache.requests
    assert request[0] == "PROPFIND" and request[3] == QUOTA_PROPFIND
    assert capsys.readouterr().err == ""


def test_the_quota_is_counted_once_per_propfind(served_propfind, monkeypatch):
    """Once for all the responses, over the chroot as the quota counts it; past the quota,
    nothing is available (never less than nothing)."""
    counted = []

    def tree_usage(path):
        counted.append(Path(path))
        return webauth.Usage(1, 1500)

    monkeypatch.setattr(webauth, "tree_usage", tree_usage)
    _, content = nginx_propfind(served_propfind[0])
    assert counted == [served_propfind[1].parent.parent]
    found = _propstats(content)
    assert all(_quota_prop("quota-available-bytes", 0) in each["200"] for each in found.values())


def test_apache_gets_the_propfind_as_the_client_sent_it_and_only_what_it_reads(
    served_propfind, apache
):
    headers = {"If": "(<opaquelocktoken:1>)", "Depth": "0", "Connection": "keep-alive"}
    nginx_propfind(served_propfind[0], target=f"{ALICE}/d%20e/?x=1", headers=headers)
    ((_, target, sent, _),) = apache.requests
    assert target == f"{ALICE}/d%20e/?x=1"
    assert dict(sent) == {
        "Host": TREE_HOST,
        "X-Bulwark-Root": ALICE_ROOT,
        "Depth": "0",
        "Content-Type": XML,
        "If": "(<opaquelocktoken:1>)",
        "Content-Length": str(len(QUOTA_PROPFIND)),
        "Accept-Encoding": "identity",  # http.client's: Apache's answer is read as it is
    }
    # nginx passes a client's raw UTF-8 on; http.client sends ASCII alone.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(served_propfind[0]))
        request = f"PROPFIND {ALICE}/caf\u00e9\u2014 HTTP/1.1\r\nX-Bulwark-Root: {ALICE_ROOT}\r\n"
        raw.sendall(f"{request}\r\n".encode())
        response = http.client.HTTPResponse(raw)
        response.begin()
        response.read()
    assert response.status == 207
    assert apache.requests[1][1] == f"{ALICE}/caf%C3%A9%E2%80%94"


def test_a_backend_target_is_ascii_with_every_other_byte_percent_encoded():
    raw = "/a/caf\u00c3\u00a9 %C3%A9?q=\x7f"  # the bytes of UTF-8 é, as http.server reads them
    assert webauth.backend_target(raw) == "/a/caf%C3%A9%20%C3%A9?q=%7F"


@pytest.mark.parametrize(
    ("body", "root"),
    [
        (b"", ALICE_ROOT),  # allprop
        (b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>', ALICE_ROOT),
        (b'<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>', ALICE_ROOT),
        (QUOTA_PROPFIND, "bob.example.net"),  # no quota: Apache's 404 stands
    ],
    ids=["allprop", "allprop-element", "getetag", "no-quota"],
)
def test_a_propfind_not_naming_the_quota_or_without_one_is_apaches_answer_byte_for_byte(
    served_propfind, apache, capsys, body, root
):
    apache.answer = (207, [("Content-Type", XML), ("X-Kept", "yes")], APACHE_MULTISTATUS)
    response, content = nginx_propfind(served_propfind[0], body, root=root)
    assert (response.status, response.reason) == (207, "Multi-Status")
    assert content == APACHE_MULTISTATUS
    assert response.getheader("X-Kept") == "yes"
    assert response.getheader("Content-Type") == XML
    (request,) = apache.requests
    assert request[3] == body
    assert dict(request[2])["X-Bulwark-Root"] == root
    assert capsys.readouterr().err == ""


def test_apaches_other_answers_pass_as_they_are(served_propfind, apache):
    """A refusal (its rewrite rules, a missing path) is Apache's to give, quota or not."""
    for status, body in ((403, b"<html>forbidden</html>"), (404, b"<html>not found</html>")):
        apache.answer = (status, [("Content-Type", "text/html")], body)
        response, content = nginx_propfind(served_propfind[0])
        assert (response.status, content) == (status, body)


def test_hop_by_hop_headers_of_apaches_answer_stay_behind(served_propfind, apache):
    headers = [
        ("Content-Type", XML),
        ("Connection", "X-Hop, Keep-Alive"),
        ("Keep-Alive", "timeout=5"),
        ("X-Hop", "1"),
        ("Upgrade", "h2c"),
        ("X-Kept", "yes"),
        ("Content-Length", str(len(APACHE_MULTISTATUS))),
    ]
    for body in (QUOTA_PROPFIND, b""):  # rewritten, relayed
        apache.answer = (207, headers, APACHE_MULTISTATUS)
        response, content = nginx_propfind(served_propfind[0], body)
        names = {name.lower() for name, _ in response.getheaders()}
        assert names.isdisjoint({"x-hop", "keep-alive", "upgrade"}), names
        assert response.getheader("X-Kept") == "yes"
        assert response.getheader("Connection") in (None, "close")  # ours, if any
        assert (content == APACHE_MULTISTATUS) == (body == b"")  # relayed, or rewritten


def test_a_propfind_body_past_apaches_limit_or_of_no_length_is_refused(served_propfind, apache):
    """Refused unread, but what nginx still sends of it is read: it gets the refusal, never a
    broken pipe."""
    too_long = b"x" * (webauth.MAX_PROPFIND_BODY + 1)
    response, _ = nginx_propfind(served_propfind[0], too_long)
    assert response.status == 413
    chunks = iter([QUOTA_PROPFIND] * 100)  # http.client sends it chunked: no length
    response, _ = nginx_propfind(served_propfind[0], chunks)
    assert response.status == 411
    response, _ = nginx_propfind(served_propfind[0], headers={"Content-Length": "-1"})
    assert response.status == 400
    assert apache.requests == []
    response, _ = nginx_propfind(served_propfind[0], too_long[:-1])
    assert response.status == 207  # Apache's limit itself is no refusal


def test_apache_down_is_a_502_and_a_line(hashes, tmp_path, monkeypatch, capsys):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    server, thread, socket_path, _ = _serve_propfind(
        hashes, tmp_path, monkeypatch, f"127.0.0.1:{port}"
    )
    try:
        response, content = nginx_propfind(socket_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert response.status == 502
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"backend: PROPFIND to 127.0.0.1:{port} failed: ConnectionRefused")
    assert "Traceback" not in line and b"Traceback" not in content


def test_a_tree_that_cannot_be_counted_gets_no_quota_reported(served_propfind, apache, capsys):
    chroot = served_propfind[1].parent.parent
    chroot.rename(chroot.with_name("moved"))
    chroot.symlink_to(chroot)  # a loop: os.scandir fails with ELOOP, even for root
    response, _ = nginx_propfind(served_propfind[0])
    assert response.status == 500
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("misconfigured: cannot count the files of 'alice': ")


def test_apache_answering_no_multistatus_is_a_502_and_a_line(served_propfind, apache, capsys):
    apache.answer = (207, [("Content-Type", XML)], b"<D:multistatus xmlns:D='DAV:'>")
    response, _ = nginx_propfind(served_propfind[0])
    assert response.status == 502
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("backend: Apache's answer to a PROPFIND is not XML: ")


def test_an_answer_apache_breaks_off_reaches_nginx_cut_not_whole(served_propfind, apache, capsys):
    apache.cut = True
    connection = UnixConnection(served_propfind[0])
    connection.request("PROPFIND", f"{ALICE}/", b"", {"X-Bulwark-Root": ALICE_ROOT})
    response = connection.getresponse()
    assert response.status == 207
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    connection.close()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("backend: the answer to a PROPFIND was cut short: ")


@pytest.mark.parametrize("backend", [None, "apache"])
def test_a_propfind_to_pass_on_without_a_backend_or_a_known_tree_is_a_misconfiguration(
    hashes, tmp_path, monkeypatch, capsys, apache, backend
):
    address = apache.address if backend else None
    server, thread, socket_path, _ = _serve_propfind(hashes, tmp_path, monkeypatch, address)
    try:
        responses = [nginx_propfind(socket_path, root="carol.example.net")[0]]
        if backend is None:
            responses.append(nginx_propfind(socket_path)[0])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [response.status for response in responses] == [502] * len(responses)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["misconfigured: a PROPFIND to pass on needs --backend, and X-Bulwark-Root "
                     "naming a tree of files_roots"] * len(responses)  # fmt: skip
    assert apache.requests == []


def test_a_propfind_with_a_realm_is_an_auth_request_never_passed_on(served_propfind, apache):
    """nginx's auth_request names the realm; nginx clears a client's own X-Bulwark-Realm."""
    response, _ = nginx_propfind(served_propfind[0], headers={"X-Bulwark-Realm": "files"})
    assert response.status == 500  # an auth_request without what nginx sends with it
    assert apache.requests == []


@pytest.mark.parametrize(
    ("body", "asks"),
    [
        (QUOTA_PROPFIND, True),
        (b'<propfind xmlns="DAV:"><prop><quota-used-bytes/></prop></propfind>', True),
        (b'<D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/></D:prop></D:propfind>',
         True),
        (b"", False),
        (b"  \n", False),
        (b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>', False),
        (b'<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>', False),
        (b'<D:propfind xmlns:D="DAV:" xmlns:x="urn:x"><D:prop><x:quota-used-bytes/></D:prop>'
         b"</D:propfind>", False),
        (b'<D:propertyupdate xmlns:D="DAV:"><D:prop><D:quota-used-bytes/></D:prop>'
         b"</D:propertyupdate>", False),
        (b'<D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/>', False),  # not XML
        # An entity bomb stops at expat's amplification limit; an external entity is never read.
        (b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
         + b"".join(b'<!ENTITY %c "%s">' % (98 + i, b"&%c;" % (97 + i) * 10) for i in range(9))
         + b']><D:propfind xmlns:D="DAV:"><D:prop>&j;<D:quota-used-bytes/></D:prop></D:propfind>',
         False),
        (b'<!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]><D:propfind xmlns:D="DAV:">'
         b"<D:prop>&x;<D:quota-used-bytes/></D:prop></D:propfind>", False),
    ],
)  # fmt: skip
def test_which_propfind_bodies_name_the_quota(body, asks):
    assert webauth.asks_for_quota(body) is asks


def test_the_quota_found_where_apache_answered_a_status_alone_or_a_200():
    """A response with a status and no propstat stays as it is; a property Apache found is
    never found twice."""
    multistatus = (
        b'<D:multistatus xmlns:D="DAV:"><D:response><D:href>/x</D:href>'
        b"<D:status>HTTP/1.1 423 Locked</D:status></D:response>"
        b"<D:response><D:href>/y</D:href><D:propstat><D:prop><D:quota-used-bytes>5"
        b"</D:quota-used-bytes></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
        b"<D:propstat><D:prop><D:quota-available-bytes/></D:prop>"
        b"<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response></D:multistatus>"
    )
    rewritten = webauth.with_quota(multistatus, 100, 30)
    assert _propstats(rewritten) == {
        "/x": {},
        "/y": {
            "200": [_quota_prop("quota-used-bytes", 5), _quota_prop("quota-available-bytes", 70)]
        },
    }
    response = ET.fromstring(rewritten).find("{DAV:}response")  # noqa: S314 - ours
    (status,) = response.iter("{DAV:}status")
    assert status.text == "HTTP/1.1 423 Locked"


@pytest.mark.parametrize("backend", ["localhost:8080", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:x",
                                     "127.0.0.1:65536", "::1:8080"])  # fmt: skip
def test_the_backend_is_an_ipv4_address_and_port(backend, capsys):
    with pytest.raises(SystemExit):
        webauth.build_server(["--backend", backend])
    assert "not an IPv4 address and port" in capsys.readouterr().err
