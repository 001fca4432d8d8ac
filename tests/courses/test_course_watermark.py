"""The course's forensic-watermark switch: publishing a course with it on watermarks the
videos of its lessons (and videos added later); off, their playlists are unmarked again.

The first test runs it end to end with the live Celery worker making the B variant; the
others watch which tasks are queued (before_task_publish) without ffmpeg.
"""

import subprocess

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.urls import reverse
from wagtail.test.utils.form_data import nested_form_data, rich_text

from courses.models import CoursePage, LessonPage
from media import playlists
from media.models import Video, VideoDelivery, WatermarkStatus
from media.tasks import video_transcode
from media.watermark import code
from media.watermark.services import video_watermark_switch
from tests.harness.waiting import wait_until

from .conftest import course_tree_install

CLIP_SECONDS = 44  # with 1 s segments: 44 segments, the code needs 36


def _watermark_tasks(published) -> list[int]:
    return sorted(args[0] for name, args in published if name == "media.tasks.video_watermark")


def _ready_video(title: str, *, forensic_watermark: bool = False) -> Video:
    """A transcoded video (status and renditions only: these tests run no ffmpeg)."""
    video = Video(title=title, forensic_watermark=forensic_watermark)
    video.source.save("lesson.mp4", ContentFile(b"-"), save=False)
    video.save()
    rendition = {"name": "360p", "height": 360, "playlist": "360p/index.m3u8", "bandwidth": 1}
    Video.objects.filter(pk=video.pk).update(
        status=Video.Status.READY,
        hls_prefix=f"videos/{video.uid}/hls/run1",
        renditions=[rendition],
    )
    video.refresh_from_db()
    return video


def _play(lesson: LessonPage, video: Video | None) -> None:
    LessonPage.objects.filter(pk=lesson.pk).update(video=video)


def _publish(page, **changes):
    page = page.__class__.objects.get(pk=page.pk)
    for field, value in changes.items():
        setattr(page, field, value)
    page.save_revision().publish()
    return page


def _stream_files(client, video: Video) -> list[str]:
    """The storage names of the segments a player is given (init first)."""
    master = client.get(f"/protected/video/{video.uid}/master.m3u8")
    assert master.status_code == 200
    rendition = client.get(playlists.parse_media_playlist(master.content.decode()).uris[0])
    assert rendition.status_code == 200
    return [
        playlists._unb64(uri.split("/seg/")[1].split(".")[0]).decode()
        for uri in playlists.parse_media_playlist(rendition.content.decode()).uris
    ]


# --- The live worker ------------------------------------------------------------------------


def test_switching_a_course_on_makes_the_worker_watermark_its_videos_and_off_unmarks_them(
    transactional_db,
    celery_worker,
    server_protected_storage,
    settings,
    client,
    buyer,
    tree,
    tmp_path,
):
    # given a lesson video transcoded with 1 s segments into the storage the worker uses,
    # and a buyer who streams it unmarked
    settings.PROTECTED_SERVE_METHOD = "django"
    settings.VIDEO_SEGMENT_SECONDS = 1
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={CLIP_SECONDS}",
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
            str(clip),
        ],
        check=True,
        timeout=300,
    )  # fmt: skip
    video = Video(title="Write your promise")
    video.source.save("promise.mp4", ContentFile(clip.read_bytes()), save=False)
    video.save()
    assert video_transcode.apply(args=[video.pk]).get() == "ready"
    _play(tree.paid_lesson, video)
    client.force_login(buyer)
    assert not any("/mark-" in name for name in _stream_files(client, video))

    # when the creator publishes the course with the watermark on
    _publish(tree.course, forensic_watermark=True)

    # then the worker makes the B variant, with progress, while learners wait for it
    seen = set()

    def finished():
        video.refresh_from_db()
        seen.add((video.watermark_status, video.watermark_progress))
        return video.watermark_status in (WatermarkStatus.READY, WatermarkStatus.FAILED)

    wait_until(finished, timeout=300, what="the worker to watermark the video", interval=0.2)
    assert video.watermark_status == WatermarkStatus.READY, video.watermark_error
    assert video.forensic_watermark and video.is_marked
    in_between = {p for status, p in seen if status == WatermarkStatus.PROCESSING and 0 < p < 100}
    assert in_between, f"no progress seen while watermarking: {sorted(seen)}"

    # and the buyer now streams their own A/B sequence, recorded in the ledger
    files = _stream_files(client, video)
    delivery = VideoDelivery.objects.get(video=video, user=buyer)
    assert ["/mark-" in name for name in files[1:]] == [
        bit == "1" for bit in code.segment_variants(delivery.codeword, CLIP_SECONDS)
    ]
    assert "1" in code.segment_variants(delivery.codeword, CLIP_SECONDS)

    # when the course is published with the watermark off
    _publish(tree.course, forensic_watermark=False)

    # then playlists are unmarked again, and the B variant is kept for a later switch-on
    video.refresh_from_db()
    assert not video.forensic_watermark and not video.is_marked
    assert not any("/mark-" in name for name in _stream_files(client, video))
    assert video.watermark_status == WatermarkStatus.READY
    assert storages["protected"].exists(video.watermark["reference"])


