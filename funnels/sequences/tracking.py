"""Signed click and open links. A click link carries its destination inside a signature
made with the site's secret: only addresses we put in an email ever redirect, so the
endpoint cannot be used as an open redirect."""

import hashlib
import hmac
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.encoding import force_bytes

CLICK_SALT = "lodestone.funnels.sequences.click"
OPEN_SALT = "lodestone.funnels.sequences.open"


class BadLink(Exception):
    pass


@lru_cache(maxsize=16)
def _path(view_name: str) -> tuple[str, str]:
    # reverse() once per view and process: it costs more than the signature itself.
    marker = "LODESTONETOKEN"
    before, after = reverse(view_name, kwargs={"token": marker}).split(marker)
    return before, after


class _KeyedSigner(signing.TimestampSigner):
    """signing.dumps' signer with its HMAC key derived once per salt rather than once per
    link (an email carries four or more signed links). The tokens are exactly those of
    signing.dumps, so signing.loads verifies them."""

    def __init__(self, salt: str):
        super().__init__(salt=salt)
        # The derivation of django.utils.crypto.salted_hmac, done once.
        key = hashlib.sha256(force_bytes(self.salt + "signer") + force_bytes(self.key)).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def signature(self, value, key=None):
        if key is not None and key != self.key:
            return super().signature(value, key)
        mac = self._mac.copy()
        mac.update(force_bytes(value))
        return signing.b64_encode(mac.digest()).decode()


@lru_cache(maxsize=16)
def _signer(salt: str, secret: str) -> _KeyedSigner:
    # Keyed by the secret too: a changed SECRET_KEY gets a new signer.
    return _KeyedSigner(salt)


def dumps(payload: dict, *, salt: str, compress: bool = False) -> str:
    """signing.dumps(payload, salt=salt, compress=compress), faster."""
    return _signer(salt, settings.SECRET_KEY).sign_object(payload, compress=compress)


def link(view_name: str, token: str) -> str:
    before, after = _path(view_name)
    return f"{settings.SITE_URL}{before}{token}{after}"


def click_url(delivery_id: int, target: str) -> str:
    token = dumps({"d": delivery_id, "u": target}, salt=CLICK_SALT, compress=True)
    return link("funnels:sequence_click", token)


def open_url(delivery_id: int) -> str:
    return link("funnels:sequence_open", dumps({"d": delivery_id}, salt=OPEN_SALT))


def subscriber_link(view_name: str, payload: dict) -> str:
    """funnels.services.signed_link with the path reversed once: the unsubscribe and
    my-data links of every email (the tests compare both forms)."""
    from funnels.services import LINK_SALT

    token = dumps(payload, salt=f"{LINK_SALT}:{view_name}", compress=True)
    return link(view_name, token)


def _load(token: str, salt: str) -> dict:
    try:
        data = signing.loads(token, salt=salt)
    except signing.BadSignature as exc:
        raise BadLink() from exc
    if not isinstance(data, dict) or not isinstance(data.get("d"), int):
        raise BadLink()
    return data


def click_target(token: str) -> tuple[int, str]:
    """(delivery id, destination) of a click link we signed; BadLink otherwise."""
    data = _load(token, CLICK_SALT)
    target = data.get("u")
    if not isinstance(target, str) or urlsplit(target).scheme not in ("http", "https"):
        raise BadLink()
    return data["d"], target


def opened_delivery(token: str) -> int:
    return _load(token, OPEN_SALT)["d"]
