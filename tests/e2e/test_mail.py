"""Mail as its users and other mail servers see it: real IMAP, POP3 and SMTP clients from outside.

Clients connect by the seed's host names (`imap.DOMAIN` is the primary site, `imap.SITE.DOMAIN`
a given site) and verify every certificate against the lab's internal CA. Passwords come from
the lab's credentials file, where `bulwark secrets generate` left them.

Dovecot slows down an address after failed logins (up to 15 s per attempt), so the tests of
refused passwords run last.
"""

from __future__ import annotations

import base64
import email.message
import email.parser
import imaplib
import poplib
import smtplib
import socket
import ssl

import pytest
from endpoints import assert_modern_tls, name, port
from mailclient import TIMEOUT, imap, message, wait_for
from sslyze import ProtocolWithOpportunisticTlsEnum

from bulwark import catalogue
from bulwark.lab.dns import OUTSIDE_DOMAIN, OUTSIDE_MX
from bulwark.topology import Topology

# The outside world's domain, served by the lab's DNS: its MX (whose name the clients greet
# with on 25) and SPF are the e2e clients' address.
FOREIGN_DOMAIN = OUTSIDE_DOMAIN


# --- fixtures -----------------------------------------------------------------------------------


def pop3(topology: Topology, context: ssl.SSLContext) -> poplib.POP3_SSL:
    return poplib.POP3_SSL(name(topology, "pop3s"), port("pop3s"), context=context, timeout=TIMEOUT)


# --- IMAP and POP3: implicit TLS, app passwords, every separator ------------------------------


@pytest.mark.parametrize("site", [None, "nj", "sea"], ids=["generic", "nj", "sea"])
def test_imap_logs_in_with_each_app_password(topology, tls_context, alice, site):
    for password in alice.app_passwords:
        with imap(topology, tls_context, site) as mailbox:
            status, _ = mailbox.login(alice.address, password.reveal())
            assert status == "OK"
            assert mailbox.select("INBOX")[0] == "OK"


@pytest.mark.parametrize("separator", ["@", "#", "/", "="])
def test_pop3_logs_in_with_each_separator(topology, tls_context, alice, separator):
    client = pop3(topology, tls_context)
    try:
        client.user(f"{alice.user}{separator}{topology.domain}")
        assert client.pass_(alice.password.reveal()).startswith(b"+OK")
        client.stat()
    finally:
        client.quit()


@pytest.mark.parametrize(("service", "plaintext"), [("imaps", 143), ("pop3s", 110)])
def test_plaintext_imap_and_pop3_refuse_connections(topology, service, plaintext):
    assert plaintext in catalogue.FORBIDDEN_PORTS
    with pytest.raises(OSError):
        socket.create_connection((name(topology, service), plaintext), timeout=5).close()


def test_pop3_from_a_folder_lists_that_folder_not_the_inbox(topology, tls_context, alice, cleanup):
    archived = message(alice.address, alice.address)
    inboxed = message(alice.address, alice.address)
    with imap(topology, tls_context) as mailbox:
        mailbox.login(alice.address, alice.password.reveal())
        for folder, mail in (("Archive", archived), ("INBOX", inboxed)):
            cleanup.append((alice, folder, mail["Subject"]))
            assert mailbox.append(folder, None, None, mail.as_bytes())[0] == "OK"
    client = pop3(topology, tls_context)
    try:
        client.user(f"{alice.user}+Archive@{topology.domain}")
        client.pass_(alice.password.reveal())
        subjects = set()
        for entry in client.list()[1]:
            number = int(entry.split()[0])
            headers = email.parser.BytesHeaderParser().parsebytes(
                b"\r\n".join(client.top(number, 0)[1])
            )
            subjects.add(headers["Subject"])
    finally:
        client.quit()
    assert archived["Subject"] in subjects
    assert inboxed["Subject"] not in subjects


# --- SMTP: submission on 465 and 587, the MX on 25 ---------------------------------------------


def test_submission_465_authenticates_and_delivers(topology, tls_context, alice, bob, cleanup):
    mail = message(alice.address, bob.address)
    cleanup.append((bob, "INBOX", mail["Subject"]))
    with smtplib.SMTP_SSL(
        name(topology, "submissions"), port("submissions"), context=tls_context, timeout=TIMEOUT
    ) as smtp:
        smtp.login(alice.address, alice.password.reveal())
        assert smtp.send_message(mail) == {}
    assert wait_for(topology, tls_context, bob, mail["Subject"])


