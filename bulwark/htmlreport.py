"""report.html: the audit in one self-contained page, beside report.md.

What it holds: a topology picture (sites, hosts and their roles, the VPN between the gateways,
what is public, site-only and management-only), the port matrix, the TLS policy per port, each
host's firewall in words, volumes and their unlock paths, log and data retention, backups, the
expected CIS Debian 12 deviations per role (bulwark.cis), and the promise table: every promise of
the seeds with the rendered lines that keep it and the tests that prove it (bulwark.promises).

The page needs nothing but itself: inline CSS and SVG, no script, no link, no image, and a
Content-Security-Policy that forbids loading anything, so a browser opening it fetches nothing.
Everything shown is escaped, and built only from the topology, the registry, the catalogue and
the sealed rendered files, so no secret can reach it. The output is byte-identical for the same
inventory and vault. Hosts with the same roles, openings or lines are grouped, so a 1,000-host
inventory gives a page of the same shape, not a thousand boxes.
"""

from __future__ import annotations

import dataclasses
import functools
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bulwark import bruteforce, catalogue, cis, registry, tls, volumes
from bulwark.audit import exposure_text, not_deployed_table
from bulwark.catalogue import Exposure, Scope
from bulwark.exposure import (
    VPN_INTERFACE,
    Network,
    Opening,
    host_network,
    host_openings,
    ports_text,
)
from bulwark.promises import PROMISES, Evidence, Found, Promise, RenderedIndex, Status, status
from bulwark.render import REPORT_HTML, RenderedFile
from bulwark.topology import Host, Topology
from bulwark.volume_audit import VolumeAudit, host_volumes

# What the picture and the tables colour, and how the legend says it.
PUBLIC, SITE, PEER, MANAGEMENT = "public", "site-only", "VPN peer", "management-only"
CATEGORIES: dict[str, tuple[str, str]] = {
    PUBLIC: ("#c92a2a", "public: anyone on the internet"),
    SITE: ("#1864ab", "site-only: named hosts of this site or, through the VPN, the other"),
    PEER: ("#7048e8", "VPN peer: the other sites' gateways only"),
    MANAGEMENT: ("#2b8a3e", "management-only: management and admin networks"),
}
NOT_DEPLOYED_COLOUR = "#868e96"
_CATEGORY_OF = {
    Exposure.PUBLIC: PUBLIC,
    Exposure.ROLE: SITE,
    Exposure.PEER_GATEWAY: PEER,
    Exposure.MANAGEMENT: MANAGEMENT,
}
TLS_WORDS: dict[catalogue.Tls, str] = {
    catalogue.Tls.IMPLICIT: "TLS from the first byte",
    catalogue.Tls.STARTTLS: "plaintext greeting, TLS required before any login",
    catalogue.Tls.OPPORTUNISTIC: "STARTTLS offered, never required (mail between servers)",
    catalogue.Tls.REDIRECT: "plain HTTP that only redirects to HTTPS",
    catalogue.Tls.NATIVE: "the protocol's own encryption",
    catalogue.Tls.LOOPBACK: "none: on loopback only, never reachable from the network",
}
# Rendered lines shown per evidence pattern; the rest are counted.
LINES_SHOWN = 3
# Host names listed in full up to this many; past it, a count and the first and last.
HOSTS_LISTED = 8

CSS = """
body { font-family: sans-serif; font-size: 14px; color: #212529; margin: 24px; line-height: 1.4; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ced4da; }
h3 { font-size: 15px; margin-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ced4da; padding: 4px 6px; vertical-align: top; text-align: left; }
th { background: #f1f3f5; }
code, pre { font-family: monospace; font-size: 12px; overflow-wrap: anywhere; }
pre { margin: 2px 0; white-space: pre-wrap; background: #f8f9fa; }
table.fixed { table-layout: fixed; width: 100%; }
.ev { margin-bottom: 6px; } .path { font-family: monospace; font-size: 12px; color: #495057; }
.status { font-weight: bold; }
.kept { color: #2b8a3e; } .partly { color: #e67700; } .missing { color: #c92a2a; }
.waived, .absent { color: #495057; }
.muted { color: #868e96; } .note { font-style: italic; color: #495057; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
nav a { margin-right: 12px; }
ul.words { margin: 4px 0 12px; }
"""
# The page loads nothing: no script, no image, no font, no style sheet but its own.
CSP = "default-src 'none'; style-src 'unsafe-inline'"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def write_html_report(topology: Topology, files: Iterable[RenderedFile], out: Path) -> None:
    """`out/report.html` from the topology and its rendered (sealed) files."""
    (out / REPORT_HTML).write_text(html_report(topology, files))


