"""Files as their users see them: WebDAV over HTTPS in both URL forms, FTPS with `ftplib`, the
content origin a browser is sent to, the quota, and the replica at the other site.

Clients connect by the catalogue's host names (`webdav.DOMAIN`, `myfiles.DOMAIN`, `ftp.DOMAIN`:
the primary site's web host; `webdav.SITE.DOMAIN` a given site's) and verify certificates against
the lab's internal CA. The layout is the seed's: an account's files are `/<user>.<domain>/files/`
on webdav and over FTP, `/` on myfiles.

Failed logins count towards the web host's ban (bruteforce.MAX_FAILURES in ten minutes, with
test_dav's): this file causes exactly FAILED_LOGINS of them, the main password over WebDAV and
over FTP, both in the last tests of the file.

inventory/lab.py gives alice a small quota (QUOTA); bob has the platform's default.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import json
import os
import socket
import ssl
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests
from endpoints import assert_modern_tls, host_name
from sslyze import ProtocolWithOpportunisticTlsEnum
from webclient import CountedBasicAuth, LoginBudgetSpent, Web

from bulwark import catalogue, web
from bulwark.lab.accounts import LabAccount
from bulwark.secret import Secret
from bulwark.topology import Topology
from roles import files

FAILED_LOGINS = 2  # failed logins this file causes in total (see the module docstring)
QUOTA = 64 * 1024**2  # alice's files_quota in inventory/lab.py
REPLICATION_DEADLINE = 60  # seconds a write at the primary may take to be readable at the other
REPLICATION_POLL = 0.5
FTP = catalogue.service("ftp")
PASSIVE = catalogue.service("ftp-passive").ports
WEBDAV, MYFILES = catalogue.service("https-files").names
DAV_NS = "DAV:"
CONTENT_CSP = web.FILES_CSP


class FilesAuth(CountedBasicAuth):
    """This module's logins: FAILED_LOGINS refused ones at most."""

    budget = FAILED_LOGINS
    refused = 0


def login(
    account: LabAccount, password: Secret | None = None, name: str | None = None
) -> FilesAuth:
    return FilesAuth(name or account.address, (password or account.password).reveal())


def tree_name(account: LabAccount) -> str:
    """`<user>.<domain>`: the top of the account's paths."""
    user, domain = account.address.split("@")
    return f"{user}.{domain}"


def root(account: LabAccount) -> str:
    """The account's files in the tree form's paths and over FTP (the seed's)."""
    return f"/{tree_name(account)}/files/"


def entries(ftps: ftplib.FTP_TLS, path: str) -> list[str]:
    """The names an FTP listing of `path` shows, but `.`, `..` and pure-ftpd's own usage file
    (listed, never readable: --prohibitdotfilesread)."""
    names = [name.rpartition("/")[2] for name in ftps.nlst(path)]
    return sorted(name for name in names if name not in (".", "..", ".ftpquota"))


@pytest.fixture(scope="module")
def web(topology: Topology, ca_file: Path) -> Web:
    return Web(topology, ca_file)


def name() -> str:
    return f"bulwark-e2e-{uuid.uuid4().hex}"


def tree_url(web: Web, account: LabAccount, path: str = "", site: str | None = None) -> str:
    return web.url(WEBDAV, root(account) + path, site)


def rooted_url(web: Web, path: str = "") -> str:
    return web.url(MYFILES, "/" + path)


# Where each URL form puts a path of alice's files.
FORMS = ("tree", "rooted")


def url_of(web: Web, form: str, account: LabAccount, path: str) -> str:
    return tree_url(web, account, path) if form == "tree" else rooted_url(web, path)


@pytest.fixture
def cleanup(web: Web) -> Iterator[list[tuple[str, LabAccount]]]:
    """(URL, account) of what a test created: deleted afterwards, whatever the outcome."""
    urls: list[tuple[str, LabAccount]] = []
    yield urls
    for url, account in reversed(urls):
        with contextlib.suppress(requests.RequestException, LoginBudgetSpent):
            web.request("DELETE", url, login(account))


