"""report.html (bulwark/htmlreport.py): self-contained, deterministic, escaped, free of secrets,
complete (every promise has evidence or says plainly why not), and shown by a real browser."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from datetime import date
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulwark import tang
from bulwark.audit import SealedSecrets
from bulwark.cli import main
from bulwark.exposure import host_openings
from bulwark.htmlreport import html_report, promise_rows, status_words, topology_svg
from bulwark.inventory import load_topology
from bulwark.promises import PROMISES, Status
from bulwark.render import REPORT, REPORT_HTML, RenderedFile, render_topology
from bulwark.topology import Host, Site
from bulwark.volumes import volume, volumes_for

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "inventory" / "production.py"
LAB = REPO / "inventory" / "lab.py"
sys.path.insert(0, str(REPO / "benchmarks"))
import render_scale  # noqa: E402  (the benchmark's synthetic inventory)

# Vault entries that are public by nature: certificates.
PUBLIC_ENTRY = re.compile(r"^pki/.*/(cert|supplied)$")
PLACEHOLDER = re.compile(r"&lt;secret:([^ &]+) sha256:([0-9a-f]{8}|sealed)&gt;")


@pytest.fixture(scope="module")
def production_render(tmp_path_factory) -> Path:
    """`bulwark render inventory/production.py` as an auditor runs it (no vault key)."""
    out = tmp_path_factory.mktemp("audit") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BULWARK_VAULT_KEY", raising=False)
        result = CliRunner().invoke(main, ["render", str(PRODUCTION), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def production_html(production_render) -> str:
    return (production_render / REPORT_HTML).read_text()


def promise_table_rows(text: str) -> list[str]:
    """The body rows of the promise table, as HTML."""
    table = text[text.index('<h2 id="promises">') :]
    table = table[table.index("<table") : table.index("</table>")]
    return table.split("<tr>")[2:]  # before the first: the table tag; the first: the header


def test_render_writes_report_html_beside_report_md(production_render, production_html):
    assert (production_render / REPORT).is_file()
    assert production_html.startswith("<!DOCTYPE html>")
    for heading in (
        "Topology",
        "Port matrix",
        "TLS policy per port",
        "Firewall of each host, in words",
        "Volumes and unlock paths",
        "Log and data retention",
        "Backups",
        "CIS Debian 12 deviations per role",
        "Promise table",
    ):
        assert f">{heading}</h2>" in production_html


def test_report_html_loads_nothing_and_runs_nothing(production_html):
    lowered = production_html.lower()
    for tag in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "<base", "<form"):
        assert tag not in lowered, tag
    assert "url(" not in lowered and "@import" not in lowered
    # Links only to the page's own sections; no attribute names any other place.
    assert set(re.findall(r'\b(?:href|src|action|xlink:href)="([^"]*)"', production_html)) <= {
        f"#{key}" for key in re.findall(r'<h2 id="([a-z]+)">', production_html)
    }
    attributes = re.findall(r'\w[\w:-]*="([^"]*)"', production_html)
    assert not [value for value in attributes if re.search(r"https?:|//", value)]
    assert (
        '<meta http-equiv="Content-Security-Policy" '
        'content="default-src &#x27;none&#x27;; style-src &#x27;unsafe-inline&#x27;">'
    ) in production_html


def test_every_encrypted_volume_is_listed_with_its_hosts_keys_unlock_and_escrow(production_html):
    section = production_html[
        production_html.index('<h2 id="volumes">') : production_html.index('<h2 id="retention">')
    ]
    topology = load_topology(PRODUCTION)
    total = sum(len(volumes_for(host)) for host in topology.hosts)
    assert f"<h3>Every encrypted volume ({total})</h3>" in section
    table = section[section.index("<h3>Every encrypted volume") :]
    table = table[: table.index("</table>")]
    for host in topology.hosts:
        for name in volumes_for(host):
            # One row per volume and site: each site's volumes are bound to the other's Tang.
            (row,) = [
                row
                for row in table.split("<tr>")
                # the volume's cell, then its hosts' (another cell may name the Tang host)
                if row.startswith(f"<td>{name}</td>") and host.name in row.split("</td>")[1]
            ]
            server = tang.server_for(topology, host)
            assert f"Tang on {server.name} (site {server.site}) over the VPN" in row
            assert (
                f"<code>{host.volume_device(name)}</code> on <code>{volume(name).path}</code>"
                in row
            )
            assert f"luks/HOST/{name}, 512 bits" in row and f"luks-recovery/HOST/{name}" in row
            assert "bulwark storage unlock" in row and f"vault luks-header/HOST/{name}" in row


def test_report_html_is_the_same_whatever_the_order_of_the_files(rendered_inventories):
    topology = load_topology(PRODUCTION)
    files = rendered_inventories["production"]
    assert html_report(topology, files) == html_report(topology, list(reversed(files)))


def test_every_promise_row_shows_evidence_and_tests_or_says_plainly_why_not(production_html):
    rows = promise_table_rows(production_html)
    assert len(rows) == len(PROMISES)
    for row, promise in zip(rows, PROMISES, strict=True):
        proved = "<pre>" in row and "<code>tests/" in row
        said = "not implemented" in row or "not kept" in row
        assert proved or said, promise.key
        if "kept in part" in row:
            assert proved and "not implemented" in row, promise.key


@pytest.mark.parametrize("inventory", ["production", "lab"])
def test_promise_statuses_follow_the_registry(rendered_inventories, inventory):
    rows = promise_rows(rendered_inventories[inventory])
    for row in rows:
        head, detail = status_words(row)
        missing = row.promise.missing_roles
        assert head == str(row.status)
        if row.status in (Status.KEPT, Status.PARTLY):
            assert row.found and row.promise.tests, row.promise.key
        if row.status is Status.NOT_KEPT:
            assert detail == row.promise.waived
        if row.status is Status.NOT_DEPLOYED:
            # Only the lab's containers, which cannot encrypt (volumes_encrypted: false).
            assert inventory == "lab", row.promise.key
            assert {"storage", "logs"} & set(row.promise.roles), row.promise.key
            continue
        if missing and not row.promise.waived:
            assert "not implemented" in f"{head} {detail}"
            assert all(role in detail for role in missing), row.promise.key
    kept = {row.promise.key for row in rows if row.status is Status.KEPT}
    assert {"imap", "pop", "smtp-465", "smtp-587", "caldav", "log-retention"} <= kept
    assert {"webdav", "ftp", "files", "isolated-domains", "hsts", "csp"} <= kept
    assert {"backups", "deleted-items-7-days", "account-closure"} <= kept
    if inventory == "production":
        assert "logs-encrypted-at-rest" in kept


@pytest.mark.usefixtures("logs_not_deployed")
def test_a_role_without_a_module_reads_not_implemented(rendered_inventories):
    rows = {row.promise.key: row for row in promise_rows(rendered_inventories["production"])}
    assert rows["logs-encrypted-at-rest"].status is Status.NOT_IMPLEMENTED
    assert rows["hsts"].status is Status.KEPT


def test_a_role_with_a_module_that_renders_nothing_reads_not_deployed(rendered_inventories):
    """The page says so instead of promising: here the logs role's files left out."""
    files = [
        file
        for file in rendered_inventories["production"]
        if not re.search(r"/(var-log\.mount|bulwark-logs\.service)$", file.path)
    ]
    rows = {row.promise.key: row for row in promise_rows(files)}
    assert rows["logs-encrypted-at-rest"].status is Status.NOT_DEPLOYED
    assert rows["hsts"].status is Status.KEPT