@dataclass(frozen=True)
class PromiseRow:
    promise: Promise
    status: Status
    found: tuple[Found, ...]


def promise_rows(files: Iterable[RenderedFile]) -> list[PromiseRow]:
    """Every promise with its status and the rendered lines found for it."""
    index = RenderedIndex(files)
    rows = []
    for promise in PROMISES:
        found = tuple(index.find_all(promise)) if not promise.waived else ()
        rows.append(PromiseRow(promise, status(promise, found), found))
    return rows


def html_report(topology: Topology, files: Iterable[RenderedFile]) -> str:
    openings = {host.name: host_openings(topology, host) for host in topology.hosts}
    rows = promise_rows(files)
    sections = [
        ("topology", "Topology", _topology_section(topology, openings)),
        ("ports", "Port matrix", _ports_section(topology, openings)),
        ("tls", "TLS policy per port", _tls_section(topology)),
        ("firewall", "Firewall of each host, in words", _firewall_section(topology, openings)),
        ("volumes", "Volumes and unlock paths", _volumes_section(topology)),
        ("retention", "Log and data retention", _retention_section(topology, rows)),
        ("backups", "Backups", _backups_section(topology)),
        ("cis", "CIS Debian 12 deviations per role", _cis_section(topology)),
        ("promises", "Promise table", _promises_section(rows, len(topology.hosts))),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        f"<title>bulwark audit report: {esc(topology.domain)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>bulwark audit report: {esc(topology.domain)}</h1>",
        *_summary(topology, rows),
        "<nav>" + "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections),
        "</nav>",
    ]
    for key, title, body in sections:
        parts += [f'<h2 id="{key}">{esc(title)}</h2>', *body]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# --- words shared by the sections ---------------------------------------------------------------


def hosts_text(hosts: Sequence[str], full: bool = False, total: int = 0) -> str:
    """`a, b` or, past HOSTS_LISTED and unless `full`, `120 hosts: a, b ... z`; `every host`
    when they are all `total` hosts of the inventory."""
    if total > 1 and len(hosts) == total:
        return f"every host ({total})"
    if full or len(hosts) <= HOSTS_LISTED:
        return ", ".join(hosts)
    return f"{len(hosts)} hosts: {hosts[0]}, {hosts[1]} … {hosts[-1]}"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[int] = ()
) -> list[str]:
    """A table whose cells are HTML already (escape what goes in); `widths`: the columns'
    shares of the page, in percent."""
    columns = "".join(f'<col style="width: {width}%">' for width in widths)
    head = "<tr>" + "".join(f"<th>{esc(header)}</th>" for header in headers) + "</tr>"
    body = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    opening = f'<table class="fixed"><colgroup>{columns}</colgroup>' if widths else "<table>"
    return [opening, head, *body, "</table>"]


def _not_deployed_words(role: str) -> str:
    return f"not implemented: the {role} role has no module yet"


def _summary(topology: Topology, rows: list[PromiseRow]) -> list[str]:
    counts = {state: sum(1 for row in rows if row.status is state) for state in Status}
    sites = ", ".join(
        f"{site.name} ({site.location}{', primary' if site.primary else ''})"
        for site in topology.sites
    )
    lines = [
        f"<p>{len(topology.hosts)} hosts in {len(topology.sites)} sites: {esc(sites)}. "
        "Rendered without connecting to any host; secrets appear only as placeholders.</p>",
        "<p>Promises of the seeds: "
        + ", ".join(f"{counts[state]} {esc(state)}" for state in Status if counts[state])
        + ' (<a href="#promises">table</a>).</p>',
    ]
    waiting = not_deployed_table(topology)
    if waiting:
        lines.append(
            "<p>Not deployed yet (no module: no port open, no file written, nothing promised): "
            + "; ".join(
                f"<b>{esc(row['role'])}</b> ({esc(row['what'])})"
                for row in waiting  # the hosts are in the topology picture
            )
            + ".</p>"
        )
    return lines


# --- topology -----------------------------------------------------------------------------------

_CHAR = 7.0  # px per character at the picture's 12 px font: generous, so text stays inside
_BOLD_CHAR = 7.8
_LINE = 17
_PAD = 10


@dataclass
class _Group:
    """Hosts of one site with the same roles, drawn as one box."""

    roles: tuple[str, ...]
    hosts: list[str]
    categories: dict[str, list[str]]  # category -> "tcp 25, 465" parts

    @property
    def title(self) -> str:
        if len(self.hosts) <= 3:
            return ", ".join(self.hosts)
        return f"{len(self.hosts)} hosts: {self.hosts[0]} … {self.hosts[-1]}"

    def lines(self) -> list[str]:
        roles = [
            name if registry.role(name).implemented else f"{name} (not deployed)"
            for name in self.roles
        ]
        return [self.title, "roles: " + ", ".join(roles or ["none"])] + [
            f"{category}: {'; '.join(parts)}" for category, parts in self.categories.items()
        ]


