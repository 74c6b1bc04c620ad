"""bulwark.clevis offline: what the fact reads of a volume's tokens, and the commands each state
of a binding gets (facts in, commands out). The real thing runs in tests/vm."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from offline import run_operation
from test_luks import SPEC

from bulwark import clevis
from bulwark.audit import SealedSecrets
from bulwark.inventory import load_topology
from bulwark.render import render_host_configs

PRODUCTION = load_topology(Path(__file__).resolve().parents[2] / "inventory/production.py")

URL = "http://10.2.0.60:7500"
THP = "signing-thumbprint"
KID = "exchange-thumbprint"
BIND = (
    "read -r key ; read -r recovery ; printf '%s\\n' \"$recovery\" | clevis luks bind -y -k - "
    "-d /dev/disk/by-id/virtio-mail tang "
    f'\'{{"url":"{URL}","thp":"{THP}"}}\''
)


def _token(slot: str, url: str, kid: str) -> str:
    """A token as `cryptsetup token export` prints a Clevis tang binding (one line)."""
    header = {
        "alg": "ECDH-ES",
        "enc": "A256GCM",
        "kid": kid,
        "clevis": {"pin": "tang", "tang": {"url": url}},
    }
    protected = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    jwe = {"ciphertext": "x", "encrypted_key": "", "iv": "y", "protected": protected, "tag": "z"}
    return json.dumps({"type": "clevis", "keyslots": [slot], "jwe": jwe})


def commands(bindings: tuple[clevis.Binding, ...]) -> list[str]:
    return run_operation(
        clevis.clevis_bound,
        {"ClevisBindings": bindings},
        spec=SPEC,
        url=URL,
        thumbprint=THP,
        kid=KID,
    ).commands


def test_the_fact_reads_each_bindings_slots_server_and_exchange_key():
    lines = [_token("2", URL, KID), "", _token("3", "http://10.1.0.60:7500", "old")]
    assert clevis.ClevisBindings().process(lines) == (
        clevis.Binding(("2",), URL, KID),
        clevis.Binding(("3",), "http://10.1.0.60:7500", "old"),
    )
    assert clevis.ClevisBindings.default() == ()


def test_an_unbound_volume_is_bound_with_the_pinned_key_and_the_passphrase_on_stdin():
    assert commands(()) == [BIND]


def test_a_current_binding_is_left_alone():
    assert commands((clevis.Binding(("2",), URL, KID),)) == []


def test_a_binding_to_another_key_is_replaced_new_first_then_the_old_removed():
    stale = clevis.Binding(("2",), URL, "a key Tang no longer has")
    assert commands((stale,)) == [
        BIND,
        "clevis luks unbind -f -d /dev/disk/by-id/virtio-mail -s 2",
    ]
    current = clevis.Binding(("3",), URL, KID)
    assert commands((current, stale)) == [
        "clevis luks unbind -f -d /dev/disk/by-id/virtio-mail -s 2"
    ]


def test_the_boot_unit_is_bounded_ordered_after_the_tunnel_and_required_by_the_mount():
    """Rendered for a production store: the unit opens the volume after the network and the
    tunnel, gives up within its bound, and the volume's mount requires it."""
    host = PRODUCTION.host("nj-store")
    files = {
        item.path: item.content for item in render_host_configs(PRODUCTION, host, SealedSecrets())
    }
    unit = files["/etc/systemd/system/bulwark-unlock-mail.service"]
    assert f"TimeoutStartSec={clevis.UNLOCK_TIMEOUT_SECONDS}" in unit
    assert "After=network-online.target wg-quick@wg0.service bulwark-site-routes.service" in unit
    assert "ConditionPathExists=!/dev/mapper/bulwark-mail" in unit
    assert "ExecStart=/usr/local/sbin/bulwark-unlock /dev/disk/by-partlabel/bulwark-mail " in unit
    drop_in = files["/etc/systemd/system/var-vmail.mount.d/bulwark-clevis.conf"]
    assert "Requires=bulwark-unlock-mail.service" in drop_in
    assert "After=bulwark-unlock-mail.service" in drop_in
