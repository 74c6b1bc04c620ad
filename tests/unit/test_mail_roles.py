"""The mx and mailstore roles, rendered offline from the lab and production inventories.

Who writes which file on shared and split hosts; Postfix and Dovecot accept every rendered
configuration (`postfix check`, `doveconf -n`); TLS, ports, LMTP and replication as designed;
no secret in an audit; and the Lua passdb run for real by a scratch Dovecot (auth only, Unix
sockets in a temporary directory, no network listener).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulwark import bruteforce, catalogue, closure, mail, pki, tls
from bulwark.audit import SealedSecrets
from bulwark.checks import check_files
from bulwark.inventory import load_topology
from bulwark.render import RenderedFile, render_host_configs
from bulwark.templating import render_template
from bulwark.vault import Vault
from roles import mailstore, mx

REPO = Path(__file__).resolve().parents[2]
LAB = load_topology(REPO / "inventory/lab.py")
PRODUCTION = load_topology(REPO / "inventory/production.py")
MAIL_ROLES = {"mx", "mailstore"}
# What the mail store writes besides Dovecot's files: its stop bound and the replication retry.
_MAILSTORE_ONLY = dict.fromkeys(
    (
        mailstore.SYSCTL_FILE,
        mailstore.DOVECOT_DROPIN,
        mailstore.RETRY_SCRIPT,
        mailstore.RETRY_SERVICE_FILE,
        mailstore.RETRY_TIMER_FILE,
        mailstore.SIEVE_SCRIPT,
    ),
    "mailstore",
)
# rspamd's overrides and one DKIM key per selector, on every MX host.
_RSPAMD = {managed.path: "mx" for managed in mx.rspamd_files(LAB)}
# The brute-force watcher: installed by the first role of the host with logins (mx, then
# mailstore).
_WATCHER = (bruteforce.SCRIPT, bruteforce.UNIT_FILE)
# The closed accounts' purge, installed by the mail store (it keeps the mailboxes).
_PURGE = (closure.SCRIPT, closure.LIST, closure.UNIT_FILE, closure.TIMER_FILE)


@pytest.fixture(scope="module")
def lab_credentials(
    tmp_path_factory: pytest.TempPathFactory, generated_vaults
) -> tuple[Vault, dict]:
    """A vault with every secret the lab needs, and the plaintext passwords it handed out (this
    module's copy of the session's `generate_secrets` run, see conftest.py)."""
    copy = generated_vaults.copy(LAB, tmp_path_factory.mktemp("vault"), "lab.vault")
    return copy.vault, json.loads(copy.credentials.read_text())


def mail_files(topology, host_name: str, secrets=None, reveal=False) -> dict[str, RenderedFile]:
    host = topology.host(host_name)
    files = render_host_configs(topology, host, secrets or SealedSecrets(), reveal=reveal)
    return {item.path: item for item in files if item.role in MAIL_ROLES}


def main_cf(content: str) -> dict[str, str]:
    """main.cf as Postfix reads it: `name = value` lines, comments and blanks skipped."""
    settings = {}
    for line in content.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" = ")
            settings[key] = value
    return settings


def master_cf(content: str) -> dict[str, list[str]]:
    """master.cf's inet services: service (port) -> its `-o` options."""
    services: dict[str, list[str]] = {}
    current = None
    for line in content.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith(" "):
            if current is not None:
                services[current].append(line.split("-o", 1)[1].strip())
            continue
        fields = line.split()
        current = fields[0] if fields[1] == "inet" else None
        if current is not None:
            services[current] = []
    return services


