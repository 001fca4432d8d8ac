"""Protected delivery in a course when something is wrong: a refund mid-course, a damaged
or locked worksheet, a store that does not answer, a video that could not be processed.
Each gets a clear answer, and nothing is sent or counted that should not be."""

import io
import re
import subprocess

import pikepdf
import pytest
from botocore.config import Config
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command

from courses.models import LessonDownload, LessonPage
from media.downloads import source_problem
from media.models import DownloadDelivery, Video
from media.playlists import parse_media_playlist
from media.stamping.prepare import forget_cached
from media.stamping.samples import sample_pdf
from payments import services as payment_services
from tests.harness.ports import free_port
from tests.media.test_video_samples import install_ready_video, transcoded_720p

from .conftest import course_tree_install

pytestmark = pytest.mark.django_db

DAMAGED = b"%PDF-1.7\n" + b"\x00" * 900


@pytest.fixture
def tree(home, protected_storage):
    forget_cached()
    yield course_tree_install(home, with_download=True)
    forget_cached()


@pytest.fixture
def download(tree) -> LessonDownload:
    return tree.paid_lesson.downloads.get()


def _download_url(download: LessonDownload) -> str:
    return f"/learn/download/{download.uuid}/"


def _locked_pdf() -> bytes:
    locked = io.BytesIO()
    with pikepdf.open(io.BytesIO(sample_pdf(2))) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="owner", user="reader"))
    return locked.getvalue()


def _replace_file(download: LessonDownload, data: bytes) -> str:
    download.file.save("worksheet.pdf", ContentFile(data), save=True)
    return download.file.name


def _pdf_text(data: bytes, tmp_path) -> str:
    path = tmp_path / "received.pdf"
    path.write_bytes(data)
    return subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    ).stdout.decode()


# --- A refund mid-course ------------------------------------------------------------------


def test_a_refunded_buyer_gets_no_more_playlists_lesson_or_download_from_that_moment(
    client, tree, buyer, download, protected_storage, tmp_path_factory
):
    # given a buyer watching the paid lesson's video, holding its playlist URLs
    video = install_ready_video(protected_storage, transcoded_720p(tmp_path_factory.getbasetemp()))
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=video)
    client.force_login(buyer)
    master = client.get(f"/protected/video/{video.uid}/master.m3u8")
    assert master.status_code == 200
    rendition = parse_media_playlist(master.content.decode()).uris[-1]
    assert client.get(rendition).status_code == 200
    assert client.get(_download_url(download)).status_code == 200

    # when the payment is refunded
    payment_services.entitlement_revoke(user=buyer, product=tree.product, reason="refund")

    # then every request they make from now on is refused
    assert client.get(f"/protected/video/{video.uid}/master.m3u8").status_code == 403
    assert client.get(rendition).status_code == 403
    assert client.get(f"/protected/video/{video.uid}/poster.jpg").status_code == 403
    assert client.get(tree.paid_lesson.url).status_code == 403
    refused = client.get(_download_url(download))
    assert refused.status_code == 403
    assert "Buy the course" in refused.content.decode()
    assert DownloadDelivery.objects.filter(user=buyer).count() == 1


# --- A worksheet that cannot be stamped ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "creator_reason"),
    [(DAMAGED, "cannot be read as a PDF"), (_locked_pdf(), "password-protected")],
    ids=["damaged", "password-protected"],
)
def test_a_worksheet_that_cannot_be_stamped_is_refused_to_buyers_and_named_to_the_creator(
    client, buyer, download, data, creator_reason
):
    # given the creator uploaded a damaged or password-protected PDF as the worksheet
    name = _replace_file(download, data)
    client.force_login(buyer)

    # when a buyer follows its link
    response = client.get(_download_url(download))

    # then they are told it cannot be delivered now, and nothing leaves unstamped
    assert response.status_code == 503
    page = response.content.decode()
    assert "This download is not available right now" in page
    assert "cannot be delivered right now" in page
    assert "%PDF" not in page
    assert not DownloadDelivery.objects.exists()
    # and the creator's check names the file and the reason
    assert creator_reason in source_problem(name)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 files cannot be stamped"):
        call_command("prepare_downloads", name, stdout=out)
    assert f"{name}: NOT STAMPABLE" in out.getvalue()
    assert creator_reason in out.getvalue()


def test_a_replaced_good_worksheet_is_delivered_stamped_again(client, buyer, download, tmp_path):
    # given a damaged worksheet a buyer was refused
    _replace_file(download, DAMAGED)
    client.force_login(buyer)
    assert client.get(_download_url(download)).status_code == 503

    # when the creator uploads a good one in its place
    _replace_file(download, sample_pdf(3, seed=4))
    response = client.get(_download_url(download))

    # then the buyer gets it, stamped on every page
    assert response.status_code == 200
    pages = _pdf_text(b"".join(response.streaming_content), tmp_path).split("\f")[:-1]
    assert len(pages) == 3
    assert all(buyer.email in page for page in pages)


