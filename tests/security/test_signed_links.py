"""Signed and expiring links, tampered with or used late: download links, segment and
playlist URLs, subscriber links (confirm, unsubscribe, my data), click tracking and
sign-in links. Each refuses with a clear page, never a 5xx, and hands out nothing."""

import time
from datetime import timedelta

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from funnels.models import SubscriberToken
from media import playlists
from payments.models import LoginToken
from tests.security.conftest import client_for
from tests.security.world import forged


@pytest.fixture
def long_ago(monkeypatch):
    """Sign as if it were `seconds` ago (django.core.signing reads time.time())."""

    def sign_at(seconds: int, make):
        real = time.time
        monkeypatch.setattr(signing.time, "time", lambda: real() - seconds)
        try:
            return make()
        finally:
            monkeypatch.setattr(signing.time, "time", real)

    return sign_at


def _flip(token: str, at: int = 5) -> str:
    """One character of the token changed."""
    char = token[at]
    return token[:at] + ("A" if char != "A" else "B") + token[at + 1 :]


# --- Protected downloads ------------------------------------------------------------------------


def test_a_tampered_download_link_is_refused(world):
    response = client_for(world, "buyer").get(forged(world.links["protected"]))

    assert response.status_code == 403
    assert b"not valid" in response.content


def test_an_expired_download_link_is_refused(world, long_ago, settings):
    from media import delivery

    stale = long_ago(
        settings.PROTECTED_URL_MAX_AGE + 60,
        lambda: delivery.protected_url(name=world.download.file.name, user_id=world.buyer.pk),
    )

    response = client_for(world, "buyer").get(stale)

    assert response.status_code == 403
    assert b"expired" in response.content


def test_a_magnet_link_is_refused_when_tampered_or_older_than_its_lifetime(world, long_ago):
    from funnels import services

    stale = long_ago(
        int(services.DOWNLOAD_LINK_MAX_AGE.total_seconds()) + 60,
        lambda: services.magnet_download_url(world.subscriber, world.magnet, absolute=False),
    )

    tampered = Client().get(forged(world.links["download"]))
    expired = Client().get(stale)

    assert tampered.status_code == 403
    assert expired.status_code == 403
    assert b"expired" in expired.content
    assert tampered["Content-Type"].startswith("text/html")


# --- Video ----------------------------------------------------------------------------------


def test_a_segment_url_with_a_changed_expiry_or_signature_is_refused(world):
    url = world.links["segment"]
    head, name_exp_mac, _ = url.rsplit("/", 2)
    name, exp, mac = name_exp_mac.split(".")
    later = format(int(exp, 16) + 3600, "x")
    client = client_for(world, "buyer")

    assert client.get(url).status_code == 200
    assert client.get(f"{head}/{name}.{later}.{mac}/").status_code == 403
    assert client.get(f"{head}/{name}.{exp}.{_flip(mac, 0)}/").status_code == 403
    assert client.get(f"{head}/garbage/").status_code == 403


def test_segment_and_playlist_urls_refuse_once_expired(world):
    from django.core.files.storage import storages

    from tests.security.world import RENDITION

    past = int(time.time()) - 24 * 3600
    master = playlists.master_for_viewer(video=world.video, user_id=world.buyer.pk, now=past)
    rendition_url = next(x for x in master.splitlines() if x and not x.startswith("#"))
    rendition = playlists.rendition_for_viewer(
        storage=storages["protected"],
        video=world.video,
        rendition=RENDITION,
        user_id=world.buyer.pk,
        now=past,
    )
    segment_url = next(x for x in rendition.splitlines() if x and not x.startswith("#"))
    client = client_for(world, "buyer")

    assert client.get(rendition_url).status_code == 403
    assert client.get(segment_url).status_code == 403


# --- Subscriber links -----------------------------------------------------------------------


@pytest.mark.parametrize("link", ["unsubscribe", "my_data", "confirm"])
def test_a_tampered_subscriber_link_is_refused(world, link):
    response = Client().get(forged(world.links[link]))

    assert response.status_code in (400, 403, 404)
    assert b"Traceback" not in response.content


def test_a_link_signed_for_one_page_does_not_open_another(world):
    token = world.links["unsubscribe"].rstrip("/").rsplit("/", 1)[-1]

    response = Client().get(f"/f/my-data/{token}/")

    assert response.status_code == 400


def test_an_expired_confirm_link_confirms_nobody(world):
    SubscriberToken.objects.update(expires_at=timezone.now() - timedelta(minutes=1))

    shown = Client().get(world.links["confirm"])
    posted = Client().post(world.links["confirm"])

    assert shown.status_code == 400
    assert posted.status_code == 400
    assert b"expired" in posted.content.lower()


# --- Click tracking -------------------------------------------------------------------------


def test_a_tampered_click_link_redirects_nowhere(world):
    response = Client().get(forged(world.links["click"]))

    assert response.status_code == 400
    assert "Location" not in response


# --- Sign-in links --------------------------------------------------------------------------


def test_a_tampered_login_link_signs_nobody_in(world):
    client = Client()

    response = client.post(forged(world.links["login"]))

    assert response.status_code in (400, 403, 404)
    assert "_auth_user_id" not in client.session


def test_an_expired_login_link_signs_nobody_in(world):
    LoginToken.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    client = Client()

    response = client.post(world.links["login"])

    assert response.status_code in (400, 403, 410)
    assert "_auth_user_id" not in client.session


def test_a_login_link_works_once(world):
    first, second = Client(), Client()

    used = first.post(world.links["login"])
    again = second.post(world.links["login"])

    assert used.status_code == 302
    assert first.session["_auth_user_id"] == str(world.buyer.pk)
    assert again.status_code in (400, 403, 410)
    assert "_auth_user_id" not in second.session
