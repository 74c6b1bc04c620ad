"""DKIM keys, their DNS records and the DMARC policy (bulwark.mailtrust), rspamd's and Postfix's
configuration for them (roles/mx.py), the Junk filing script (roles/mailstore.py), and the
inventory fields behind them. A signature made with a vault key verifies, with dkimpy (a
receiving server's library), against the record `bulwark dns` publishes; rspamd's own key
generator's format is the one the vault keeps. The lab proves the live path:
tests/e2e/test_mailtrust.py."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import re
import shutil
import subprocess
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from mutations import set_platform

from bulwark import catalogue, mailtrust
from bulwark.audit import SealedSecret, SealedSecrets
from bulwark.dns import zone_records
from bulwark.inventory import load_topology
from bulwark.platform_secrets import required_secrets
from bulwark.render import render_host_configs
from bulwark.topology import DEFAULT_DKIM_SELECTORS, Topology
from bulwark.validation import TopologyError
from roles import mailstore, mx

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")


def rendered(topology: Topology, host_name: str, secrets=None) -> dict[str, str]:
    files = render_host_configs(
        topology, topology.host(host_name), secrets or SealedSecrets(), reveal=secrets is not None
    )
    return {item.path: item.content for item in files}


def problems_of(path: Path) -> list[str]:
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    return [str(problem) for problem in caught.value.problems]


def txt_records(topology: Topology, vault) -> dict[str, str]:
    """TXT owner -> its data, the quoted strings joined as a resolver joins them."""
    return {
        record.name: "".join(re.findall(r'"([^"]*)"', record.data))
        for record in zone_records(topology, vault)
        if record.type == "TXT"
    }


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_a_signature_with_a_vault_key_verifies_against_the_published_record(
    lab_vault, algorithm: str
):
    selector = dict(LAB.dkim_selectors)[algorithm]
    private = lab_vault.get(f"dkim/{selector}").reveal()
    record = txt_records(LAB, lab_vault)[f"{selector}._domainkey.example.net"]
    message = (
        b"From: alice@example.net\r\nTo: someone@example.org\r\nSubject: signed\r\n"
        b"Date: " + email.utils.formatdate().encode() + b"\r\n\r\nA body.\r\n"
    )
    if algorithm == "ed25519":  # dkimpy takes the 32-byte seed, base64
        key = base64.b64encode(base64.b64decode(private)[:32])
        signature_algorithm = b"ed25519-sha256"
    else:
        key = private.encode()
        signature_algorithm = b"rsa-sha256"
    signature = dkim.sign(
        message, selector.encode(), b"example.net", key, signature_algorithm=signature_algorithm
    )

    def published(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{selector}._domainkey.example.net.".encode()
        return record.encode()

    assert dkim.verify(signature + message, dnsfunc=published)
    assert not dkim.verify(signature + message.replace(b"A body", b"B body"), dnsfunc=published)


def test_the_ed25519_key_is_in_rspamds_own_format(tmp_path: Path):
    """What `rspamadm dkim_keygen -t ed25519` writes: base64 of the seed, then the public key
    (rspamd 3.4 reads no PEM Ed25519 key)."""
    ours = base64.b64decode(mailtrust.new_dkim_key("ed25519"))
    seed, public = ours[:32], ours[32:]
    derived = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert derived.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == (
        public
    )
    if shutil.which("rspamadm") is None:
        pytest.skip("rspamadm not installed")
    generated = subprocess.run(
        ["rspamadm", "dkim_keygen", "-t", "ed25519", "-s", "s", "-d", "example.net",
         "-k", str(tmp_path / "key")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    theirs = (tmp_path / "key").read_text().strip()
    assert len(base64.b64decode(theirs)) == len(ours)
    assert base64.b64encode(base64.b64decode(theirs)[32:]).decode() in generated.replace('"', "")
    assert mailtrust.dkim_record("ed25519", theirs).split("p=")[1] in generated


def test_the_records_are_published_for_each_selector_and_dmarc_reports_to_the_postmaster(
    lab_vault,
):
    txt = txt_records(LAB, lab_vault)
    assert txt["ed1._domainkey.example.net"].startswith("v=DKIM1; k=ed25519; p=")
    assert txt["rsa1._domainkey.example.net"].startswith("v=DKIM1; k=rsa; p=")
    assert txt["_dmarc.example.net"] == (
        "v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s; rua=mailto:postmaster@example.net"
    )
    # A 2048-bit key's record is longer than one TXT string: split at 255 bytes.
    (rsa,) = [r for r in zone_records(LAB, lab_vault) if r.name.startswith("rsa1._domainkey")]
    assert all(len(part) <= 255 for part in re.findall(r'"([^"]*)"', rsa.data))
    without = dataclasses.replace(LAB, postmaster=None)
    assert "rua=" not in txt_records(without, lab_vault)["_dmarc.example.net"]


def test_a_new_selector_is_a_new_key_to_generate():
    """Rotation by selector: renaming one asks the vault for a new key."""
    rotated = dataclasses.replace(LAB, dkim_selectors=(("ed25519", "ed2"), ("rsa", "rsa1")))
    assert "dkim/ed2" in required_secrets(rotated)
    assert "dkim/ed1" not in required_secrets(rotated)
    assert {"dkim/ed1", "dkim/rsa1"} <= set(required_secrets(LAB))


def test_rspamd_signs_with_every_key_and_listens_on_loopback_only():
    files = rendered(LAB, "nj-mail")
    signing = files[f"{mailtrust.RSPAMD_LOCAL_DIR}/dkim_signing.conf"]
    assert "sign_authenticated = true;" in signing
    assert "sign_local = false;" in signing
    assert "allow_hdrfrom_mismatch = false;" in signing
    for _, selector in LAB.dkim_selectors:
        path = mx.dkim_key_path(LAB, selector)
        assert f'selector = "{selector}";\n        path = "{path}";' in signing
        assert path in files
    proxy = files[f"{mailtrust.RSPAMD_LOCAL_DIR}/worker-proxy.inc"]
    port = catalogue.service("spam-filter").port
    assert f'bind_socket = "127.0.0.1:{port}";' in proxy
    for worker in ("worker-normal.inc", "worker-controller.inc", "fuzzy_check.conf"):
        assert "enabled = false;" in files[f"{mailtrust.RSPAMD_LOCAL_DIR}/{worker}"]
    main_cf = files[mx.MAIN_CF]
    assert f"smtpd_milters = inet:127.0.0.1:{port}\n" in main_cf
    assert "milter_default_action = tempfail\n" in main_cf


def test_the_key_files_are_readable_by_rspamd_alone_and_hold_the_vault_key(lab_vault):
    managed = {m.path: m for m in mx.managed_files(LAB, LAB.host("nj-mail"))}
    files = rendered(LAB, "nj-mail", lab_vault)
    for _, selector, name in mailtrust.dkim_keys(LAB):
        path = mx.dkim_key_path(LAB, selector)
        assert (managed[path].user, managed[path].group, managed[path].mode) == (
            "root",
            mx.RSPAMD_USER,
            "0640",
        )
        assert files[path].strip() == lab_vault.get(name).reveal().strip()
    sealed = rendered(LAB, "nj-mail")  # an audit without the key: the name alone
    for _, selector, name in mailtrust.dkim_keys(LAB):
        assert sealed[mx.dkim_key_path(LAB, selector)].strip() == SealedSecret(name).placeholder


def test_the_lab_resolves_through_its_dns_server_and_production_through_its_own():
    lab = rendered(LAB, "nj-mail")[f"{mailtrust.RSPAMD_LOCAL_DIR}/options.inc"]
    assert 'nameserver = ["198.51.100.200"];' in lab
    assert "enable_test_patterns = true;" in lab
    production = rendered(PRODUCTION, "nj-mx")[f"{mailtrust.RSPAMD_LOCAL_DIR}/options.inc"]
    assert "enable_test_patterns" not in production


def test_postmaster_and_abuse_reach_the_postmaster_account():
    main_cf = rendered(LAB, "nj-mail")[mx.MAIN_CF]
    assert (
        "virtual_alias_maps = inline:{ abuse@example.net=alice@example.net, "
        "postmaster@example.net=alice@example.net }\n"
    ) in main_cf
    assert (
        "virtual_alias_maps"
        not in rendered(dataclasses.replace(LAB, postmaster=None), "nj-mail")[mx.MAIN_CF]
    )


def test_the_store_files_marked_spam_into_junk_after_the_replication_plugins():
    files = rendered(LAB, "nj-mail")
    script = files[mailstore.SIEVE_SCRIPT]
    assert 'if header :is "X-Spam" "Yes" {\n  fileinto "Junk";' in script
    dovecot = files["/etc/dovecot/dovecot.conf"]
    plugins = dovecot.index("mail_plugins = $mail_plugins notify replication")
    sieve = dovecot.index("mail_plugins = $mail_plugins sieve")
    assert plugins < sieve  # so LMTP keeps notify and replication
    assert f"sieve_before = {mailstore.SIEVE_SCRIPT}" in dovecot
    if shutil.which("doveconf"):  # Dovecot's own view: LMTP's plugins (TLS files left out)
        lmtp = subprocess.run(
            ["doveconf", "-c", "/dev/stdin", "-f", "protocol=lmtp", "mail_plugins"],
            input=re.sub(r"^.*(ssl_|<).*$", "", dovecot, flags=re.M),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert lmtp.returncode == 0, lmtp.stderr
        assert lmtp.stdout.split("=", 1)[1].split() == ["notify", "replication", "sieve"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("postmaster", "carol", "platform.postmaster: expected an account's user name"),
        ("dkim_selectors", {"ed25519": "a"}, "platform.dkim_selectors: expected a selector"),
        ("dkim_selectors", {"ed25519": "a", "rsa": "a"}, "platform.dkim_selectors: selectors are"),
        ("dkim_selectors", {"ed25519": "a", "rsa": "B_"}, "platform.dkim_selectors: selectors are"),
        ("resolvers", ["10.0.0.300"], "platform.resolvers: expected an IPv4 address, got"),
        ("resolvers", "10.0.0.3", "platform.resolvers: expected a list of IPv4 addresses"),
        ("spam_test_patterns", "yes", "platform.spam_test_patterns: expected True or False"),
    ],
)  # fmt: skip
def test_bad_mail_trust_fields_are_named(two_site_inventory, field, value, message):
    set_platform(field, value)(two_site_inventory)
    assert any(problem.startswith(message) for problem in problems_of(two_site_inventory.write()))


def test_the_default_selectors_need_no_inventory_field(two_site_inventory):
    topology = load_topology(two_site_inventory.write())
    assert topology.dkim_selectors == DEFAULT_DKIM_SELECTORS
    assert topology.postmaster is None and topology.resolvers == ()
