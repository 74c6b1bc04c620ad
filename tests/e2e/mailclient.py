"""The mail clients' shared steps for the e2e tests (test_mail, test_proxy): a message with a
fresh subject, an IMAP session, finding and waiting for a message."""

from __future__ import annotations

import email.message
import email.utils
import imaplib
import ssl
import time
import uuid

from endpoints import name, port

from bulwark.lab.accounts import LabAccount
from bulwark.topology import Topology

TIMEOUT = 30  # seconds per client operation; a refused login may wait out Dovecot's penalty
DELIVERY_DEADLINE = 60  # seconds a message may take to show up before the test gives up


def message(sender: str, recipient: str) -> email.message.EmailMessage:
    """A message whose subject is a fresh token, to find it again; dated and identified as
    every mail client's is (the spam filter counts what is missing)."""
    mail = email.message.EmailMessage()
    mail["From"], mail["To"] = sender, recipient
    mail["Subject"] = f"bulwark-e2e-{uuid.uuid4().hex}"
    mail["Date"] = email.utils.formatdate(localtime=True)
    mail["Message-ID"] = email.utils.make_msgid(domain=sender.rsplit("@", 1)[1])
    mail.set_content("end-to-end test message\n")
    return mail


def imap(topology: Topology, context: ssl.SSLContext, site: str | None = None):
    return imaplib.IMAP4_SSL(
        name(topology, "imaps", site), port("imaps"), ssl_context=context, timeout=TIMEOUT
    )


def find(mailbox, folder: str, subject: str) -> list[bytes]:
    """Message numbers in `folder` with this subject."""
    mailbox.select(folder)
    status, data = mailbox.search(None, "HEADER", "Subject", subject)
    assert status == "OK"
    return data[0].split()


def wait_for(topology, context, account: LabAccount, subject: str, site: str | None = None) -> bool:
    """Whether the message shows up in the account's INBOX at `site` before the deadline."""
    deadline = time.monotonic() + DELIVERY_DEADLINE
    with imap(topology, context, site) as mailbox:
        mailbox.login(account.address, account.password.reveal())
        while not find(mailbox, "INBOX", subject):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True