def propfind(web: Web, url: str, account: LabAccount, depth: int, *props: str) -> dict:
    """href -> {property name: element} of a PROPFIND's found (200) properties."""
    wanted = "".join(f"<{prop}/>" for prop in props) or "<D:allprop/>"
    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:b="urn:bulwark:e2e">'
    body += f"<D:prop>{wanted}</D:prop></D:propfind>" if props else f"{wanted}</D:propfind>"
    response = web.request("PROPFIND", url, login(account), depth=depth, body=body)
    assert response.status_code == 207, (url, response.status_code, response.text[:300])
    found: dict[str, dict] = {}
    multistatus = ET.fromstring(response.content)  # noqa: S314 - the lab's own server's answer
    for entry in multistatus.iter(f"{{{DAV_NS}}}response"):
        href = entry.findtext(f"{{{DAV_NS}}}href")
        properties = {}
        for propstat in entry.iter(f"{{{DAV_NS}}}propstat"):
            if " 200 " in (propstat.findtext(f"{{{DAV_NS}}}status") or ""):
                for prop in propstat.iter(f"{{{DAV_NS}}}prop"):
                    properties.update({child.tag: child for child in prop})
        found[href] = properties
    return found


# --- TLS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [WEBDAV, MYFILES])
def test_https_is_tls_1_2_or_later_with_a_verified_certificate(topology, tls_context, label):
    server = host_name(topology, label)
    with (
        socket.create_connection((server, 443), timeout=10) as raw,
        tls_context.wrap_socket(raw, server_hostname=server) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert_modern_tls(server, 443)


def test_ftps_is_tls_1_2_or_later_with_a_verified_certificate(topology):
    assert_modern_tls(
        host_name(topology, "ftp"),
        FTP.port,
        ProtocolWithOpportunisticTlsEnum.FTP,
        connections=files.FTP_MAX_PER_ADDRESS // 4,
    )


# --- WebDAV, both forms -------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_a_file_is_uploaded_listed_patched_copied_moved_and_deleted(web, alice, cleanup, form):
    folder = name() + "/"
    base = url_of(web, form, alice, folder)
    cleanup.append((base, alice))
    assert web.request("MKCOL", base, login(alice)).status_code == 201
    first = base + "a.txt"
    assert web.request("PUT", first, login(alice), body=b"hello", headers={
        "Content-Type": "text/plain"}).status_code == 201  # fmt: skip
    listing = propfind(web, base, alice, 1, "D:getcontentlength")
    (href,) = [href for href in listing if href.endswith("/a.txt")]
    assert listing[href][f"{{{DAV_NS}}}getcontentlength"].text == "5"
    expected_prefix = root(alice) if form == "tree" else "/"
    assert urlsplit(href).path.startswith(expected_prefix + folder), href

    patch = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:b="urn:bulwark:e2e">'
        "<D:set><D:prop><b:colour>teal</b:colour></D:prop></D:set></D:propertyupdate>"
    )
    assert web.request("PROPPATCH", first, login(alice), body=patch).status_code == 207
    props = propfind(web, first, alice, 0, "b:colour")
    assert next(iter(props.values()))["{urn:bulwark:e2e}colour"].text == "teal"

    copy = base + "b.txt"
    response = web.request("COPY", first, login(alice), headers={"Destination": copy})
    assert response.status_code == 201, response.text
    moved = base + "c.txt"
    kept = web.request("MOVE", copy, login(alice), headers={
        "Destination": first, "Overwrite": "F"})  # fmt: skip
    assert kept.status_code == 412  # Overwrite F onto an existing file
    response = web.request("MOVE", copy, login(alice), headers={"Destination": moved})
    assert response.status_code == 201, response.text
    assert web.request("GET", moved, login(alice)).content == b"hello"
    assert web.request("GET", copy, login(alice)).status_code == 404
    assert web.request("DELETE", moved, login(alice)).status_code == 204
    assert web.request("GET", moved, login(alice)).status_code == 404


