"""The web hosts' credential checker (bulwark/webauth.py): how logins are spelled, real Argon2
hashes, the cache of successes, the accounts file, and the server answering nginx over a Unix
socket, with the failure line bulwark-banwatch counts."""

from __future__ import annotations

import ast
import base64
import http.client
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import argon2
import pytest

from bulwark import banwatch, webauth
from bulwark.webauth import Cache, Checker, Config, StartupError, check, principal

# Test passwords, hashed in the `hashes` fixture; MAIN_PASSWORD's hash is never in the file.
APP_PASSWORD = "abcd-efgh-ijkl-mnop"  # noqa: S105
OTHER_APP_PASSWORD = "qrst-uvwx-yz01-2345"  # noqa: S105
MAIN_PASSWORD = "main-password-never-given"  # noqa: S105
ATTACKER = "198.51.100.200"


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
