"""The bytes of a two-part (text + HTML) email, written directly.

Python's email package spends most of a send's CPU folding and encoding headers through
its policy machinery (about 5 ms an email on this project's machines). Sequence emails
always have the same shape — a few ASCII headers, a subject, a text part and an HTML part
in UTF-8 — so the sender writes them here with the C-implemented quoted-printable codec.
Used on the SMTP path only; every other email backend gets Django's EmailMessage.
"""

import binascii
import re
import secrets
from email.header import Header
from email.utils import formatdate
from functools import lru_cache

from django.core.mail.message import sanitize_address

# A plain ASCII address, which sanitize_address returns unchanged: skipping its parser
# saves a fifth of an email's CPU. Anything else (a display name, non-ASCII) goes through it.
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")


@lru_cache(maxsize=32)
def _sender(address: str) -> str:
    return sanitize_address(address, "utf-8")


def _recipient(address: str) -> str:
    return address if PLAIN_ADDRESS.match(address) else sanitize_address(address, "utf-8")


def _header_value(value: str) -> str:
    if value.isascii() and len(value) <= 900:
        return value
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def _qp(text: str) -> bytes:
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    return encoded.replace(b"\n", b"\r\n")


def _fold_list(value: str) -> str:
    # List-Unsubscribe holds two long URLs: one per line, as RFC 5322 folding allows.
    return ",\r\n ".join(part.strip() for part in value.split(","))


def wire(mail) -> tuple[str, list[str], bytes]:
    """(envelope sender, envelope recipients, message bytes) of an EmailMultiAlternatives
    with one text body and one HTML alternative."""
    sender = _sender(mail.from_email)
    recipients = [_recipient(address) for address in mail.to]
    html = next(content for content, mimetype in mail.alternatives if mimetype == "text/html")
    boundary = f"=_lodestone_{secrets.token_hex(12)}"
    headers = {
        "From": sender,
        "To": ", ".join(recipients),
        "Subject": _header_value(mail.subject),
        "Date": formatdate(usegmt=True),
        "MIME-Version": "1.0",
        "Content-Type": f'multipart/alternative; boundary="{boundary}"',
    }
    for name, value in mail.extra_headers.items():
        headers[name] = _fold_list(value) if name == "List-Unsubscribe" else _header_value(value)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    data = b"".join(
        [
            head.encode("ascii"),
            b"\r\n",
            f"--{boundary}\r\n{part.format('plain')}".encode(),
            _qp(mail.body),
            f"\r\n--{boundary}\r\n{part.format('html')}".encode(),
            _qp(html),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    # The envelope sender is the bare address of the From header.
    envelope_from = sender.rsplit("<", 1)[-1].rstrip(">") if "<" in sender else sender
    return envelope_from, recipients, data