@pytest.mark.parametrize("form", FORMS)
def test_a_locked_file_takes_writes_only_with_its_token(web, alice, cleanup, form):
    url = url_of(web, form, alice, name() + ".txt")
    cleanup.append((url, alice))
    assert web.request("PUT", url, login(alice), body=b"v1").status_code == 201
    lock = (
        '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
        "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>e2e</D:owner></D:lockinfo>"
    )
    locked = web.request("LOCK", url, login(alice), body=lock, headers={"Timeout": "Second-60"})
    assert locked.status_code == 200, locked.text
    token = locked.headers["Lock-Token"]
    assert web.request("PUT", url, login(alice), body=b"v2").status_code == 423
    with_token = web.request("PUT", url, login(alice), body=b"v2", headers={"If": f"({token})"})
    assert with_token.status_code == 204, with_token.text
    unlocked = web.request("UNLOCK", url, login(alice), headers={"Lock-Token": token})
    assert unlocked.status_code == 204
    assert web.request("GET", url, login(alice)).content == b"v2"


def test_a_50_mb_upload_streams_and_reads_back_over_ftps(web, alice, cleanup, ftps, tmp_path):
    size = 50 * 1024**2
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for _ in range(size // (1024**2)):
            out.write(os.urandom(1024**2))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    filename = name() + ".bin"
    url = tree_url(web, alice, filename)
    cleanup.append((url, alice))
    with source.open("rb") as body:  # a file: requests streams it, with its Content-Length
        response = web.request("PUT", url, login(alice), body=body)
    assert response.status_code == 201, response.text
    received = hashlib.sha256()
    ftps.retrbinary(f"RETR {root(alice)}{filename}", received.update)
    assert received.hexdigest() == digest


def test_a_chunked_upload_with_finders_size_header_is_taken(web, alice, cleanup):
    url = rooted_url(web, name() + ".txt")
    cleanup.append((url, alice))
    chunks = (part for part in (b"finder ", b"style"))  # a generator: sent chunked, no length
    response = web.request(
        "PUT", url, login(alice), body=chunks, headers={"X-Expected-Entity-Length": "12"}
    )
    assert response.status_code == 201, response.text
    assert web.request("GET", url, login(alice)).content == b"finder style"


@pytest.mark.parametrize("separator", ["@", "#", "/", "="])
def test_each_separator_and_each_app_password_logs_in(web, topology, alice, separator):
    user = alice.address.split("@")[0]
    for password in alice.app_passwords:
        auth = login(alice, password, f"{user}{separator}{topology.domain}")
        response = web.request("PROPFIND", tree_url(web, alice), auth, depth=0)
        assert response.status_code == 207, (separator, password, response.status_code)


def test_an_ftp_login_takes_another_separator(topology, tls_context, alice):
    user = alice.address.split("@")[0]
    with FtpsClient(context=tls_context, timeout=30) as client:
        client.connect(host_name(topology, "ftp"), FTP.port)
        client.auth()
        assert client.login(f"{user}#{topology.domain}", alice.password.reveal()).startswith("230")


# --- a real desktop-sync client ---------------------------------------------------------------


def rclone(web: Web, account: LabAccount, *arguments: str) -> str:
    """rclone (Debian's) against myfiles.DOMAIN as `account`: the remote `bulwark:` is defined
    in its environment, the password obscured as rclone wants it, never on a command line."""
    obscured = subprocess.run(
        ["rclone", "obscure", "-"], input=account.password.reveal(), capture_output=True,
        text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_BULWARK_TYPE": "webdav",
        "RCLONE_CONFIG_BULWARK_URL": rooted_url(web),
        "RCLONE_CONFIG_BULWARK_VENDOR": "other",
        "RCLONE_CONFIG_BULWARK_USER": account.address,
        "RCLONE_CONFIG_BULWARK_PASS": obscured,
    }
    result = subprocess.run(
        ["rclone", "--ca-cert", str(web.ca_file), "--low-level-retries", "1", "--retries", "1",
         *arguments],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_rclone_syncs_a_folder_both_ways_and_checks_it(web, alice, cleanup, tmp_path):
    folder = name()
    cleanup.append((rooted_url(web, folder + "/"), alice))
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    for index in range(5):
        (local / f"file-{index}.txt").write_text(f"content {index}\n" * (index + 1))
    (local / "sub" / "deep.bin").write_bytes(os.urandom(300_000))
    rclone(web, alice, "sync", str(local), f"bulwark:{folder}")
    listed = json.loads(rclone(web, alice, "lsjson", "--recursive", f"bulwark:{folder}"))
    assert sorted(entry["Path"] for entry in listed if not entry["IsDir"]) == sorted(
        [f"file-{index}.txt" for index in range(5)] + ["sub/deep.bin"]
    )
    rclone(web, alice, "check", str(local), f"bulwark:{folder}")
    rclone(web, alice, "moveto", f"bulwark:{folder}/file-0.txt", f"bulwark:{folder}/moved.txt")
    back = tmp_path / "back"
    rclone(web, alice, "copy", f"bulwark:{folder}", str(back))
    assert (back / "moved.txt").read_text() == "content 0\n"
    assert (back / "sub" / "deep.bin").read_bytes() == (local / "sub" / "deep.bin").read_bytes()
    # rclone asks for RFC 4331's quota properties: what it reports is the account's quota.
    about = json.loads(rclone(web, alice, "about", "--json", "bulwark:"))
    assert about["used"] + about["free"] == QUOTA, about
    assert about["used"] >= 300_000, about


# --- FTPS -----------------------------------------------------------------------------------------


class FtpsClient(ftplib.FTP_TLS):
    """ftplib's FTPS; its data connections do not reuse the control connection's TLS session
    (cpython#63699), as many clients: the server must take them anyway."""


@pytest.fixture
def ftps(topology: Topology, tls_context: ssl.SSLContext, alice) -> Iterator[FtpsClient]:
    client = FtpsClient(context=tls_context, timeout=30)
    client.connect(host_name(topology, "ftp"), FTP.port)
    client.auth()
    client.login(alice.address, alice.password.reveal())
    client.prot_p()
    yield client
    with contextlib.suppress(OSError, ftplib.Error):
        client.quit()


def test_ftps_lists_stores_and_retrieves_in_the_passive_range(web, alice, ftps, cleanup):
    assert ftps.pwd() == "/"
    assert entries(ftps, "/") == [tree_name(alice)]
    filename = name() + ".txt"
    cleanup.append((tree_url(web, alice, filename), alice))
    ftps.cwd(root(alice))
    ftps.storbinary(f"STOR {filename}", io.BytesIO(b"over ftps"))
    assert filename in ftps.nlst()
    _, port = ftps.makepasv()
    assert port in PASSIVE, port
    assert web.request("GET", tree_url(web, alice, filename), login(alice)).content == b"over ftps"
    got = io.BytesIO()
    ftps.retrbinary(f"RETR {filename}", got.write)
    assert got.getvalue() == b"over ftps"


def test_ftp_refuses_user_before_auth_tls(topology):
    with ftplib.FTP(timeout=30) as plain:  # noqa: S321 - cleartext is what must be refused
        plain.connect(host_name(topology, "ftp"), FTP.port)
        with pytest.raises((ftplib.error_perm, ftplib.error_temp)) as refused:
            plain.sendcmd("USER nobody@example.net")
    assert str(refused.value)[:3] in ("421", "530", "534", "550"), refused.value


def test_ftp_refuses_a_clear_data_channel(ftps):
    """PROT C may be taken as a setting, but no data connection opens with it."""
    with pytest.raises(ftplib.error_perm) as refused:
        ftps.prot_c()
        ftps.nlst("/")
    assert str(refused.value)[:3] in ("521", "534", "536", "504"), refused.value


def test_ftp_refuses_active_mode(ftps):
    ftps.set_pasv(False)
    with pytest.raises((ftplib.Error, OSError)):
        ftps.nlst("/")


def test_ftp_session_never_leaves_its_chroot(alice, bob, ftps):
    ftps.cwd("/")
    ftps.cwd("..")
    assert ftps.pwd() == "/"
    assert entries(ftps, "/..") == [tree_name(alice)]
    with pytest.raises(ftplib.error_perm):
        ftps.cwd(f"/../{tree_name(bob)}/files")
    with pytest.raises(ftplib.error_perm):
        ftps.storbinary("STOR /outside.txt", io.BytesIO(b"x"))


# --- one account never reaches another's files -------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PROPFIND", "PUT", "DELETE", "MKCOL"])
def test_another_accounts_tree_is_refused(web, alice, bob, method):
    url = tree_url(web, bob, "" if method in ("PROPFIND", "MKCOL") else "x.txt")
    if method == "MKCOL":
        url = tree_url(web, bob, name() + "/")
    response = web.request(method, url, login(alice), depth=1 if method == "PROPFIND" else None,
                           body=b"x" if method == "PUT" else None)  # fmt: skip
    assert response.status_code == 403, (method, response.status_code)


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
@pytest.mark.parametrize("form", FORMS)
def test_a_destination_in_another_accounts_tree_is_refused(web, alice, bob, cleanup, method, form):
    source = url_of(web, form, alice, name() + ".txt")
    cleanup.append((source, alice))
    assert web.request("PUT", source, login(alice), body=b"mine").status_code == 201
    destinations = [tree_url(web, bob, name() + ".txt")]
    if form == "tree":  # on myfiles, these paths are inside alice's own files
        destinations += [f"{root(bob)}{name()}.txt", "/../" + quote(root(bob).strip("/")) + "/x"]
    for destination in destinations:
        response = web.request(method, source, login(alice), headers={"Destination": destination})
        assert response.status_code == 403, (destination, response.status_code)
    assert web.request("GET", source, login(alice)).content == b"mine"


def test_a_traversal_out_of_the_own_tree_is_refused(web, alice, bob):
    for path in (f"{root(alice)}..%2F..%2F{root(bob).strip('/')}", f"{root(alice)}../../"):
        response = web.request("PROPFIND", web.url(WEBDAV, path), login(alice), depth=1)
        assert response.status_code in (400, 403, 404), (path, response.status_code)


# --- quota --------------------------------------------------------------------------------------


def test_an_upload_over_quota_is_refused_over_webdav_and_ftps(web, alice, ftps, cleanup):
    url = tree_url(web, alice, name() + ".bin")
    too_big = QUOTA + 1
    response = web.request("PUT", url, login(alice), body=io.BytesIO(bytes(too_big)))
    assert response.status_code == 507, response.status_code
    assert web.request("GET", url, login(alice)).status_code == 404
    filename = name() + ".bin"
    cleanup.append((tree_url(web, alice, filename), alice))
    ftps.cwd(root(alice))
    with pytest.raises(ftplib.Error):
        ftps.storbinary(f"STOR {filename}", io.BytesIO(bytes(too_big)))
    assert filename not in ftps.nlst()


def test_a_chunked_upload_without_any_size_is_refused(web, alice):
    url = tree_url(web, alice, name() + ".txt")
    response = web.request("PUT", url, login(alice), body=(b for b in (b"no", b"size")))
    assert response.status_code == 411


QUOTA_PROPERTIES = (f"{{{DAV_NS}}}quota-available-bytes", f"{{{DAV_NS}}}quota-used-bytes")


def quota_report(web: Web, url: str, account: LabAccount) -> tuple[int, int]:
    """(available, used) bytes, as a PROPFIND Depth 0 on `url` finds RFC 4331's properties."""
    found = propfind(web, url, account, 0, "D:quota-available-bytes", "D:quota-used-bytes")
    (properties,) = found.values()
    assert set(QUOTA_PROPERTIES) <= properties.keys(), sorted(properties)
    available, used = (int(properties[name].text) for name in QUOTA_PROPERTIES)
    return available, used


@pytest.mark.parametrize("form", FORMS)
def test_webdav_reports_the_quota_and_the_usage_an_upload_adds_to(web, alice, cleanup, form):
    """Apache alone answers RFC 4331's properties 404; bulwark-filesauth finds them in a 200
    propstat: what alice's quota leaves and what her tree holds, adding up to the quota."""
    top = url_of(web, form, alice, "")
    available, used = quota_report(web, top, alice)
    assert used + available == QUOTA, (used, available)
    size = 12_345
    url = url_of(web, form, alice, name() + ".bin")
    cleanup.append((url, alice))
    assert web.request("PUT", url, login(alice), body=bytes(size)).status_code == 201
    assert quota_report(web, top, alice) == (available - size, used + size)


# --- the content origin -------------------------------------------------------------------------

ACTIVE = {
    "page.html": ("text/html", b"<html><body><script>document.title='ran'</script></body></html>"),
    "image.svg": (
        "image/svg+xml",
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    ),
}


@pytest.mark.parametrize("filename", sorted(ACTIVE))
def test_a_browser_opens_a_file_on_the_content_origin_sandboxed(web, topology, alice, cleanup,
                                                                 filename):  # fmt: skip
    content_type, body = ACTIVE[filename]
    url = tree_url(web, alice, name() + "-" + filename)
    cleanup.append((url, alice))
    put = web.request("PUT", url, login(alice), body=body, headers={"Content-Type": content_type})
    assert put.status_code == 201
    plain = web.request("GET", url, login(alice))  # a WebDAV client gets the file itself
    assert plain.status_code == 200 and plain.content == body
    assert plain.headers["Content-Security-Policy"] == CONTENT_CSP
    navigation = web.request("GET", url, login(alice), headers={"Sec-Fetch-Dest": "document"})
    assert navigation.status_code == 303, navigation.status_code
    link = navigation.headers["Location"]
    assert urlsplit(link).hostname == topology.content_origin
    assert urlsplit(link).hostname not in (
        host_name(topology, WEBDAV),
        host_name(topology, MYFILES),
    )
    opened = web.request("GET", link)  # no credentials: the link is the permission
    assert opened.status_code == 200 and opened.content == body
    assert opened.headers["Content-Security-Policy"] == CONTENT_CSP
    assert opened.headers["X-Content-Type-Options"] == "nosniff"
    assert opened.headers["Content-Disposition"] == "attachment"
    tampered = link[:-1] + ("A" if link[-1] != "A" else "B")
    assert web.request("GET", tampered).status_code == 403
    parts = urlsplit(link).path.split("/")
    parts[1] = str(int(time.time()) - 1)  # the expiry, in the past
    expired = f"https://{topology.content_origin}" + "/".join(parts)
    assert web.request("GET", expired).status_code == 403


# --- the replica ---------------------------------------------------------------------------------


def test_a_file_written_at_the_primary_is_read_at_the_replica(web, topology, alice, cleanup):
    primary = topology.primary_site.name
    (other,) = (site.name for site in topology.peer_sites(primary))
    filename = name() + ".txt"
    url = tree_url(web, alice, filename, primary)
    cleanup.append((url, alice))
    assert web.request("PUT", url, login(alice), body=b"replicated").status_code == 201
    replica = tree_url(web, alice, filename, other)
    deadline = time.monotonic() + REPLICATION_DEADLINE
    while (response := web.request("GET", replica, login(alice))).status_code != 200:
        assert time.monotonic() < deadline, f"not at {other} after {REPLICATION_DEADLINE} s"
        time.sleep(REPLICATION_POLL)
    assert response.content == b"replicated"
    refused = web.request("PUT", replica, login(alice), body=b"at the replica")
    assert refused.status_code == 403 and "read-only replica" in refused.text


# --- failed logins (last; FAILED_LOGINS in all) ---------------------------------------------------


def test_the_main_password_is_refused_over_webdav(web, alice):
    response = web.request("PROPFIND", tree_url(web, alice), login(alice, alice.main_password),
                           depth=0)  # fmt: skip
    assert response.status_code == 401


def test_the_main_password_is_refused_over_ftps(topology, tls_context, alice):
    with FtpsClient(context=tls_context, timeout=30) as client:
        client.connect(host_name(topology, "ftp"), FTP.port)
        client.auth()
        with pytest.raises(ftplib.error_perm) as refused:
            client.login(alice.address, alice.main_password.reveal())
    assert str(refused.value).startswith("530"), refused.value