def _categories(openings: Sequence[Opening]) -> dict[str, list[str]]:
    found: dict[str, dict[str, list[str]]] = {}
    for opening in openings:
        category = _CATEGORY_OF[opening.service.exposure]
        found.setdefault(category, {}).setdefault(str(opening.service.transport), []).append(
            ports_text(opening.service.ports)
        )
    return {
        category: [
            f"{transport} {', '.join(ports)}" for transport, ports in found[category].items()
        ]
        for category in CATEGORIES
        if category in found
    }


def _site_groups(
    topology: Topology, site: str, openings: dict[str, tuple[Opening, ...]]
) -> list[_Group]:
    groups: dict[tuple[str, ...], _Group] = {}
    for host in topology.hosts:
        if host.site != site:
            continue
        if host.roles not in groups:
            groups[host.roles] = _Group(host.roles, [], _categories(openings[host.name]))
        groups[host.roles].hosts.append(host.name)
    # The gateway first: the VPN line joins the sites' top boxes.
    return sorted(groups.values(), key=lambda group: "gateway" not in group.roles)


def _svg_text(x: float, y: float, text: str, **attributes: str) -> str:
    extra = "".join(
        f' {name.replace("_", "-")}="{esc(value)}"' for name, value in attributes.items()
    )
    return f'<text x="{x:.0f}" y="{y:.0f}"{extra}>{esc(text)}</text>'


def _role_spans(roles: Sequence[str]) -> str:
    spans = []
    for name in roles:
        if registry.role(name).implemented:
            spans.append(f"<tspan>{esc(name)}</tspan>")
        else:
            spans.append(
                f'<tspan fill="{NOT_DEPLOYED_COLOUR}" font-style="italic">'
                f"{esc(name)} (not deployed)</tspan>"
            )
    return ", ".join(spans) or "<tspan>none</tspan>"