# --- who writes what ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topology", "host_name", "expected"),
    [
        (
            LAB,
            "nj-mail",
            {
                mx.MAIN_CF: "mx",
                mx.MASTER_CF: "mx",
                mail.DOVECOT_CONFIG: "mailstore",
                mail.AUTH_SCRIPT: "mailstore",
                **_MAILSTORE_ONLY,
                **_RSPAMD,
                **dict.fromkeys(_WATCHER, "mx"),
                **dict.fromkeys(_PURGE, "mailstore"),
            },
        ),
        (
            PRODUCTION,
            "nj-mx",
            {
                mx.MAIN_CF: "mx",
                mx.MASTER_CF: "mx",
                mail.DOVECOT_CONFIG: "mx",
                mail.AUTH_SCRIPT: "mx",
                **{
                    path.replace("example.net", "example.com"): role
                    for path, role in _RSPAMD.items()
                },
                **dict.fromkeys(_WATCHER, "mx"),
            },
        ),
        (
            PRODUCTION,
            "nj-store",
            {
                mail.DOVECOT_CONFIG: "mailstore",
                mail.AUTH_SCRIPT: "mailstore",
                **_MAILSTORE_ONLY,
                **dict.fromkeys(_WATCHER, "mailstore"),
                **dict.fromkeys(_PURGE, "mailstore"),
            },
        ),
        (PRODUCTION, "nj-web", {}),
    ],
    ids=["lab-shared-host", "production-mx", "production-store", "production-web"],
)
def test_each_mail_file_has_one_writer(topology, host_name, expected):
    files = mail_files(topology, host_name)
    assert {path: item.role for path, item in files.items()} == expected


def test_secret_bearing_files_are_private():
    files = mail_files(PRODUCTION, "nj-mx")
    assert (files[mail.DOVECOT_CONFIG].mode, files[mail.DOVECOT_CONFIG].group) == ("0600", "root")
    assert (files[mail.AUTH_SCRIPT].mode, files[mail.AUTH_SCRIPT].group) == ("0640", "dovecot")
    assert files[mx.MAIN_CF].mode == "0644"


# --- the daemons' own checkers ------------------------------------------------------------------

needs_postfix = pytest.mark.skipif(
    shutil.which("postfix") is None, reason="postfix not installed (make checkers)"
)
needs_doveconf = pytest.mark.skipif(
    shutil.which("doveconf") is None, reason="dovecot-core not installed (make checkers)"
)


@needs_postfix
@needs_doveconf
@pytest.mark.parametrize("inventory", ["lab", "production"])
def test_every_mail_config_passes_its_checker(rendered_inventories, inventory):
    files = [item for item in rendered_inventories[inventory] if item.role in MAIL_ROLES]
    checked = [item for item in files if item.checker is not None]
    assert {item.checker for item in checked} == {"postfix", "dovecot", "rspamd", "sieve"}
    results = check_files(files)
    assert [(r.host, r.path, r.status, r.detail) for r in results] == [
        (item.host, item.path, "passed", "") for item in checked
    ]


def _rendered(path: str, content: str, checker: str | None, host: str = "nj-mx") -> RenderedFile:
    return RenderedFile(host, "mx", path, content, "0644", "root", "root", checker)


@needs_postfix
def test_postfix_checker_reports_unknown_parameters_and_broken_services():
    master = mail_files(PRODUCTION, "nj-mx")[mx.MASTER_CF].content
    results = check_files(
        [
            _rendered(mx.MAIN_CF, "tls_ffdhe_auto_groups = x25519\n", "postfix"),
            _rendered(mx.MASTER_CF, master, None),
            _rendered(mx.MAIN_CF, "compatibility_level = 3.6\n", "postfix", host="sea-mx"),
            _rendered(mx.MASTER_CF, master + "submission inet n\n", None, host="sea-mx"),
            _rendered(mx.MAIN_CF, "compatibility_level = 3.6\n", "postfix", host="lonely"),
        ]
    )
    assert [result.status for result in results] == ["failed"] * 3
    assert "unused parameter: tls_ffdhe_auto_groups" in results[0].detail
    assert "master.cf" in results[1].detail
    assert results[2].detail == f"no master.cf rendered with {mx.MAIN_CF} on this host"


@needs_doveconf
def test_dovecot_checker_reports_unknown_settings():
    [result] = check_files([_rendered(mail.DOVECOT_CONFIG, "ssl_protocols = !SSLv3\n", "dovecot")])
    assert result.status == "failed"
    assert "ssl_protocols" in result.detail


# --- Postfix: the MX, submission, LMTP ----------------------------------------------------------