def test_submission_587_offers_auth_only_after_starttls(topology, tls_context, alice, bob, cleanup):
    mail = message(alice.address, bob.address)
    cleanup.append((bob, "INBOX", mail["Subject"]))
    with smtplib.SMTP(name(topology, "submission"), port("submission"), timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        plain = base64.b64encode(f"\0{alice.address}\0{alice.password.reveal()}".encode()).decode()
        code, _ = smtp.docmd("AUTH", f"PLAIN {plain}")
        assert code == 530  # must issue STARTTLS first
        smtp.starttls(context=tls_context)
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login(alice.address, alice.password.reveal())
        assert smtp.send_message(mail) == {}
    assert wait_for(topology, tls_context, bob, mail["Subject"])


def test_submission_refuses_mail_without_auth(topology, tls_context, bob):
    with smtplib.SMTP(name(topology, "submission"), port("submission"), timeout=TIMEOUT) as smtp:
        smtp.starttls(context=tls_context)
        smtp.ehlo()
        smtp.mail(f"someone@{FOREIGN_DOMAIN}")
        code, _ = smtp.rcpt(bob.address)
        assert code >= 500


@pytest.mark.parametrize("starttls", [False, True], ids=["plaintext", "starttls"])
def test_mx_accepts_mail_for_an_account_from_anyone(
    topology, tls_context, alice, cleanup, starttls
):
    """Port 25 never insists on TLS (other servers may lack it) but always offers it."""
    mail = message(f"someone@{FOREIGN_DOMAIN}", alice.address)
    cleanup.append((alice, "INBOX", mail["Subject"]))
    with smtplib.SMTP(
        name(topology, "smtp"), port("smtp"), local_hostname=OUTSIDE_MX, timeout=TIMEOUT
    ) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        if starttls:
            smtp.starttls(context=tls_context)
            smtp.ehlo()
            assert not smtp.has_extn("auth")
        assert smtp.send_message(mail) == {}
    assert wait_for(topology, tls_context, alice, mail["Subject"])


@pytest.mark.parametrize("starttls", [False, True], ids=["plaintext", "starttls"])
def test_mx_refuses_to_relay_to_other_domains(topology, tls_context, starttls):
    with smtplib.SMTP(
        name(topology, "smtp"), port("smtp"), local_hostname=OUTSIDE_MX, timeout=TIMEOUT
    ) as smtp:
        if starttls:
            smtp.starttls(context=tls_context)
        smtp.ehlo()
        smtp.mail(f"someone@{FOREIGN_DOMAIN}")
        code, reply = smtp.rcpt(f"victim@{FOREIGN_DOMAIN}")
        assert code == 554, reply
        assert b"Relay access denied" in reply


def test_mail_submitted_in_nj_is_readable_in_sea(topology, tls_context, alice, bob, cleanup):
    primary = topology.primary_site.name
    (other,) = (site.name for site in topology.peer_sites(primary))
    mail = message(alice.address, bob.address)
    cleanup.append((bob, "INBOX", mail["Subject"]))
    with smtplib.SMTP(
        name(topology, "submission", primary), port("submission"), timeout=TIMEOUT
    ) as smtp:
        smtp.starttls(context=tls_context)
        smtp.login(alice.address, alice.password.reveal())
        smtp.send_message(mail)
    assert wait_for(topology, tls_context, bob, mail["Subject"], site=other)


# --- TLS as a scanner sees it: nothing below 1.2, forward secrecy only --------------------------

_SMTP = ProtocolWithOpportunisticTlsEnum.SMTP
# service -> (STARTTLS protocol or None, Mozilla Intermediate exactly; port 25 is opportunistic)
_SCANS = {
    "imaps": (None, True),
    "pop3s": (None, True),
    "submissions": (None, True),
    "submission": (_SMTP, True),
    "smtp": (_SMTP, False),
}


@pytest.mark.parametrize("service", list(_SCANS))
def test_tls_is_1_2_or_later_and_forward_secret(topology, service):
    starttls, intermediate = _SCANS[service]
    assert_modern_tls(name(topology, service), port(service), starttls, intermediate)


# --- refused passwords (last: each failure makes Dovecot slow this address down) ----------------


def test_the_main_password_is_refused_everywhere(topology, tls_context, alice):
    with imap(topology, tls_context) as mailbox, pytest.raises(imaplib.IMAP4.error):
        mailbox.login(alice.address, alice.main_password.reveal())
    client = pop3(topology, tls_context)
    try:
        client.user(alice.address)
        with pytest.raises(poplib.error_proto):
            client.pass_(alice.main_password.reveal())
    finally:
        client.close()
    with (
        smtplib.SMTP_SSL(
            name(topology, "submissions"),
            port("submissions"),
            context=tls_context,
            timeout=TIMEOUT,
        ) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        smtp.login(alice.address, alice.main_password.reveal())


def test_a_wrong_password_is_refused(topology, tls_context, alice):
    with imap(topology, tls_context) as mailbox, pytest.raises(imaplib.IMAP4.error):
        mailbox.login(alice.address, alice.password.reveal() + "x")