def topology_svg(topology: Topology, openings: dict[str, tuple[Opening, ...]]) -> str:
    """Sites side by side, each a box of host groups, gateways joined by the VPN."""
    sites = []
    for site in topology.sites:
        header = [
            f"site {site.name}{' (primary)' if site.primary else ''}: {site.location}",
            f"LAN {site.lan} · public {site.public}",
            f"management {site.management}",
        ]
        groups = _site_groups(topology, site.name, openings)
        # Bold titles are wider; category lines start after their colour square.
        widest = max(
            [len(group.title) * _BOLD_CHAR for group in groups]
            + [len(line) * _CHAR + 16 for group in groups for line in group.lines()[1:]]
            + [len(line) * _BOLD_CHAR for line in header]
        )
        sites.append((site, header, groups, max(320.0, widest + 5 * _PAD)))
    every_host = ", ".join(
        f"{name}{'' if registry.role(name).implemented else ' (not deployed)'}"
        for name in registry.EVERY_HOST_ROLES
    )
    gap = 220.0
    top = 80.0 if len(topology.sites) > 2 else 20.0  # room for the arcs over the sites
    elements: list[str] = []
    gateways: list[tuple[float, float, float]] = []  # left, right, middle y of each gateway box
    x = 20.0
    bottom = top
    for _site, header, groups, width in sites:
        y = top + _PAD
        inner: list[str] = []
        for index, line in enumerate(header):
            inner.append(
                _svg_text(x + _PAD, y + 13, line, font_weight="bold" if index == 0 else "normal")
            )
            y += _LINE
        y += 6
        for group in groups:
            height = _LINE * len(group.lines()) + _PAD
            is_gateway = "gateway" in group.roles
            inner.append(
                f'<rect x="{x + _PAD:.0f}" y="{y:.0f}" width="{width - 2 * _PAD:.0f}" '
                f'height="{height:.0f}" rx="4" fill="#ffffff" stroke="#495057"/>'
            )
            if is_gateway:
                gateways.append((x + _PAD, x + width - _PAD, y + height / 2))
            line_y = y + 16
            inner.append(_svg_text(x + 2 * _PAD, line_y, group.title, font_weight="bold"))
            line_y += _LINE
            inner.append(
                f'<text x="{x + 2 * _PAD:.0f}" y="{line_y:.0f}">roles: '
                f"{_role_spans(group.roles)}</text>"
            )
            for category, parts in group.categories.items():
                line_y += _LINE
                colour = CATEGORIES[category][0]
                inner.append(
                    f'<rect x="{x + 2 * _PAD:.0f}" y="{line_y - 10:.0f}" width="10" '
                    f'height="10" fill="{colour}"/>'
                )
                inner.append(
                    _svg_text(
                        x + 2 * _PAD + 16,
                        line_y,
                        f"{category}: {'; '.join(parts)}",
                        fill=colour,
                    )
                )
            y += height + 8
        height = y - top + _PAD - 8
        elements.append(
            f'<rect x="{x:.0f}" y="{top:.0f}" width="{width:.0f}" height="{height:.0f}" '
            'rx="8" fill="#f8f9fa" stroke="#343a40" stroke-width="2"/>'
        )
        elements += inner
        bottom = max(bottom, top + height)
        x += width + gap
    vpn = CATEGORIES[PEER][0]
    label = f"WireGuard VPN, UDP {catalogue.service('wireguard').port}"
    for first in range(len(gateways)):
        for second in range(first + 1, len(gateways)):
            left, right = gateways[first], gateways[second]
            if second == first + 1:
                elements.append(
                    f'<line x1="{left[1]:.0f}" y1="{left[2]:.0f}" x2="{right[0]:.0f}" '
                    f'y2="{right[2]:.0f}" stroke="{vpn}" stroke-width="3"/>'
                )
                middle = (left[1] + right[0]) / 2
                elements.append(
                    _svg_text(middle, left[2] - 8, label, text_anchor="middle", fill=vpn)
                )
                elements.append(
                    _svg_text(
                        middle, left[2] + 18, "all traffic between sites", text_anchor="middle"
                    )
                )
            else:
                start, end = (left[0] + left[1]) / 2, (right[0] + right[1]) / 2
                elements.append(
                    f'<path d="M {start:.0f} {top:.0f} C {start:.0f} {top - 60:.0f} '
                    f'{end:.0f} {top - 60:.0f} {end:.0f} {top:.0f}" fill="none" '
                    f'stroke="{vpn}" stroke-width="3" stroke-dasharray="6 4"/>'
                )
    legend_y = bottom + 30
    legend = [_svg_text(20, legend_y, f"Every host also runs: {every_host}.")]
    legend_x = 20.0
    legend_y += 24
    for colour, words in CATEGORIES.values():
        legend.append(
            f'<rect x="{legend_x:.0f}" y="{legend_y - 10:.0f}" width="10" height="10" '
            f'fill="{colour}"/>'
        )
        legend.append(_svg_text(legend_x + 16, legend_y, words))
        legend_y += 20
    legend.append(
        f'<rect x="{legend_x:.0f}" y="{legend_y - 10:.0f}" width="10" height="10" '
        f'fill="{NOT_DEPLOYED_COLOUR}"/>'
    )
    legend.append(_svg_text(legend_x + 16, legend_y, "(not deployed): a role without a module yet"))
    total_width = max(x - gap + 20, 640)
    total_height = legend_y + 20
    title = (
        f"{len(topology.sites)} sites, {len(topology.hosts)} hosts: host groups with their roles "
        "and open ports, gateways joined by the VPN"
    )
    return "\n".join(
        [
            f'<svg role="img" width="{total_width:.0f}" height="{total_height:.0f}" '
            f'viewBox="0 0 {total_width:.0f} {total_height:.0f}" font-family="sans-serif" '
            'font-size="12">',
            f"<title>{esc(title)}</title>",
            *elements,
            *legend,
            "</svg>",
        ]
    )


def _topology_section(topology: Topology, openings: dict[str, tuple[Opening, ...]]) -> list[str]:
    return [
        "<p>Each box is a host, or the hosts of a site that share their roles. Coloured lines "
        "say which ports are open to whom (the port matrix below gives every source).</p>",
        topology_svg(topology, openings),
    ]


# --- ports, TLS, firewall -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def sources_text(sources: tuple[Network, ...] | None) -> str:
    """`any`, or the networks (the hosts of one site share their sources: made once)."""
    return "any" if sources is None else ", ".join(str(network) for network in sources)


def _opening_cells(opening: Opening) -> tuple[str, ...]:
    service = opening.service
    sources = sources_text(opening.sources)
    return (
        service.name,
        str(service.transport),
        ports_text(service.ports),
        exposure_text(service),
        sources,
        str(service.tls),
    )


def _grouped(topology: Topology, key_of: dict[str, tuple]) -> list[tuple[tuple, list[str]]]:
    """Hosts with equal keys together, in inventory order of their first host."""
    groups: dict[tuple, list[str]] = {}
    for host in topology.hosts:
        groups.setdefault(key_of[host.name], []).append(host.name)
    return list(groups.items())


