"""Signed click and open links. A click link carries its destination inside a signature
made with the site's secret: only addresses we put in an email ever redirect, so the
endpoint cannot be used as an open redirect."""

from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.urls import reverse

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


def link(view_name: str, token: str) -> str:
    before, after = _path(view_name)
    return f"{settings.SITE_URL}{before}{token}{after}"


def click_url(delivery_id: int, target: str) -> str:
    token = signing.dumps({"d": delivery_id, "u": target}, salt=CLICK_SALT, compress=True)
    return link("funnels:sequence_click", token)


def open_url(delivery_id: int) -> str:
    return link("funnels:sequence_open", signing.dumps({"d": delivery_id}, salt=OPEN_SALT))


def subscriber_link(view_name: str, payload: dict) -> str:
    """funnels.services.signed_link with the path reversed once: the unsubscribe and
    my-data links of every email (the tests compare both forms)."""
    from funnels.services import LINK_SALT

    token = signing.dumps(payload, salt=f"{LINK_SALT}:{view_name}", compress=True)
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
