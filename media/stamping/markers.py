"""Delivery markers: the short code that a delivered file carries and the ledger is keyed on.

A marker is 16 random Crockford base-32 characters (80 bits: unguessable, so nobody can
forge a copy that points at another buyer) and 2 check characters, so a scan of a leaked
file tells a real marker from look-alike text. In files it is written as `LSM-<marker>`,
a tag that survives text extraction (pdftotext, copy and paste) as one word.
"""

import hashlib
import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BODY_LENGTH = 16
TAG = "LSM-"
MARKER_LENGTH = BODY_LENGTH + 2

_TAGGED = re.compile(rb"LSM-([0-9A-HJKMNP-TV-Z]{%d})" % MARKER_LENGTH)


def _check(body: str) -> str:
    digest = hashlib.sha256(body.encode("ascii")).digest()
    return ALPHABET[digest[0] % 32] + ALPHABET[digest[1] % 32]


def marker_new() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return body + _check(body)


def marker_is_valid(marker: str) -> bool:
    if len(marker) != MARKER_LENGTH or any(c not in ALPHABET for c in marker):
        return False
    return _check(marker[:BODY_LENGTH]) == marker[BODY_LENGTH:]


def tagged(marker: str) -> str:
    return TAG + marker


def markers_in(data: bytes) -> list[str]:
    """Valid markers found in some bytes or text, each once, in order of appearance."""
    found: dict[str, None] = {}
    for match in _TAGGED.finditer(data):
        marker = match.group(1).decode("ascii")
        if marker_is_valid(marker):
            found.setdefault(marker)
    return list(found)