def _ports_section(topology: Topology, openings: dict[str, tuple[Opening, ...]]) -> list[str]:
    keys = {
        name: tuple(_opening_cells(opening) for opening in found)
        for name, found in openings.items()
    }
    headers = ("hosts", "service", "transport", "ports", "exposure", "sources", "TLS")
    lines = [
        "<p>Every opening of every host's firewall, from the service catalogue (the same data "
        "as ports.json); hosts with the same openings share a row. Every other port is closed. "
        f"Plaintext ports never open: {esc(', '.join(map(str, catalogue.FORBIDDEN_PORTS)))}."
        "</p>",
        "<table>",
        "<tr>" + "".join(f"<th>{esc(header)}</th>" for header in headers) + "</tr>",
    ]
    for cells, hosts in _grouped(topology, keys):
        span = max(len(cells), 1)
        first = f'<td rowspan="{span}">{esc(hosts_text(hosts, full=True))}</td>'
        if not cells:
            lines.append(f'<tr>{first}<td colspan="6">nothing open</td></tr>')
        for index, row in enumerate(cells):
            category = _CATEGORY_OF[catalogue.service(row[0]).exposure]
            colour = CATEGORIES[category][0]
            row_cells = "".join(
                f'<td style="color: {colour}">{esc(cell)}</td>'
                if column == 3
                else f"<td>{esc(cell)}</td>"
                for column, cell in enumerate(row)
            )
            lines.append(f"<tr>{first if index == 0 else ''}{row_cells}</tr>")
    lines.append("</table>")
    return lines


def _tls_section(topology: Topology) -> list[str]:
    deployed = registry.deployed_role_names(topology)
    present = {role.name for host in topology.hosts for role in registry.host_roles(host)}
    rows = []
    for service in catalogue.SERVICES:
        if service.role not in present:
            continue
        state = (
            "deployed"
            if service.role in deployed
            else f'<span class="missing">{esc(_not_deployed_words(service.role))}</span>'
        )
        rows.append(
            (
                esc(service.name),
                esc(service.role),
                esc(f"{service.transport} {ports_text(service.ports)}"),
                f"<b>{esc(service.tls)}</b>: {esc(TLS_WORDS[service.tls])}",
                esc(", ".join(service.fqdns(topology.domain)) or "—"),
                state,
            )
        )
    return [
        "<p>One policy for every TLS daemon (bulwark/tls.py, Mozilla Server Side TLS 6.0, "
        f"intermediate): protocols {esc(tls.MIN_PROTOCOL)} and later; TLS 1.2 ciphers "
        f"<code>{esc(':'.join(tls.TLS12_CIPHERS))}</code> (all ECDHE: every session forward "
        f"secret); TLS 1.3 suites <code>{esc(':'.join(tls.TLS13_SUITES))}</code>; groups "
        f"<code>{esc(':'.join(tls.GROUPS))}</code>. Certificates come from the internal CA "
        "(pki role) or the operator.</p>",
        *_table(("service", "role", "port", "TLS", "client names", "status"), rows),
        "<p>Plaintext ports never open: "
        f"{esc(', '.join(map(str, catalogue.FORBIDDEN_PORTS)))} (IMAP, POP3 and LDAP without "
        "TLS).</p>",
    ]


def _source_words(topology: Topology, host: Host, opening: Opening, names: dict[str, str]) -> str:
    """Who may connect, in words; `names`: host name by LAN address (/32 network)."""
    service = opening.service
    if opening.sources is None:
        return "anyone"
    if service.exposure is Exposure.MANAGEMENT:
        networks = ", ".join(str(network) for network in opening.sources)
        return f"the management and admin networks ({networks}) only"
    if service.exposure is Exposure.PEER_GATEWAY:
        gateways = [
            f"{gateway.name} ({gateway.public_address})"
            for gateway in topology.hosts_with_role("gateway")
            if gateway.site != host.site
        ]
        return f"the other site's gateway {', '.join(gateways)} only"
    who = " and ".join(
        f"{clients.role} hosts of "
        + ("this site" if clients.scope is Scope.SAME_SITE else "the other site")
        for clients in service.clients
    )
    if len(opening.sources) > HOSTS_LISTED:
        return f"the {len(opening.sources)} {who}, by LAN address, only"
    found = [names.get(network, str(network)) for network in opening.sources]
    return f"{who} ({', '.join(found)}), by LAN address, only"