def test_what_the_page_shows_is_escaped(rendered_inventories):
    topology = load_topology(PRODUCTION)
    hostile = RenderedFile(
        "nj-web",
        "dav",
        "/etc/nginx/nginx.conf",
        'add_header Strict-Transport-Security "<script>alert(1)</script>" always;\n',
        "0644",
        "root",
        "root",
        None,
    )
    text = html_report(topology, [*rendered_inventories["production"], hostile])
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_the_topology_shows_sites_hosts_roles_and_the_vpn(production_html):
    svg = production_html[production_html.index("<svg") : production_html.index("</svg>")]
    topology = load_topology(PRODUCTION)
    for site in topology.sites:
        assert f"site {site.name}" in svg
    for host in topology.hosts:
        assert f">{host.name}<" in svg
    assert "WireGuard VPN, UDP 51820" in svg and "<line " in svg
    assert "backup (not deployed)" not in svg and "backup</" in svg
    for words in ("public: anyone", "site-only", "management-only"):
        assert words in svg


def test_a_large_inventory_is_drawn_as_groups_not_one_box_per_host(tmp_path):
    topology = load_topology(render_scale.write_inventory(tmp_path, 200))
    openings = {host.name: host_openings(topology, host) for host in topology.hosts}
    svg = topology_svg(topology, openings)
    # One box per site, one per group of hosts sharing their roles (5 kinds per site).
    assert svg.count("<rect x") - svg.count('width="10"') == 2 + 2 * 5
    assert "25 hosts: nj-mx0001 … nj-mx0097" in svg