def test_the_mx_offers_tls_and_submission_requires_it():
    files = mail_files(PRODUCTION, "nj-mx")
    settings = main_cf(files[mx.MAIN_CF].content)
    services = master_cf(files[mx.MASTER_CF].content)
    assert settings["smtpd_tls_security_level"] == "may"
    assert settings["smtpd_tls_auth_only"] == "yes"
    assert settings["smtpd_sasl_auth_enable"] == "no"
    assert "encrypt" not in files[mx.MAIN_CF].content
    smtp, submissions, submission = (
        str(catalogue.service(name).port) for name in ("smtp", "submissions", "submission")
    )
    assert services[smtp] == []
    for service in (submissions, submission):
        assert "smtpd_tls_security_level=encrypt" in services[service]
        assert "smtpd_sasl_auth_enable=yes" in services[service]
        assert "smtpd_recipient_restrictions=permit_sasl_authenticated,reject" in services[service]
    assert "smtpd_tls_wrappermode=yes" in services[submissions]
    assert "smtpd_tls_wrappermode=yes" not in services[submission]
    proxied = (
        f"{PRODUCTION.host('nj-mx').lan_address}:{catalogue.service('submissions-proxied').port}"
    )
    assert "smtpd_tls_wrappermode=yes" in services[proxied]
    assert "smtpd_tls_security_level=encrypt" in services[proxied]
    assert "smtpd_upstream_proxy_protocol=haproxy" in services[proxied]
    assert set(services) == {smtp, submissions, submission, proxied}


def test_relaying_is_for_authenticated_users_only():
    settings = main_cf(mail_files(LAB, "nj-mail")[mx.MAIN_CF].content)
    assert settings["smtpd_relay_restrictions"] == (
        "permit_sasl_authenticated, reject_unauth_destination"
    )
    assert settings["mynetworks"] == "127.0.0.0/8"
    assert settings["virtual_mailbox_domains"] == LAB.domain
    addresses = re.findall(r"([\w.+-]+@[\w.-]+)=ok", settings["virtual_mailbox_maps"])
    assert addresses == [account.address(LAB.domain) for account in LAB.accounts]


@pytest.mark.parametrize(
    ("topology", "host_name", "store_name"),
    [
        (PRODUCTION, "nj-mx", "nj-store"),
        (PRODUCTION, "sea-mx", "sea-store"),
        (LAB, "sea-mail", "sea-mail"),
    ],
)
def test_lmtp_delivers_to_the_sites_store_over_verified_tls(topology, host_name, store_name):
    settings = main_cf(mail_files(topology, host_name)[mx.MAIN_CF].content)
    store = topology.host(store_name)
    lmtp = catalogue.service("lmtp")
    assert settings["virtual_transport"] == f"lmtp:inet:[{store.lan_address}]:{lmtp.port}"
    assert settings["lmtp_tls_security_level"] == "secure"
    assert settings["lmtp_tls_secure_cert_match"] == f"{store_name}.{topology.domain}"
    assert f"{store_name}.{topology.domain}" in pki.certificate_names(topology, store)
    assert settings["lmtp_tls_CAfile"] == pki.CA_CERT_PATH


@pytest.mark.parametrize(("topology", "host_name"), [(PRODUCTION, "nj-mx"), (LAB, "nj-mail")])
def test_postfix_speaks_lmtp_in_tls_from_the_first_byte_and_presents_its_certificate(
    topology, host_name
):
    settings = main_cf(mail_files(topology, host_name)[mx.MAIN_CF].content)
    assert catalogue.service("lmtp").tls is catalogue.Tls.IMPLICIT
    assert settings["lmtp_tls_wrappermode"] == "yes"
    assert settings["lmtp_tls_security_level"] == "secure"
    assert settings["lmtp_tls_chain_files"] == f"{pki.HOST_KEY_PATH}, {pki.HOST_CERT_PATH}"


def _block(config: str, opening: str) -> str:
    """The body of the first `opening {` block of a Dovecot configuration (nested blocks kept)."""
    body = config.split(opening + " {\n", 1)[1]
    depth, lines = 1, []
    for line in body.splitlines():
        depth += line.count("{") - line.count("}")
        if depth == 0:
            return "\n".join(lines)
        lines.append(line.strip())
    raise AssertionError(f"unterminated block {opening}")