def firewall_words(
    topology: Topology, host: Host, openings: Sequence[Opening], names: dict[Network, str]
) -> list[str]:
    """What `host`'s ruleset does, one sentence a line, naming no address of its own (so
    hosts with the same ruleset share the words)."""
    words = [
        "Drops every incoming connection not listed here (default policy drop); accepts "
        "replies to its own connections, and ICMP up to a rate limit."
    ]
    for opening in openings:
        service = opening.service
        words.append(
            f"Accepts {service.transport} {ports_text(service.ports)} ({service.name}, "
            f"{TLS_WORDS[service.tls]}) from {_source_words(topology, host, opening, names)}."
        )
    if host.has_role("gateway") and registry.role("gateway").implemented:
        site = topology.site(host.site)
        others = ", ".join(str(peer.lan) for peer in topology.peer_sites(host.site))
        words.append(
            f"Forwards only between its site's LAN {site.lan} and the tunnel "
            f"({VPN_INTERFACE}) to {others}; drops all other forwarding."
        )
    else:
        words.append("Forwards nothing.")
    if bruteforce.protects(host):
        words.append(
            f"An address failing {bruteforce.MAX_FAILURES} logins within "
            f"{bruteforce.WINDOW_MINUTES} minutes is dropped on the public ports for "
            f"{bruteforce.BAN_MINUTES} minutes; the management, admin and site networks never."
        )
    return words


def _firewall_section(topology: Topology, openings: dict[str, tuple[Opening, ...]]) -> list[str]:
    if not registry.role("firewall").implemented:
        return [f"<p>{esc(_not_deployed_words('firewall'))}.</p>"]
    names = {host_network(host.lan_address): host.name for host in topology.hosts}
    keys = {
        host.name: tuple(firewall_words(topology, host, openings[host.name], names))
        for host in topology.hosts
    }
    lines = []
    for words, hosts in _grouped(topology, keys):
        lines.append(f"<h3>{esc(hosts_text(hosts, full=True))}</h3>")
        lines.append('<ul class="words">' + "".join(f"<li>{esc(w)}</li>" for w in words) + "</ul>")
    return lines


# --- volumes, retention, backups ----------------------------------------------------------------

UNLOCK_PATHS: tuple[str, ...] = (
    "No key is on the host. After a reboot each volume opens by itself through Clevis and the "
    "Tang server of the other site, reached only through the VPN, whose keys are in the vault "
    "and whose signing key clients pin; if that Tang does not answer within a bounded time, "
    "the volume stays closed, and the units keeping data on it stay down, until it is unlocked.",
    "The operator's bulwark storage unlock command (and every deploy) streams each volume key "
    "from the vault over SSH into cryptsetup; no key is ever written to the host's disks.",
    "For recovery at the console, each volume's second key slot: a passphrase kept in the "
    "vault (luks-recovery/HOST/VOLUME).",
    "Each volume's LUKS header, which holds its key slots, is escrowed in the vault "
    "(luks-header/HOST/VOLUME) by bulwark storage backup-headers and after every key rotation; "
    "backup-headers --check tells a stale backup, and restore-header writes one back only "
    "onto the volume it came from.",
)
# The host name the volume table shows in vault entries, for the hosts of a row.
HOST_PLACEHOLDER = "HOST"


def _volumes_section(topology: Topology) -> list[str]:
    storage = registry.role("storage")
    owners = {
        volume.name: [role.name for role in registry.ROLES if volume.name in role.volumes]
        for volume in volumes.VOLUMES
    }
    rows = []
    for volume in volumes.VOLUMES:
        would = [
            host.name
            for host in topology.hosts
            if any(role.name in owners[volume.name] for role in registry.host_roles(host))
        ]
        if not would:
            continue
        has = [host.name for host in topology.hosts if volume.name in volumes.volumes_for(host)]
        plain = [name for name in would if not topology.host(name).volumes_encrypted]
        everywhere = len(would) == len(topology.hosts)
        missing = (
            f"not encrypted on {hosts_text(plain)} (volumes_encrypted: false)"
            if plain and storage.implemented
            else _volume_missing(storage, owners[volume.name])
        )
        rows.append(
            (
                esc(volume.name),
                esc(volume.description),
                esc(", ".join(owners[volume.name])),
                esc("every host" if everywhere else hosts_text(would)),
                esc(f"encrypted on {hosts_text(has)}")
                if has and not plain
                else f'<span class="missing">{esc(missing)}</span>',
            )
        )
    state = (
        "in place"
        if storage.implemented
        else f'<span class="missing">{esc(_not_deployed_words("storage"))}</span>'
    )
    lines = [
        "<p>Every kind of customer data and the backups get a LUKS2 volume of their own, each "
        "with its own key from the vault (bulwark/volumes.py). The system logs do not yet: "
        "they stay on each host's root disk.</p>",
        *_table(("volume", "holds", "owned by", "hosts", "status"), rows),
        *_every_volume(topology),
        f"<h3>Unlock paths: {state}</h3>",
        '<ul class="words">' + "".join(f"<li>{esc(path)}</li>" for path in UNLOCK_PATHS),
        "</ul>",
    ]
    if not storage.implemented:
        lines.append(
            "<p>Until the storage role exists, no volume is created: mail, calendars, contacts "
            "and files are on each host's root disk, unencrypted.</p>"
        )
    return lines