def test_a_third_site_is_joined_to_both_others():
    """Neighbours by a line, the others by an arc over the sites: every pair of gateways."""
    lab = load_topology(LAB)
    chi = Site(
        "chi",
        "lab: Chicago",
        False,
        IPv4Network("10.83.1.0/24"),
        IPv4Network("198.51.100.128/26"),
        IPv4Network("10.89.0.128/26"),
    )
    chi_gw = Host(
        "chi-gw",
        "chi",
        ("gateway",),
        IPv4Address("10.83.1.10"),
        IPv4Address("10.89.0.138"),
        IPv4Address("198.51.100.138"),
    )
    three = replace(lab, sites=(*lab.sites, chi), hosts=(*lab.hosts, chi_gw))
    svg = topology_svg(three, {host.name: host_openings(three, host) for host in three.hosts})
    assert svg.count("<line ") == 2 and svg.count("<path ") == 1
    assert "site chi: lab: Chicago" in svg and ">chi-gw<" in svg


def test_no_secret_of_the_lab_vault_reaches_report_html(lab_vault):
    """Rendered with the vault as an auditor holding its key would: placeholders with digests."""
    lab = load_topology(LAB)
    text = html_report(lab, render_topology(lab, lab_vault))
    values = [
        lab_vault.get(name).reveal() for name in lab_vault.names() if not PUBLIC_ENTRY.match(name)
    ]
    assert len(values) > 10
    assert [value[:8] + "..." for value in values if value in text] == []
    assert "PRIVATE KEY" not in text
    assert re.search(r"\$argon2id\$v=\d+\$m=", text) is None
    placeholders = PLACEHOLDER.findall(text)
    assert placeholders  # the evidence does show lines holding secrets, as placeholders
    for name, digest in placeholders:
        assert digest == lab_vault.get(name).digest, name


def test_the_sealed_report_shows_sealed_placeholders(rendered_inventories):
    lab = load_topology(LAB)
    text = html_report(lab, rendered_inventories["lab"])
    assert {digest for _, digest in PLACEHOLDER.findall(text)} == {"sealed"}
    assert text == html_report(lab, render_topology(lab, SealedSecrets()))


# --- in a real browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
WINDOW = (1400, 3000)


def chromium_screenshot(page: Path, png: Path) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, as root (hence --no-sandbox), console messages on stderr."""
    return subprocess.run(
        [
            CHROMIUM or "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    """Lines the page's console wrote (Chromium logs them as `...:CONSOLE(line)] "text"`): the
    page has no script, so any is an error (a blocked load, a CSP violation ...)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def png_size(png: Path) -> tuple[int, int]:
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make checkers installs Debian's package)"
)


@needs_chromium
def test_chromium_shows_the_report_without_a_console_message(production_render, tmp_path):
    png = tmp_path / "report.png"
    result = chromium_screenshot(production_render / REPORT_HTML, png)
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    assert png_size(png) == WINDOW
    assert png.stat().st_size > 20_000  # a page of text, tables and a picture, not a blank one


@needs_chromium
def test_the_console_check_sees_what_the_page_would_load(production_html, tmp_path):
    """The check above is not blind: the same page with an image and a script in it logs both
    (blocked by its own Content-Security-Policy)."""
    page = tmp_path / "tampered.html"
    page.write_text(
        production_html.replace(
            "</body>", '<img src="elsewhere.png"><script>console.log("ran")</script></body>'
        )
    )
    result = chromium_screenshot(page, tmp_path / "tampered.png")
    assert result.returncode == 0, result.stderr[-2000:]
    messages = console_messages(result.stderr)
    assert any("elsewhere.png" in line for line in messages)
    assert any("inline script" in line for line in messages)
    assert not any('"ran"' in line for line in messages)


def test_the_retention_section_lists_each_closed_account_and_its_purge_day():
    lab = load_topology(LAB)
    bob = next(account for account in lab.accounts if account.user == "bob")
    closed = replace(
        lab,
        accounts=(
            *(a for a in lab.accounts if a is not bob),
            replace(bob, closed=date(2026, 11, 30)),
        ),
        closed_account_retention_days=37,
    )

    def retention(topology) -> str:
        text = html_report(topology, [])
        return text[text.index('<h2 id="retention">') : text.index('<h2 id="backups">')]

    assert "No account of this inventory is closed." in retention(lab)
    section = retention(closed)
    assert "purged 37 days after its closure" in section
    assert "<tr><td>bob@example.net</td><td>2026-11-30</td><td>2027-01-06</td></tr>" in section
