"""The audit report beside the rendered files: port matrix and TLS table, from the catalogue."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from bulwark import web
from bulwark.audit import SealedSecrets, port_matrix, tls_table, write_report
from bulwark.cli import main
from bulwark.inventory import load_topology
from bulwark.render import render_host_configs
from bulwark.volume_audit import volume_audits
from bulwark.volumes import volume, volumes_for

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")


def _rows(rows, **match):
    return [row for row in rows if all(row[key] == value for key, value in match.items())]


def test_port_matrix_lists_each_hosts_openings_with_their_sources():
    matrix = port_matrix(LAB)
    (lmtp,) = _rows(matrix, host="nj-mail", service="lmtp")
    assert (lmtp["ports"], lmtp["exposure"], lmtp["sources"]) == (
        "24",
        "from mx (same site)",
        f"{LAB.host('nj-mail').lan_address}/32",
    )
    (wireguard,) = _rows(matrix, host="sea-gw", service="wireguard")
    assert wireguard["sources"] == f"{LAB.gateway('nj').public_address}/32"
    assert not _rows(matrix, host="nj-web", service="imaps")
    assert {row["host"] for row in _rows(matrix, service="ssh")} == {h.name for h in LAB.hosts}


def test_port_matrix_shows_the_real_sources_of_internal_services_in_production():
    matrix = port_matrix(PRODUCTION)
    (lmtp,) = _rows(matrix, host="sea-store", service="lmtp")
    assert lmtp["sources"] == f"{PRODUCTION.host('sea-mx').lan_address}/32"
    (replication,) = _rows(matrix, host="sea-store", service="mail-replication")
    assert replication["exposure"] == "from mailstore (peer site)"
    assert replication["sources"] == f"{PRODUCTION.host('nj-store').lan_address}/32"
    assert not _rows(matrix, service="lmtp", host="nj-mx")


def test_tls_table_gives_every_mail_port_its_mode():
    table = {row["service"]: row for row in tls_table(PRODUCTION)}
    assert (table["imaps"]["ports"], table["imaps"]["tls"]) == ("993", "implicit")
    assert (table["pop3s"]["ports"], table["pop3s"]["tls"]) == ("995", "implicit")
    assert (table["submissions"]["ports"], table["submissions"]["tls"]) == ("465", "implicit")
    assert (table["submission"]["ports"], table["submission"]["tls"]) == ("587", "starttls")
    assert (table["smtp"]["ports"], table["smtp"]["tls"]) == ("25", "opportunistic")
    assert (table["lmtp"]["ports"], table["lmtp"]["tls"]) == ("24", "implicit")
    assert "imap.example.com" in table["imaps"]["names"]


def test_render_writes_the_report_identically_and_can_render_over_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("BULWARK_VAULT_KEY", raising=False)
    out = tmp_path / "audit"
    runner = CliRunner()
    reports = []
    for _ in range(2):
        result = runner.invoke(
            main, ["render", str(REPO / "inventory/production.py"), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        reports.append(((out / "report.md").read_text(), (out / "ports.json").read_text()))
    assert reports[0] == reports[1]
    assert "| nj-store | the host's | imaps | tcp | 993 | public | any |" in reports[0][0]
    assert (
        "| nj-store | the host's | lmtp | tcp | 24 | from mx (same site) | 10.1.0.25/32 |"
        in reports[0][0]
    )
    assert (
        "| nj-gw | 192.0.2.13 | imaps-proxy | tcp | 1-21, 23-65535 (to 993) | public | any |"
        in reports[0][0]
    )
    assert "Plaintext ports never open: 110, 143, 389." in reports[0][0]


def test_the_report_says_where_each_role_keeps_its_data_and_what_the_web_front_sends(tmp_path):
    """The dav role's directory, its web front's headers and limits: from the same constants the
    templates use, so the report cannot drift from what hosts get."""
    write_report(LAB, tmp_path)
    report = (tmp_path / "report.md").read_text()
    data = report.split("## Data", 1)[1].split("##", 1)[0]
    assert f"| dav | dav | {volume('dav').path} |" in data
    assert f"| mailstore | mail | {volume('mail').path} |" in data
    # Containers cannot encrypt: the lab inventory says so, and the report too.
    assert "Not encrypted on nj-backup, nj-gw, nj-mail, nj-web," in data
    front = report.split("## Web front", 1)[1].split("##", 1)[0]
    assert f"max-age={web.HSTS_MAX_AGE}; includeSubDomains" in front
    assert web.CONTENT_SECURITY_POLICY in front
    nginx = render_host_configs(LAB, LAB.host("nj-web"), SealedSecrets())
    (config,) = [item for item in nginx if item.path == web.NGINX_CONFIG]
    assert f"max-age={web.HSTS_MAX_AGE}; includeSubDomains" in config.content
    assert f"rate={web.REQUEST_RATE}" in config.content


def test_a_topology_without_web_roles_has_no_web_front_section(tmp_path):
    mail_only = replace(LAB, hosts=tuple(host for host in LAB.hosts if not host.has_role("dav")))
    write_report(mail_only, tmp_path)
    assert "## Web front" not in (tmp_path / "report.md").read_text()


def test_the_report_lists_every_encrypted_volume_with_its_key_slots_by_kind(tmp_path):
    write_report(PRODUCTION, tmp_path)
    report = (tmp_path / "report.md").read_text()
    section = report.split("## Encrypted volumes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    count = sum(len(volumes_for(host)) for host in PRODUCTION.hosts)
    assert count == len(volume_audits(PRODUCTION)) == len(rows) - 1 > 0  # and the header
    assert (
        "| nj-store | mail | /dev/disk/by-partlabel/bulwark-mail | /var/vmail | aes-xts-plain64, "
        "512-bit key | argon2id, 256 MiB, 4 iterations, 2 lanes | vault key (luks/nj-store/mail, "
        "512 bits); recovery passphrase (luks-recovery/nj-store/mail, 165 bits); Clevis "
        "passphrase (sealed to sea-backup's Tang, 256 bits) | boot: Clevis, Tang on sea-backup "
        "(site sea) over the VPN; deploy (key from the vault over SSH); bulwark storage unlock "
        "(key from the vault over SSH); console (recovery passphrase) | vault "
        "luks-header/nj-store/mail |"
    ) in rows
    write_report(LAB, tmp_path)  # containers: no volume at all
    assert "No host of this inventory has an encrypted volume." in (
        (tmp_path / "report.md").read_text()
    )
