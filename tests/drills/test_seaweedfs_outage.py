"""Drill: the protected store (SeaweedFS as S3) stops while subscribers download their
stamped lead magnet. The download answers a clear 503 asking them to try again, the failed
try is not counted against their download limit, and once the store is back the same link
works."""

import pytest
from django.core.files.base import ContentFile

from funnels import services
from funnels.models import LeadMagnet, MagnetDelivery, Subscriber
from media.models import DownloadDelivery
from media.stamping.samples import sample_pdf
from tests.harness.seaweedfs import seaweedfs_started

pytestmark = pytest.mark.django_db

EMAIL = "leila@drill.lodestone-mail.fi"


def test_seaweedfs_stopped_during_downloads_answers_a_clear_503_then_serves_again(
    client, settings, harness_log_dir, tmp_path
):
    with seaweedfs_started(tmp_path / "weed", harness_log_dir / "drill-seaweedfs.log") as weed:
        s3 = weed.ready()
        settings.STORAGES = {
            **settings.STORAGES,
            "protected": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": s3.storage_options(querystring_expire=60),
            },
        }
        # given a subscriber's download link to a stamped magnet in the store
        magnet = LeadMagnet(title="Launch Checklist", download_filename="launch-checklist.pdf")
        magnet.file.save("launch-checklist.pdf", ContentFile(sample_pdf(3)), save=False)
        magnet.save()
        subscriber = Subscriber.objects.create(
            email=EMAIL, name="Leila", status=Subscriber.Status.CONFIRMED
        )
        link = services.magnet_download_url(subscriber, magnet, absolute=False)
        first = client.get(link)
        assert first.status_code == 200
        assert b"".join(first.streaming_content).startswith(b"%PDF")

        # when the store stops
        weed.server.stop()
        during = client.get(link)

        # then the subscriber is told plainly to try again, and the try is not counted
        assert during.status_code == 503
        assert during["Retry-After"] == "60"
        page = during.content.decode()
        assert "try again" in page.lower()
        assert "Traceback" not in page and "botocore" not in page
        assert MagnetDelivery.objects.count() == 1
        assert DownloadDelivery.objects.count() == 1

        # when the store is back (same data, same ports), the same link works again
        weed.server.start()
        weed._ready = False
        weed.ready()
        after = client.get(link)
        assert after.status_code == 200
        body = b"".join(after.streaming_content)
        assert body.startswith(b"%PDF")
        # a stamped copy of its own, recorded like the first
        latest = DownloadDelivery.objects.latest("created_at")
        assert DownloadDelivery.objects.count() == 2
        assert latest.stamped and latest.sent_size == len(body)
        assert MagnetDelivery.objects.count() == 2