@pytest.mark.parametrize(("topology", "host_name"), [(PRODUCTION, "nj-store"), (LAB, "sea-mail")])
def test_dovecot_lmtp_listens_only_in_tls_and_checks_client_certificates(topology, host_name):
    config = mail_files(topology, host_name)[mail.DOVECOT_CONFIG].content
    service = _block(config, "service lmtp")
    assert _block(service, "inet_listener lmtp").splitlines() == [
        f"address = {topology.host(host_name).lan_address}",
        f"port = {catalogue.service('lmtp').port}",
        "ssl = yes",
    ]
    # The packaged local socket (0666) would let any local process deliver.
    assert _block(service, "unix_listener lmtp").splitlines() == ["mode = 0600"]
    assert _block(config, "protocol lmtp").splitlines() == [
        f"ssl_ca = <{pki.CA_CERT_PATH}",
        "ssl_verify_client_cert = yes",
        "ssl_require_crl = no",
    ]


def test_postfix_tls_is_mozilla_intermediate_and_forward_secret():
    settings = main_cf(mail_files(PRODUCTION, "nj-mx")[mx.MAIN_CF].content)
    assert settings["tls_high_cipherlist"] == ":".join(tls.TLS12_CIPHERS)
    assert settings["smtpd_tls_mandatory_ciphers"] == "high"
    assert (
        settings["smtpd_tls_protocols"]
        == settings["smtpd_tls_mandatory_protocols"]
        == (f">={tls.MIN_PROTOCOL}")
    )
    assert settings["tls_eecdh_auto_curves"] == " ".join(tls.GROUPS)
    assert settings["smtpd_tls_exclude_ciphers"] == "aNULL, kRSA"
    assert settings["smtp_tls_security_level"] == "may"
    assert "tls_ffdhe_auto_groups" not in settings  # Postfix 3.8+
    assert "tls_medium_cipherlist" not in settings  # would narrow opportunistic TLS


# --- Dovecot: listeners, TLS, replication -------------------------------------------------------


def _dovecot(topology, host_name: str) -> str:
    return mail_files(topology, host_name)[mail.DOVECOT_CONFIG].content


def test_dovecot_listens_on_tls_ports_only_and_lan_services_on_the_lan():
    config = _dovecot(PRODUCTION, "nj-store")
    lan = PRODUCTION.host("nj-store").lan_address
    ports = {name: catalogue.service(name).port for name in mailstore.SERVICES}
    assert re.findall(r"inet_listener (imap|pop3) \{\n    port = (\d+)", config) == [
        ("imap", "0"),
        ("pop3", "0"),
    ]
    assert f"inet_listener imaps {{\n    port = {ports['imaps']}\n    ssl = yes" in config
    assert f"inet_listener pop3s {{\n    port = {ports['pop3s']}\n    ssl = yes" in config
    assert f"address = {lan}\n    port = {ports['lmtp']}\n" in config
    assert f"address = {lan}\n    port = {ports['mail-replication']}\n    ssl = yes" in config
    for port in catalogue.FORBIDDEN_PORTS:
        assert f"port = {port}\n" not in config


def test_dovecot_requires_mozilla_intermediate_tls():
    config = _dovecot(PRODUCTION, "nj-store")
    assert "\nssl = required\n" in config
    assert "\nlogin_trusted_networks =\n" in config
    assert f"\nssl_min_protocol = {tls.MIN_PROTOCOL}\n" in config
    assert f"\nssl_cipher_list = {':'.join(tls.TLS12_CIPHERS)}\n" in config
    assert f"\nssl_cipher_suites = {':'.join(tls.TLS13_SUITES)}\n" in config
    assert f"\nssl_curve_list = {':'.join(tls.GROUPS)}\n" in config
    assert f"\nssl_client_ca_file = {pki.CA_CERT_PATH}\n" in config


@pytest.mark.parametrize(
    ("topology", "host_name", "peer_name"),
    [
        (PRODUCTION, "nj-store", "sea-store"),
        (PRODUCTION, "sea-store", "nj-store"),
        (LAB, "nj-mail", "sea-mail"),
    ],
)
def test_each_store_replicates_with_the_other_sites_store(topology, host_name, peer_name):
    config = _dovecot(topology, host_name)
    port = catalogue.service("mail-replication").port
    peer = f"{peer_name}.{topology.domain}"
    assert f"mail_replica = tcps:{peer}:{port}\n" in config
    assert f"doveadm_port = {port}\n" in config
    assert mailstore.replica(topology, topology.host(host_name)).name == peer_name
    assert peer in pki.certificate_names(topology, topology.host(peer_name))


