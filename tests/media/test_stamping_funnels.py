"""A lead magnet's download link: the subscriber gets a copy stamped with their email,
recorded in both ledgers; a tampered or expired link, or a spent limit, gets a message."""

import subprocess
import time

import pytest
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.utils import timezone

from funnels import services
from funnels.models import LeadMagnet, MagnetDelivery, Subscriber
from media.models import DownloadDelivery
from media.stamping.prepare import forget_cached
from media.stamping.samples import sample_pdf

pytestmark = pytest.mark.django_db


@pytest.fixture
def protected(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    forget_cached()
    yield storages["protected"]
    forget_cached()


@pytest.fixture
def magnet(protected):
    magnet = LeadMagnet(title="Launch Checklist", download_filename="launch-checklist.pdf")
    magnet.file.save("launch-checklist.pdf", ContentFile(sample_pdf(3)), save=False)
    magnet.save()
    return magnet


@pytest.fixture
def subscriber():
    return Subscriber.objects.create(
        email="leila@lodestone-mail.fi",
        name="Leila",
        time_zone="Europe/Helsinki",
        status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now(),
    )


def _text(data: bytes, tmp_path) -> str:
    (tmp_path / "magnet.pdf").write_bytes(data)
    return subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(tmp_path / "magnet.pdf"), "-"],
        capture_output=True,
        check=True,
    ).stdout.decode()


class _SignerAYearAgo(signing.TimestampSigner):
    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - 365 * 86400)


def test_magnet_download_is_stamped_with_the_subscribers_email(
    client, magnet, subscriber, tmp_path
):
    url = services.magnet_download_url(subscriber, magnet, absolute=False)

    response = client.get(url, REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="Firefox/140")

    assert response.status_code == 200
    assert "filename*=UTF-8''launch-checklist.pdf" in response["Content-Disposition"]
    data = b"".join(response.streaming_content)
    pages = _text(data, tmp_path).split("\f")[:-1]
    assert len(pages) == 3
    assert all("Licensed to Leila <leila@lodestone-mail.fi>" in page for page in pages)


def test_magnet_download_is_recorded_in_both_ledgers(client, magnet, subscriber):
    url = services.magnet_download_url(subscriber, magnet, absolute=False)

    response = client.get(url, REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="Firefox/140")
    b"".join(response.streaming_content)

    delivery = MagnetDelivery.objects.get()
    assert (delivery.subscriber, delivery.magnet) == (subscriber, magnet)
    row = DownloadDelivery.objects.get()
    assert row.subscriber_email == "leila@lodestone-mail.fi"
    assert row.user is None
    assert row.source_name == magnet.file.name == delivery.file_name
    assert (row.ip_address, row.user_agent) == ("203.0.113.9", "Firefox/140")


def test_a_tampered_download_link_is_refused(client, magnet, subscriber):
    url = services.magnet_download_url(subscriber, magnet, absolute=False)
    token = url.rstrip("/").rsplit("/", 1)[1]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")

    response = client.get(url.replace(token, tampered))

    assert response.status_code == 403
    assert "not valid" in response.content.decode()
    assert not DownloadDelivery.objects.exists()


def test_an_expired_download_link_is_refused(client, magnet, subscriber):
    salt = f"{services.LINK_SALT}:funnels:download"
    payload = {"s": subscriber.pk, "m": magnet.pk, "e": services.email_hash(subscriber.email)[:16]}
    old = _SignerAYearAgo(salt=salt).sign_object(payload, compress=True)

    response = client.get(f"/f/download/{old}/")

    assert response.status_code == 403
    assert "expired" in response.content.decode()
    assert not DownloadDelivery.objects.exists()


def test_sixth_magnet_download_shows_the_limit_message(client, magnet, subscriber):
    url = services.magnet_download_url(subscriber, magnet, absolute=False)
    for _ in range(5):
        assert client.get(url).status_code == 200

    response = client.get(url)

    assert response.status_code == 429
    assert "5 times in the last 30 days" in response.content.decode()
    assert MagnetDelivery.objects.count() == 5


def test_magnet_in_a_store_that_does_not_answer_gets_a_503_asking_to_retry(
    client, magnet, subscriber, protected, tmp_path
):
    url = services.magnet_download_url(subscriber, magnet, absolute=False)
    # The store's folder is gone (an unmounted volume): reading it fails with an I/O error.
    (tmp_path / "protected").rename(tmp_path / "unmounted")
    (tmp_path / "protected").write_bytes(b"")

    response = client.get(url)

    assert response.status_code == 503
    assert response["Retry-After"] == "60"
    assert "Please try again" in response.content.decode()
    assert not MagnetDelivery.objects.exists()