# --- Which videos the switch reaches (no ffmpeg) -------------------------------------------


def test_publishing_a_watermarked_course_queues_each_lesson_video_once(
    tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given three lessons playing two videos (one of them twice), the switch off
    intro, promise = _ready_video("Intro"), _ready_video("Promise")
    _play(tree.lessons[0], intro)
    _play(tree.lessons[1], promise)
    _play(tree.lessons[3], promise)

    # when the course is published with the switch on, then published again
    with django_capture_on_commit_callbacks(execute=True):
        _publish(tree.course, forensic_watermark=True)
    with django_capture_on_commit_callbacks(execute=True):
        _publish(tree.course, title="Launch Your First Course (2nd edition)")

    # then each video is switched on and its B variant queued, once
    assert _watermark_tasks(published) == sorted([intro.pk, promise.pk])
    for video in (intro, promise):
        video.refresh_from_db()
        assert video.forensic_watermark
        assert video.watermark_status == WatermarkStatus.WAITING
        assert video.playback_status == "watermarking"


def test_a_draft_with_the_switch_on_changes_nothing_until_it_is_published(
    tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given
    video = _ready_video("Promise")
    _play(tree.paid_lesson, video)

    # when the creator saves a draft with the switch on
    course = CoursePage.objects.get(pk=tree.course.pk)
    course.forensic_watermark = True
    with django_capture_on_commit_callbacks(execute=True):
        course.save_revision()

    # then learners keep streaming as before
    video.refresh_from_db()
    assert not video.forensic_watermark
    assert _watermark_tasks(published) == []


def test_a_video_added_to_a_lesson_of_a_watermarked_course_gets_the_watermark(
    tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given a watermarked course
    _publish(tree.course, forensic_watermark=True)

    # when a lesson is published with a new video, and one still being transcoded
    ready, uploading = _ready_video("Launch week"), Video(title="Outline")
    uploading.source.save("outline.mp4", ContentFile(b"-"), save=False)
    uploading.save()
    with django_capture_on_commit_callbacks(execute=True):
        _publish(tree.lessons[3], video=ready)
        _publish(tree.lessons[2], video=uploading)

    # then both are switched on: the ready one's B variant is queued now, the other's
    # once its transcode finishes (media.watermark.services.video_watermark_after_transcode)
    ready.refresh_from_db()
    uploading.refresh_from_db()
    assert ready.forensic_watermark and uploading.forensic_watermark
    assert _watermark_tasks(published) == [ready.pk]
    assert uploading.watermark_status == WatermarkStatus.WAITING


def test_a_video_shared_with_another_watermarked_course_stays_watermarked(
    home, tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given a video played by lessons of two courses, both switched on
    other = course_tree_install(home, slug="pricing", title="Pricing for creators")
    shared = _ready_video("Shared welcome")
    _play(tree.free_lesson, shared)
    _play(other.free_lesson, shared)
    _publish(tree.course, forensic_watermark=True)
    _publish(other.course, forensic_watermark=True)

    # when one course is switched off
    with django_capture_on_commit_callbacks(execute=True):
        _publish(other.course, forensic_watermark=False)

    # then the video stays watermarked (the other course still wants it)
    shared.refresh_from_db()
    assert shared.forensic_watermark

    # and when the last course is switched off too, it is unmarked
    with django_capture_on_commit_callbacks(execute=True):
        _publish(tree.course, forensic_watermark=False)
    shared.refresh_from_db()
    assert not shared.forensic_watermark


def test_a_video_no_lesson_plays_keeps_its_own_switch(
    tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given a webinar replay watermarked by its own switch, and a lesson video switched on
    # by hand
    replay = _ready_video("Replay", forensic_watermark=True)
    lesson_video = _ready_video("Promise", forensic_watermark=True)
    _play(tree.paid_lesson, lesson_video)

    # when the course is published with the switch off
    with django_capture_on_commit_callbacks(execute=True):
        _publish(tree.course, forensic_watermark=False)

    # then the course's video follows the course; the replay is left alone
    replay.refresh_from_db()
    lesson_video.refresh_from_db()
    assert replay.forensic_watermark
    assert not lesson_video.forensic_watermark


def test_an_unpublished_course_watermarks_nothing(
    tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given a course with the switch on that has been taken offline
    video = _ready_video("Promise")
    _publish(tree.course, forensic_watermark=True)
    CoursePage.objects.filter(pk=tree.course.pk).update(live=False)

    # when one of its lessons is published with a video
    with django_capture_on_commit_callbacks(execute=True):
        _publish(tree.paid_lesson, video=video)

    # then nothing is queued
    video.refresh_from_db()
    assert not video.forensic_watermark
    assert _watermark_tasks(published) == []


def test_switching_a_video_on_twice_does_not_supersede_its_run(
    tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given a video whose B variant is being made
    video = _ready_video("Promise")
    _play(tree.paid_lesson, video)
    with django_capture_on_commit_callbacks(execute=True):
        video_watermark_switch(video=video, enabled=True)
    Video.objects.filter(pk=video.pk).update(
        watermark_status=WatermarkStatus.PROCESSING, watermark_progress=40
    )

    # when the course is published with the switch on
    with django_capture_on_commit_callbacks(execute=True):
        _publish(tree.course, forensic_watermark=True)

    # then the run in progress is left to finish
    video.refresh_from_db()
    assert (video.watermark_status, video.watermark_progress) == (WatermarkStatus.PROCESSING, 40)
    assert _watermark_tasks(published) == [video.pk]


def test_the_creator_switches_it_on_in_the_course_editor(
    client, django_user_model, tree, published, celery_broker, django_capture_on_commit_callbacks
):
    # given a creator in the editor of a course with a lesson video
    video = _ready_video("Promise")
    _play(tree.paid_lesson, video)
    client.force_login(
        django_user_model.objects.create_superuser(email="maya@example.com", password="-")
    )
    editor = client.get(reverse("wagtailadmin_pages:edit", args=(tree.course.pk,)))
    assert "Forensic watermark on this course" in editor.content.decode()

    # when they tick the switch and publish
    form = nested_form_data(
        {
            "title": tree.course.title,
            "slug": tree.course.slug,
            "subtitle": "",
            "description": rich_text("<p>All about it.</p>"),
            "language": "",
            "product": tree.product.pk,
            "offer": tree.offer.pk,
            "forensic_watermark": "on",
            "action-publish": "publish",
        }
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("wagtailadmin_pages:edit", args=(tree.course.pk,)), form)

    # then the course's video is being watermarked
    assert response.status_code == 302
    assert CoursePage.objects.get(pk=tree.course.pk).forensic_watermark
    video.refresh_from_db()
    assert video.forensic_watermark
    assert _watermark_tasks(published) == [video.pk]