# --- A store that does not answer ---------------------------------------------------------


def test_a_download_while_the_store_does_not_answer_says_try_again_and_the_retry_works(
    client, buyer, download, settings, tmp_path
):
    # given the protected store is unreachable (an S3 endpoint nobody listens on)
    working = settings.STORAGES
    settings.STORAGES = {
        **working,
        "protected": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "lodestone-protected",
                "access_key": "test",
                "secret_key": "test-secret",
                "endpoint_url": f"http://127.0.0.1:{free_port()}",
                "region_name": "us-east-1",
                "client_config": Config(
                    connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}
                ),
            },
        },
    }
    forget_cached()
    client.force_login(buyer)

    # when the buyer follows the download link
    response = client.get(_download_url(download))

    # then they get a clear, temporary error, and the attempt does not count
    assert response.status_code == 503
    page = response.content.decode()
    assert "This download is not available right now" in page
    assert "try again" in page
    assert "no-store" in response["Cache-Control"]
    assert not DownloadDelivery.objects.exists()

    # when the store answers again and they retry the same link
    settings.STORAGES = working
    forget_cached()
    retried = client.get(_download_url(download))

    # then the file arrives, stamped for them, and only this delivery is recorded
    assert retried.status_code == 200
    assert buyer.email in _pdf_text(b"".join(retried.streaming_content), tmp_path)
    assert DownloadDelivery.objects.filter(user=buyer).count() == 1


# --- A video that could not be processed --------------------------------------------------


def _pending_label(html: str) -> str:
    found = re.search(r"<span data-video-status-label>([^<]*)</span>", html)
    assert found, "the player shows no status"
    return found.group(1)


def test_a_lesson_whose_video_failed_tells_buyers_kindly_and_the_creator_why(
    client, tree, buyer, staff, protected_storage
):
    # given the paid lesson's video could not be read by ffprobe
    video = Video.objects.create(
        title="Broken upload",
        source="videos/sources/broken.mp4",
        status=Video.Status.FAILED,
        error="Could not read the file: moov atom not found",
    )
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=video)

    # when the buyer opens the lesson
    client.force_login(buyer)
    response = client.get(tree.paid_lesson.url)

    # then the lesson is there, its video marked failed, without a player to wait on, and
    # the buyer reads that the video is unavailable, not a bare machine state
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-status="failed"' in html
    assert _pending_label(html) == "This video is unavailable; the creator has been told."
    assert "Failed" not in html
    assert "moov atom" not in html  # the technical reason is for the creator
    assert client.get(f"/protected/video/{video.uid}/master.m3u8").status_code == 404
    status = client.get(f"/protected/video/{video.uid}/status.json").json()
    assert status["status"] == "failed"
    assert status["status_label"] == "This video is unavailable; the creator has been told."
    assert "error" not in status

    # and the creator previewing the lesson reads the state and the reason
    client.force_login(staff)
    staff_html = client.get(tree.paid_lesson.url).content.decode()
    assert _pending_label(staff_html) == "Failed"
    assert "Could not read the file: moov atom not found" in staff_html


@pytest.mark.parametrize(
    ("status", "staff_label"),
    [(Video.Status.UPLOADED, "Waiting to be processed"), (Video.Status.PROCESSING, "Processing")],
)
def test_a_lesson_whose_video_is_still_processing_asks_buyers_to_come_back(
    client, tree, buyer, staff, status, staff_label
):
    # given the paid lesson's video is waiting for, or in, the transcode
    video = Video.objects.create(
        title="Fresh upload", source="videos/sources/fresh.mp4", status=status, progress=40
    )
    LessonPage.objects.filter(pk=tree.paid_lesson.pk).update(video=video)

    # when the buyer opens the lesson
    client.force_login(buyer)
    html = client.get(tree.paid_lesson.url).content.decode()

    # then they are asked to come back, while the progress bar keeps moving
    assert _pending_label(html) == "This video is being prepared — check back in a few minutes."
    assert staff_label not in html
    assert '<progress max="100" value="40"' in html
    polled = client.get(f"/protected/video/{video.uid}/status.json").json()
    assert polled["status_label"] == ("This video is being prepared — check back in a few minutes.")

    # and staff see the machine's state
    client.force_login(staff)
    assert _pending_label(client.get(tree.paid_lesson.url).content.decode()) == staff_label
    assert client.get(f"/protected/video/{video.uid}/status.json").json()["status_label"] == (
        staff_label
    )