def _every_volume(topology: Topology) -> list[str]:
    """Each encrypted volume: hosts whose volume is alike (device, mount point, encryption,
    key slots, unlock, escrow; vault entries with HOST for the host's name) share a row."""
    hosts: dict[VolumeAudit, list[str]] = {}
    for host in sorted(topology.hosts, key=lambda host: host.name):
        for found in host_volumes(topology, dataclasses.replace(host, name=HOST_PLACEHOLDER)):
            hosts.setdefault(found, []).append(host.name)
    if not hosts:
        return ["<p>No host of this inventory has an encrypted volume.</p>"]
    rows = [
        (
            esc(found.name),
            esc(hosts_text(names, full=True)),
            f"<code>{esc(found.device)}</code> on <code>{esc(found.mount_point)}</code>",
            esc(f"{found.cipher}, {found.key_bits}-bit key; {found.pbkdf}"),
            "".join(f"<div>{esc(slot.text())}</div>" for slot in found.key_slots),
            "".join(f"<div>{esc(path)}</div>" for path in found.unlock),
            esc(found.header_escrow),
        )
        for found, names in hosts.items()
    ]
    return [
        f"<h3>Every encrypted volume ({sum(map(len, hosts.values()))})</h3>",
        "<p>Key slots by kind and the vault entry holding each (HOST: the host's name), never "
        "a value. Rendered from the inventory: whether an escrowed header is current, "
        "bulwark storage backup-headers --check says.</p>",
        *_table(
            (
                "volume",
                "hosts",
                "device on mount point",
                "encryption",
                "key slots",
                "unlock",
                "header escrow",
            ),
            rows,
        ),
    ]


def _volume_missing(storage: registry.Role, owners: Sequence[str]) -> str:
    if not storage.implemented:
        return _not_deployed_words("storage")
    waiting = [name for name in owners if not registry.role(name).implemented]
    return _not_deployed_words(", ".join(waiting)) if waiting else "no host deploys it"


def _retention_section(topology: Topology, rows: list[PromiseRow]) -> list[str]:
    total = len(topology.hosts)
    keys = ("log-retention", "deleted-items-7-days", "backup-pruning", "account-closure")
    chosen = [row for key in keys for row in rows if row.promise.key == key]
    table = [
        (
            esc(row.promise.section),
            esc(row.promise.claim),
            _status_cell(row),
            _evidence_cell(row, total),
        )
        for row in chosen
    ]
    return [
        *_table(("what", "promise", "status", "rendered lines"), table, widths=(15, 25, 25, 35)),
        *_closed_accounts(topology),
    ]


def _closed_accounts(topology: Topology) -> list[str]:
    """The inventory's closed accounts and the day each one's data is purged."""
    days = topology.closed_account_retention_days
    lines = [
        f"<p>A closed account's data is purged {days} days after its closure "
        "(<code>closed_account_retention_days</code>), by a daily timer on each host holding "
        "accounts' data; until then it logs in nowhere and its data is kept as it was.</p>"
    ]
    if not topology.closed_accounts:
        return [*lines, "<p>No account of this inventory is closed.</p>"]
    table = [
        (
            esc(account.address(topology.domain)),
            esc(account.closed.isoformat()),
            esc(topology.purge_date(account).isoformat()),
        )
        for account in topology.closed_accounts
    ]
    return [*lines, *_table(("closed account", "closed on", "purged from"), table)]


def _backups_section(topology: Topology) -> list[str]:
    backup = registry.role("backup")
    hosts = [host.name for host in topology.hosts_with_role("backup")]
    service = catalogue.service("backup")
    where = (
        f"Backup hosts in this inventory: {hosts_text(hosts)}."
        if hosts
        else ("No host of this inventory has the backup role.")
    )
    lines = [
        f"<p>The backup role: {esc(backup.summary)}. Each site's hosts send to the other "
        f"site's backup host over the VPN (TCP {service.port}, {esc(TLS_WORDS[service.tls])}); "
        "backups are encrypted and append-only from the source, deleted data stays restorable "
        f"7 days, restores are drilled. {esc(where)}</p>",
    ]
    if backup.implemented:
        lines.append('<p class="status kept">deployed</p>')
    else:
        lines.append(
            f'<p class="status missing">{esc(_not_deployed_words("backup"))}: nothing is backed '
            "up today. Mail and calendars survive the loss of one site through replication, "
            "which also copies deletions.</p>"
        )
    return lines


