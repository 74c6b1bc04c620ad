"""What other mail servers see of our mail, and what we do with theirs, from the internet
namespace, resolving through the lab's DNS as a remote server does: submitted mail carries a
DKIM signature per key that verifies against the published records (dkimpy, a receiving
server's library); mail from outside gets the checks' results; a forgery of our domain and
GTUBE are refused during the SMTP session; spam is filed into Junk; postmaster@ and abuse@
reach the postmaster account."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import ssl
import time

import dkim
import pytest
from endpoints import name, port
from mailclient import DELIVERY_DEADLINE, TIMEOUT, find, imap, message

from bulwark.lab.accounts import LabAccount
from bulwark.lab.dns import OUTSIDE_DOMAIN, OUTSIDE_MX
from bulwark.topology import Topology

# rspamd's test strings (rspamd.com/doc/gtube_patterns.html): the first is refused; the
# second, enabled in the lab only (`spam_test_patterns`), only marks the message as spam.
GTUBE_REJECT = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_ADD_HEADER = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def fetched(
    topology: Topology, context: ssl.SSLContext, account: LabAccount, folder: str, subject: str
) -> bytes | None:
    """The raw message with `subject` in `folder`, once it arrived (None if it never did);
    deleted afterwards."""
    deadline = time.monotonic() + DELIVERY_DEADLINE
    with imap(topology, context) as mailbox:
        mailbox.login(account.address, account.password.reveal())
        while not (numbers := find(mailbox, folder, subject)):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        status, data = mailbox.fetch(numbers[0], "(BODY.PEEK[])")
        assert status == "OK"
        for number in numbers:
            mailbox.store(number, "+FLAGS", "\\Deleted")
        mailbox.expunge()
    return data[0][1]


def from_outside(
    topology: Topology, context: ssl.SSLContext, mail: email.message.EmailMessage
) -> dict:
    """Send `mail` to the MX on 25 as the outside world's mail server (the lab's DNS gives it
    a name, an MX, SPF and a PTR): STARTTLS, no login."""
    with smtplib.SMTP(
        name(topology, "smtp"), port("smtp"), local_hostname=OUTSIDE_MX, timeout=TIMEOUT
    ) as smtp:
        smtp.starttls(context=context)
        return smtp.send_message(mail)


def assert_refused_in_session(
    topology: Topology, context: ssl.SSLContext, mail: email.message.EmailMessage
) -> None:
    """The MX refuses `mail` at the end of DATA, permanently (5xx): nothing is queued."""
    with pytest.raises(smtplib.SMTPDataError) as refused:
        from_outside(topology, context, mail)
    assert 500 <= refused.value.smtp_code < 600, refused.value


def test_submitted_mail_carries_a_signature_per_key_that_verifies(
    topology: Topology, tls_context, alice, bob
):
    mail = message(alice.address, bob.address)
    with smtplib.SMTP_SSL(
        name(topology, "submissions"), port("submissions"), context=tls_context, timeout=TIMEOUT
    ) as smtp:
        smtp.login(alice.address, alice.password.reveal())
        assert smtp.send_message(mail) == {}
    raw = fetched(topology, tls_context, bob, "INBOX", mail["Subject"])
    assert raw is not None
    parsed = email.message_from_bytes(raw, policy=email.policy.SMTP)
    signatures = parsed.get_all("DKIM-Signature")
    tags = [dict(part.strip().split("=", 1) for part in str(s).split(";") if "=" in part)
            for s in signatures]  # fmt: skip
    selectors = dict(topology.dkim_selectors)
    assert sorted((t["d"], t["s"], t["a"]) for t in tags) == sorted(
        [
            (topology.domain, selectors["ed25519"], "ed25519-sha256"),
            (topology.domain, selectors["rsa"], "rsa-sha256"),
        ]
    )
    verifier = dkim.DKIM(raw)
    for index in range(len(signatures)):
        assert verifier.verify(idx=index), f"signature {tags[index]['s']} does not verify"


def test_mail_from_outside_gets_the_checks_results(topology: Topology, tls_context, alice):
    mail = message(f"someone@{OUTSIDE_DOMAIN}", alice.address)
    assert from_outside(topology, tls_context, mail) == {}
    raw = fetched(topology, tls_context, alice, "INBOX", mail["Subject"])
    assert raw is not None
    parsed = email.message_from_bytes(raw, policy=email.policy.SMTP)
    results = " ".join(str(value) for value in parsed.get_all("Authentication-Results", []))
    assert re.search(rf"\bspf=pass \(.*\) smtp\.mailfrom=someone@{OUTSIDE_DOMAIN}\b", results)
    assert re.search(r"\bdkim=none\b", results) and re.search(r"\bdmarc=none\b", results)
    assert parsed["X-Spam-Status"].startswith("No,"), parsed["X-Spam-Status"]


def test_a_forgery_of_our_domain_is_refused(topology: Topology, tls_context, alice):
    """SPF fails (the sender's address is not an exchanger) and nothing is signed: DMARC's
    p=reject applies to our own domain too."""
    assert_refused_in_session(topology, tls_context, message(alice.address, alice.address))


def test_gtube_is_refused(topology: Topology, tls_context, alice):
    mail = message(f"someone@{OUTSIDE_DOMAIN}", alice.address)
    mail.set_content(f"Test spam.\n{GTUBE_REJECT}\n")
    assert_refused_in_session(topology, tls_context, mail)


def test_spam_is_filed_into_junk(topology: Topology, tls_context, alice):
    mail = message(f"someone@{OUTSIDE_DOMAIN}", alice.address)
    mail.set_content(f"Test spam.\n{GTUBE_ADD_HEADER}\n")
    assert from_outside(topology, tls_context, mail) == {}
    raw = fetched(topology, tls_context, alice, "Junk", mail["Subject"])
    assert raw is not None, "not delivered into Junk"
    with imap(topology, tls_context) as mailbox:
        mailbox.login(alice.address, alice.password.reveal())
        assert find(mailbox, "INBOX", mail["Subject"]) == []


@pytest.mark.parametrize("local", ["postmaster", "abuse"])
def test_rfc_2142_addresses_reach_the_postmaster_account(
    topology: Topology, tls_context, alice, local
):
    assert topology.postmaster == alice.user
    mail = message(f"someone@{OUTSIDE_DOMAIN}", f"{local}@{topology.domain}")
    assert from_outside(topology, tls_context, mail) == {}
    assert fetched(topology, tls_context, alice, "INBOX", mail["Subject"]) is not None
