"""The demo course: loads on a fresh site, loads again without duplicating anything, and
gives its free preview lesson a generated video for the worker to transcode."""

import io
import json
import subprocess

import pytest
from celery.signals import before_task_publish

from courses import demo
from courses.models import CourseCatalogPage, CoursePage, LessonDownload, LessonPage, ModulePage
from media.models import Video
from media.stamping.prepare import manifest_name
from media.tasks import video_transcode
from payments.models import Offer, Price, Product

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def short_video(monkeypatch):
    # The demo makes 24 s; two are enough to check what it makes.
    monkeypatch.setattr(demo, "VIDEO_SECONDS", 2)


@pytest.fixture
def load(celery_broker, django_capture_on_commit_callbacks):
    """Run the loader as load_demo does (its on-commit work included); returns its facts
    and the ids of the videos it sent to the worker to transcode."""

    def run() -> tuple[dict, list[int]]:
        sent = []

        def record(sender=None, body=None, **kwargs):
            if sender == video_transcode.name:
                sent.append(body[0][0])

        before_task_publish.connect(record)
        try:
            with django_capture_on_commit_callbacks(execute=True):
                facts = demo.load(stdout=io.StringIO())
        finally:
            before_task_publish.disconnect(record)
        return facts, sent

    return run


def _probe(path) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def _welcome() -> LessonPage:
    return LessonPage.objects.get(slug=demo.VIDEO_LESSON_SLUG)


def test_demo_course_loads_once_and_again_without_duplicates(client, home, protected_storage, load):
    facts, queued = load()
    again, queued_again = load()

    assert facts == again
    course = CoursePage.objects.get()
    assert facts["course_url"] == course.url
    assert CourseCatalogPage.objects.count() == 1
    assert ModulePage.objects.child_of(course).count() == 2
    lessons = LessonPage.objects.descendant_of(course)
    assert lessons.count() == 4
    assert list(lessons.filter(is_free_preview=True).values_list("title", flat=True)) == [
        "Welcome: how this course works"
    ]
    assert ModulePage.objects.get(slug="build-and-launch").release_after_days == 7

    # what sells it
    assert course.product == Product.objects.get()
    assert course.offer == Offer.objects.get(is_published=True)
    price = Price.objects.get()
    assert (price.kind, price.amount, price.currency) == ("one_time", 14900, "eur")
    assert list(course.offer.products.all()) == [course.product]

    # a real worksheet, privately stored
    download = LessonDownload.objects.get()
    with protected_storage.open(download.file.name) as stored:
        pdf = stored.read()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 10_000
    assert download.filename == "worksheet-find-your-promise.pdf"

    # one video, queued once
    assert queued == [Video.objects.get().pk]
    assert queued_again == []

    # and a visitor sees it for sale
    html = client.get(facts["course_url"]).content.decode()
    assert "€149.00" in html
    assert "Watch the free preview" in html


def test_demo_video_is_generated_attached_to_the_free_lesson_and_queued_for_the_worker(
    client, home, protected_storage, load
):
    # when
    _facts, queued = load()

    # then the free preview lesson has a video waiting for the worker
    video = _welcome().video
    assert video.title == "Welcome: how this course works"
    assert video.status == Video.Status.UPLOADED
    assert queued == [video.pk]
    # made of a real 720p picture and a sound track, kept in the protected store
    probe = _probe(protected_storage.path(video.source.name))
    picture = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (picture["codec_name"], picture["width"], picture["height"]) == ("h264", 1280, 720)
    assert any(s["codec_type"] == "audio" for s in probe["streams"])
    assert float(probe["format"]["duration"]) == pytest.approx(2, abs=0.2)
    # and the lesson's published revision names it too (an editor opening it keeps it)
    assert _welcome().get_latest_revision_as_object().video_id == video.pk
    # anyone may watch the free lesson: the page has the player, waiting for the transcode
    html = client.get(_welcome().url).content.decode()
    assert f'data-status-url="/protected/video/{video.uid}/status.json"' in html
    assert "This video is being prepared — check back in a few minutes." in html


def test_demo_worksheet_is_prepared_for_stamping_when_loaded(home, protected_storage, load):
    load()

    download = LessonDownload.objects.get()
    assert protected_storage.exists(manifest_name(download.file.name))
    manifest = json.loads(protected_storage.open(manifest_name(download.file.name)).read())
    assert (manifest["kind"], manifest["problem"]) == ("pdf", "")


def test_without_ffmpeg_the_lesson_says_its_video_could_not_be_made_and_why(
    client,
    admin_client,
    home,
    protected_storage,
    staff,
    monkeypatch,
    load,
):
    # given a machine where ffmpeg could not be installed
    monkeypatch.setattr(demo, "FFMPEG", "ffmpeg-is-not-installed-here")

    # when the demo loads
    facts, queued = load()

    # then it loads all the same, and the lesson's video is marked failed with the reason
    assert facts["course_url"] == CoursePage.objects.get().url
    video = _welcome().video
    assert video.status == Video.Status.FAILED
    assert video.error == demo.FFMPEG_MISSING
    assert queued == []
    # a visitor sees the lesson, its video marked failed; the creator also sees why
    visitor = client.get(_welcome().url)
    assert visitor.status_code == 200
    assert 'data-status="failed"' in visitor.content.decode()
    assert "ffmpeg is not installed" not in visitor.content.decode()
    client.force_login(staff)
    assert "ffmpeg is not installed on this machine" in client.get(_welcome().url).content.decode()
    # and in the admin, where the creator looks after videos
    listing = admin_client.get("/admin/snippets/lodestone_media/video/")
    assert listing.status_code == 200
    inspect = admin_client.get(f"/admin/snippets/lodestone_media/video/inspect/{video.pk}/")
    assert "This video could not be processed." in inspect.content.decode()
    assert "ffmpeg is not installed on this machine" in inspect.content.decode()


def test_once_ffmpeg_is_there_the_next_load_makes_the_video_and_the_one_after_adds_nothing(
    home, protected_storage, monkeypatch, load
):
    # given a demo loaded without ffmpeg
    with monkeypatch.context() as patch:
        patch.setattr(demo, "FFMPEG", "ffmpeg-is-not-installed-here")
        load()
    failed = _welcome().video

    # when it is loaded again with ffmpeg, and once more
    _facts, queued = load()
    _facts, queued_after = load()

    # then the same video got its file and was queued once
    video = Video.objects.get()
    assert video.pk == failed.pk == _welcome().video_id
    assert video.status == Video.Status.UPLOADED
    assert video.error == ""
    assert protected_storage.exists(video.source.name)
    assert queued == [video.pk]
    assert queued_after == []


def test_a_title_with_quotes_colons_and_percent_signs_is_drawn_without_escaping(tmp_path):
    # drawtext reads the title from a file with expansion off: nothing in it is syntax
    path = demo.video_source_make("50% off: 'Launch' \\ week; [now]", tmp_path)

    assert _probe(str(path))["format"]["format_name"].startswith("mov,mp4")
