"""The controller's filter on the management bridge: the containers reach the apt proxy, no more.

The management bridge puts the containers one hop from the controller, whose own services may
listen on every address. This table, in the controller's namespace, lets in only the replies to
the controller's SSH connections and requests to the apt proxy (the rest is rejected, so a
container learns at once), and forwards nothing to or from the lab's links.
"""

from __future__ import annotations

import subprocess

from bulwark.lab.plan import LINK_PREFIX, LabPlan
from bulwark.lab.system import installed, run

TABLE = "bulwark_lab"


def render_ruleset(plan: LabPlan) -> str:
    """One nft transaction that (re)creates the lab's table; priority -1 runs before others."""
    lab_links = f'"{LINK_PREFIX}*"'
    return f"""\
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain input {{
        type filter hook input priority filter - 1; policy accept;
        iifname {lab_links} ct state established,related accept
        iifname {lab_links} ip daddr {plan.bridge.ip} tcp dport {plan.apt_proxy_port} accept
        iifname {lab_links} reject with icmpx type admin-prohibited
    }}
    chain forward {{
        type filter hook forward priority filter - 1; policy accept;
        iifname {lab_links} drop
        oifname {lab_links} drop
    }}
}}
"""


def apply(plan: LabPlan) -> None:
    subprocess.run(["nft", "-f", "-"], input=render_ruleset(plan), text=True, check=True)


def present() -> bool:
    return installed("nft") and f"table inet {TABLE}" in run(["nft", "list", "tables"], check=False)


def remove() -> None:
    if present():
        run(["nft", "delete", "table", "inet", TABLE])