def test_only_mx_hosts_get_the_postfix_auth_socket():
    socket = f"unix_listener {mail.POSTFIX_QUEUE}/{mail.SASL_SOCKET} {{"
    assert socket in _dovecot(PRODUCTION, "nj-mx")
    assert socket in _dovecot(LAB, "nj-mail")
    assert socket not in _dovecot(PRODUCTION, "nj-store")
    assert "\nprotocols =\n" in _dovecot(PRODUCTION, "nj-mx")


def test_a_new_certificate_changes_both_daemons_configs(lab_credentials):
    vault, _ = lab_credentials
    before = mail_files(LAB, "nj-mail", vault)
    chain = pki.host_certificate_chain(vault, "nj-mail")
    assert f"sha256 {hashlib.sha256(chain.encode()).hexdigest()}" in before[mx.MAIN_CF].content
    original = vault.get("pki/nj-mail/cert").reveal()
    vault.set("pki/nj-mail/cert", vault.get("pki/sea-mail/cert").reveal())
    try:
        after = mail_files(LAB, "nj-mail", vault)
    finally:
        vault.set("pki/nj-mail/cert", original)
    for path in (mx.MAIN_CF, mail.DOVECOT_CONFIG):
        assert before[path].content != after[path].content, path


# --- secrets ------------------------------------------------------------------------------------


def test_audits_hold_no_secret_and_hosts_never_get_the_main_password(lab_credentials):
    vault, _ = lab_credentials
    app_hashes = [
        vault.get(f"account/{account.user}/app/{label}").reveal()
        for account in LAB.accounts
        for label in account.app_passwords
    ]
    main_hashes = [vault.get(f"account/{account.user}/main").reveal() for account in LAB.accounts]
    doveadm = vault.get(mailstore.DOVEADM_PASSWORD).reveal()
    for host in LAB.hosts_with_role("mx"):
        sealed = mail_files(LAB, host.name, vault, reveal=False)
        revealed = mail_files(LAB, host.name, vault, reveal=True)
        for item in sealed.values():
            for value in (*app_hashes, *main_hashes, doveadm):
                assert value not in item.content, item.path
        lua = revealed[mail.AUTH_SCRIPT]
        assert lua.holds_secrets and revealed[mail.DOVECOT_CONFIG].holds_secrets
        assert all(f'"{{ARGON2ID}}{value}"' in lua.content for value in app_hashes)
        assert f"doveadm_password = {doveadm}\n" in revealed[mail.DOVECOT_CONFIG].content
        for item in revealed.values():
            assert not any(value in item.content for value in main_hashes), item.path


# --- the Lua passdb, run by a scratch Dovecot ----------------------------------------------------