# --- CIS ----------------------------------------------------------------------------------------


def _cis_section(topology: Topology) -> list[str]:
    present = {role.name for host in topology.hosts for role in registry.host_roles(host)}
    lines = [
        f"<p>Expected findings of the {esc(cis.BENCHMARK)} (by recommendation title), per role: "
        "by design where the role exists to run that service, open where the work is still "
        "to do.</p>"
    ]
    for role in registry.ROLES:
        if role.name not in present:
            continue
        mine = [deviation for deviation in cis.DEVIATIONS if deviation.role == role.name]
        suffix = "" if role.implemented else " (not deployed yet: expected once it lands)"
        lines.append(f"<h3>{esc(role.name)}{esc(suffix)}</h3>")
        if not mine:
            lines.append("<p>No deviation expected.</p>")
            continue
        lines += _table(
            ("recommendation", "what the role does", "why", "kind"),
            (
                (
                    esc(deviation.recommendation),
                    esc(deviation.deviation),
                    esc(deviation.reason),
                    "by design" if deviation.by_design else '<span class="partly">open</span>',
                )
                for deviation in mine
            ),
        )
    return lines


# --- promises -----------------------------------------------------------------------------------

_STATUS_CLASS = {
    Status.KEPT: "kept",
    Status.PARTLY: "partly",
    Status.NOT_IMPLEMENTED: "missing",
    Status.NOT_KEPT: "waived",
    Status.NOT_DEPLOYED: "absent",
}


def status_words(row: PromiseRow) -> tuple[str, str]:
    """The status in plain words, as (head, detail): what is kept, what is not implemented
    and why not."""
    promise = row.promise
    missing = promise.missing_roles
    if row.status is Status.NOT_KEPT:
        return "not kept", promise.waived
    if row.status is Status.NOT_IMPLEMENTED:
        return "not implemented", f"{_roles_words(missing)} no module yet."
    if row.status is Status.PARTLY:
        return "kept in part", f"not implemented: {_roles_words(missing)} no module yet."
    if row.status is Status.NOT_DEPLOYED:
        return "not deployed here", f"no host of this inventory has {', '.join(promise.roles)}."
    return "kept", ""


def _roles_words(roles: Sequence[str]) -> str:
    if len(roles) == 1:
        return f"the {roles[0]} role has"
    return f"the {', '.join(roles[:-1])} and {roles[-1]} roles have"


def _status_cell(row: PromiseRow) -> str:
    head, detail = status_words(row)
    cell = f'<span class="status {_STATUS_CLASS[row.status]}">{esc(head)}</span>'
    if detail:
        cell += f"<div>{esc(detail)}</div>"
    if row.promise.note:
        cell += f'<div class="note">{esc(row.promise.note)}</div>'
    return cell


def _evidence_cell(row: PromiseRow, total: int) -> str:
    if not row.found:
        return '<span class="muted">—</span>'
    parts = []
    by_evidence: dict[Evidence, list[Found]] = {}
    for found in row.found:
        by_evidence.setdefault(found.evidence, []).append(found)
    for founds in by_evidence.values():
        for found in founds[:LINES_SHOWN]:
            parts.append(
                f'<div class="ev"><span class="path">{esc(found.evidence.role)}: '
                f"{esc(found.path)}</span> on {esc(hosts_text(found.hosts, total=total))}"
                f"<pre>{esc(found.line)}</pre></div>"
            )
        if len(founds) > LINES_SHOWN:
            parts.append(
                f'<div class="muted">and {len(founds) - LINES_SHOWN} more distinct lines</div>'
            )
    return "".join(parts)


def _tests_cell(promise: Promise) -> str:
    if not promise.tests:
        return '<span class="muted">—</span>'
    return "".join(f"<div><code>{esc(test)}</code></div>" for test in promise.tests)


def _promises_section(rows: list[PromiseRow], total: int) -> list[str]:
    table = [
        (
            esc(index),
            esc(f"{row.promise.seed} · {row.promise.section}"),
            esc(row.promise.claim),
            esc(", ".join(row.promise.roles) or "—"),
            _status_cell(row),
            _evidence_cell(row, total),
            _tests_cell(row.promise),
        )
        for index, row in enumerate(rows, start=1)
    ]
    return [
        "<p>Every security promise of the seeds (002: security practices) and every endpoint "
        "(000: server names and ports), with the rendered configuration lines that implement "
        "it and the tests that prove it, or why it is not kept. The status follows the "
        "registry: a promise becomes kept when the roles delivering it have a module.</p>",
        *_table(
            ("#", "seed", "promise", "roles", "status", "implemented by", "proved by"),
            table,
            widths=(3, 9, 15, 7, 15, 30, 21),
        ),
    ]