class ScratchDovecot:
    """Dovecot's auth service with the rendered passdb/userdb, in a private directory."""

    def __init__(self, directory: Path, config: Path):
        self.directory = directory
        self.config = config

    def login(
        self, user: str, password: str, service: str = "imap", rip: str = "198.51.100.200"
    ) -> dict[str, str] | None:
        """passdb then userdb (`doveadm auth login`) from the client address `rip`: the userdb's
        fields (those it returns, not Dovecot's own auth_*), or None if refused. No penalty:
        Dovecot's growing delay after failed logins would slow the refusals down, not change
        them."""
        options = ["-x", f"service={service}", "-x", "no-penalty", "-x", f"rip={rip}"]
        result = subprocess.run(
            ["doveadm", "-c", str(self.config), "auth", "login", *options, user, password],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            return None
        fields = {}
        for line in result.stdout.split("userdb extra fields:", 1)[1].splitlines():
            key, separator, value = line.strip().partition("=")
            if separator and not key.startswith("auth_"):
                fields[key] = value
        return fields

    def users(self) -> list[str]:
        result = subprocess.run(
            ["doveadm", "-c", str(self.config), "user", "*"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return sorted(result.stdout.split())


@pytest.fixture(scope="module")
def dovecot(lab_credentials) -> Iterator[ScratchDovecot]:
    """Runs as root (Dovecot drops to its own users); the directory is world-traversable so the
    auth process, running as `dovecot`, can load the script, as on a host."""
    if shutil.which("dovecot") is None or shutil.which("doveadm") is None:
        pytest.skip("dovecot-core not installed (make checkers)")
    if os.geteuid() != 0:
        pytest.skip("a scratch Dovecot needs root")
    vault, _ = lab_credentials
    directory = Path(tempfile.mkdtemp(prefix="bulwark-dovecot-"))
    directory.chmod(0o755)
    host = LAB.host("nj-mail")
    script = directory / "auth.lua"
    context = {
        "managed_notice": "scratch copy for tests",
        **mx.template_context(LAB, host, vault),
        "auth_script": str(script),
        "sasl_listener": None,
    }
    context["banwatch"] = {**context["banwatch"], "ban_file": str(directory / "banned")}
    script.write_text(render_template("mx", "auth.lua.j2", context, reveal=True))
    config = directory / "dovecot.conf"
    config.write_text(
        f"base_dir = {directory}/run\nstate_dir = {directory}/state\n"
        f"log_path = {directory}/dovecot.log\nauth_failure_delay = 0\n"
        + render_template("mx", "dovecot.conf.j2", context, reveal=True)
    )
    subprocess.run(["dovecot", "-c", str(config)], check=True, timeout=30)
    try:
        yield ScratchDovecot(directory, config)
    finally:
        subprocess.run(["doveadm", "-c", str(config), "stop"], check=False, timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def test_every_app_password_logs_in_as_the_account(dovecot, lab_credentials):
    _, credentials = lab_credentials
    for account in LAB.accounts:
        address = account.address(LAB.domain)
        for password in credentials[account.user]["app"].values():
            fields = dovecot.login(address, password)
            assert fields is not None and "mail" not in fields, address


def test_main_and_wrong_passwords_and_strangers_are_refused(dovecot, lab_credentials):
    _, credentials = lab_credentials
    alice = credentials["alice"]
    assert dovecot.login(f"alice@{LAB.domain}", alice["main"]) is None
    assert dovecot.login(f"alice@{LAB.domain}", alice["app"]["laptop"] + "x") is None
    assert dovecot.login(f"alice@{LAB.domain}", credentials["bob"]["app"]["desktop"]) is None
    assert dovecot.login(f"mallory@{LAB.domain}", alice["app"]["laptop"]) is None
    assert dovecot.login("alice@example.org", alice["app"]["laptop"]) is None


def test_a_banned_address_is_refused_whatever_the_password(dovecot, lab_credentials):
    """What a client through a proxy meets once the watcher has banned it (the firewall's ban
    cannot drop it: its packets come from the proxy); a ban that has ended, or another
    address, logs in."""
    _, credentials = lab_credentials
    password = credentials["alice"]["app"]["laptop"]
    now = int(time.time())
    (dovecot.directory / "banned").write_text(
        f"198.51.100.200 {now + 600}\n203.0.113.9 {now - 1}\n"
    )
    try:
        assert dovecot.login(f"alice@{LAB.domain}", password, rip="198.51.100.200") is None
        assert dovecot.login(f"alice@{LAB.domain}", password, rip="203.0.113.9") == {}
        assert dovecot.login(f"alice@{LAB.domain}", password, rip="198.51.100.201") == {}
    finally:
        (dovecot.directory / "banned").unlink()
    assert dovecot.login(f"alice@{LAB.domain}", password, rip="198.51.100.200") == {}


@pytest.mark.parametrize("login", ["alice#{d}", "alice/{d}", "alice={d}", "ALICE@{d}"])
def test_alternative_separators_log_in(dovecot, lab_credentials, login):
    _, credentials = lab_credentials
    assert dovecot.login(login.format(d=LAB.domain), credentials["alice"]["app"]["phone"]) == {}


def test_pop3_login_with_a_folder_reads_that_folder(dovecot, lab_credentials):
    _, credentials = lab_credentials
    password = credentials["alice"]["app"]["phone"]
    for login in (f"alice+Archive@{LAB.domain}", f"alice+Archive#{LAB.domain}"):
        fields = dovecot.login(login, password, service="pop3")
        assert fields == {"mail": "maildir:~/Maildir:INBOX=~/Maildir/.Archive:INDEX=MEMORY"}
    assert dovecot.login(f"alice+Archive@{LAB.domain}", password, service="imap") == {}
    assert dovecot.login(f"alice+..@{LAB.domain}", password, service="pop3") is None


def test_mailboxes_are_precreated_where_dovecot_puts_them():
    """The primary's mailstore checks these paths to create each mailbox once (see
    roles/mailstore.py): they must match the layout dovecot.conf gives Dovecot."""
    config = _dovecot(LAB, "nj-mail")
    assert f"mail_home = {mail.VMAIL_HOME}/%d/%n\n" in config
    assert f"mail_location = maildir:~/{mail.MAILDIR}\n" in config
    alice = LAB.accounts[0]
    paths = mailstore.mailbox_paths(LAB, alice)
    maildir = f"{mail.VMAIL_HOME}/{LAB.domain}/{alice.user}/{mail.MAILDIR}"
    assert paths == {
        "INBOX": f"{maildir}/dovecot-uidlist",
        **{name: f"{maildir}/.{name}" for name in mailstore.MAILBOXES},
    }
    for name in mailstore.MAILBOXES:
        assert f"  mailbox {name} {{\n    auto = subscribe\n" in config


def test_the_userdb_lists_every_account(dovecot):
    assert dovecot.users() == sorted(account.address(LAB.domain) for account in LAB.accounts)


# --- bounded replication and delivery: nothing waits minutes on a peer that went away -----------


def test_replication_sessions_time_out_instead_of_hanging_ten_minutes():
    config = _dovecot(LAB, "nj-mail")
    (parameters,) = re.findall(r"\nreplication_dsync_parameters = (.*)\n", config)
    assert parameters.split() == ["-d", "-N", "-l", "30", "-U", "-T", "30"]
    assert mailstore.REPLICATION_IO_TIMEOUT == 30


def test_failed_replication_is_retried_by_a_timer_every_few_seconds():
    files = mail_files(LAB, "sea-mail")
    timer = files[mailstore.RETRY_TIMER_FILE].content
    service = files[mailstore.RETRY_SERVICE_FILE].content
    script = files[mailstore.RETRY_SCRIPT]
    interval = mailstore.REPLICATION_RETRY_INTERVAL
    assert interval <= 15
    assert f"\nOnUnitActiveSec={interval}\n" in timer
    assert f"\nExecStart={mailstore.RETRY_SCRIPT}\n" in service
    # Ordered after Dovecot, never holding a job on it (which would cancel a stop of Dovecot).
    assert "\nAfter=dovecot.service\n" in service
    assert not re.search(r"^(Requisite|Requires|Wants|BindsTo)=", service, re.MULTILINE)
    assert "\nsystemctl is-active --quiet dovecot.service || exit 0\n" in script.content
    assert script.mode == "0755"
    # Only the users whose last sync failed ("y" in doveadm's last column) are queued again.
    assert '$6 == "y"' in script.content
    assert 'doveadm replicator replicate -p low "$user"' in script.content
    subprocess.run(["sh", "-n"], input=script.content, text=True, check=True)


def test_a_connection_to_a_peer_behind_a_cut_tunnel_fails_in_seconds():
    sysctl = mail_files(LAB, "nj-mail")[mailstore.SYSCTL_FILE].content
    assert f"\nnet.ipv4.tcp_syn_retries = {mailstore.TCP_SYN_RETRIES}\n" in sysctl
    # SYNs at 0, 1, 3, 7 s (and a last wait of 8 s): under the retry timer's 10 s interval
    # plus its period, where Linux's default of 6 retries waits 127 s.
    assert sum(2**attempt for attempt in range(mailstore.TCP_SYN_RETRIES + 1)) <= 15


def test_dovecot_stops_within_a_bounded_time():
    dropin = mail_files(LAB, "nj-mail")[mailstore.DOVECOT_DROPIN].content
    assert f"\nTimeoutStopSec={mailstore.DOVECOT_STOP_TIMEOUT}\n" in dropin
    assert mailstore.DOVECOT_STOP_TIMEOUT < 90  # systemd's default, which a hung child reached


@pytest.mark.parametrize("host_name", ["nj-mx", "sea-mx"])
def test_deferred_mail_is_retried_after_seconds_not_minutes(host_name):
    settings = main_cf(mail_files(PRODUCTION, host_name)[mx.MAIN_CF].content)
    assert settings["queue_run_delay"] == settings["minimal_backoff_time"] == mx.DEFERRED_RETRY
    assert "maximal_backoff_time" not in settings  # later retries back off as Postfix's default
