"""A worker without ffmpeg (or ffprobe) fails a video with a message its creator can act
on, not a traceback. The machines are real: a Celery worker process whose PATH has no
ffmpeg, and this process with ffprobe taken off its PATH."""

import os
import shutil
import uuid

from django.core.files.base import ContentFile
from django.db import transaction
from django.urls import reverse

from media.models import Video
from media.services import video_upload_received
from media.tasks import video_transcode
from tests.harness.celery_worker import Broker, app_publishing_to, celery_worker_running
from tests.harness.waiting import wait_until

FFMPEG_MISSING = "ffmpeg is not installed on the worker: install the Debian package ffmpeg"
FFPROBE_MISSING = "ffprobe is not installed on the worker: install the Debian package ffmpeg"


def _bin_with(tmp_path, *tools: str) -> str:
    """A PATH folder holding only `tools` (links to the real ones)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in tools:
        os.symlink(shutil.which(tool), folder / tool)
    return str(folder)


def _upload(title: str) -> Video:
    video = Video(title=title)
    video.source.save("lecture.mp4", ContentFile(b"\x00\x00\x00\x18ftypmp42"), save=False)
    video.save()
    return video


def test_a_worker_without_ffmpeg_fails_the_upload_telling_the_creator_to_install_it(
    transactional_db,
    celery_broker,
    django_server_env,
    server_protected_storage,
    harness_log_dir,
    tmp_path,
    client,
    django_user_model,
):
    # given a worker process whose PATH has ffprobe but no ffmpeg, on a queue of its own
    from config.celery_app import app

    assert shutil.which("ffmpeg"), "the test machine itself needs ffmpeg"
    broker = Broker(url=celery_broker.url, queue=f"lodestone-noffmpeg-{uuid.uuid4().hex[:8]}")
    env = {**django_server_env, "PATH": _bin_with(tmp_path, "ffprobe")}
    with (
        app_publishing_to(app, broker),
        celery_worker_running(
            app=app, broker=broker, env=env, log_path=harness_log_dir / "celery-noffmpeg.log"
        ),
    ):
        # when a video is uploaded (the transcode is queued on commit)
        video = _upload("Week 1")
        with transaction.atomic():
            video_upload_received(video=Video.objects.get(pk=video.pk))

        # then the worker fails it with what to do, not a traceback
        wait_until(
            lambda: Video.objects.get(pk=video.pk).status == Video.Status.FAILED,
            timeout=60,
            what="the worker without ffmpeg to fail the video",
            interval=0.2,
        )
    video.refresh_from_db()
    assert video.error.startswith(FFMPEG_MISSING)
    assert "Traceback" not in video.error
    assert video.progress == 0

    # and the creator reads it on the video's page in the admin
    creator = django_user_model.objects.create_superuser(email="c@example.com", password="-")
    client.force_login(creator)
    inspect = client.get(
        reverse("wagtailsnippets_lodestone_media_video:inspect", args=[video.pk])
    ).content.decode()
    assert FFMPEG_MISSING in inspect


def test_a_transcode_without_ffprobe_on_the_path_fails_naming_ffprobe(
    db, server_protected_storage, monkeypatch, tmp_path
):
    # given this process's PATH has ffmpeg but no ffprobe (subprocesses look it up there)
    video = _upload("Week 2")
    monkeypatch.setenv("PATH", _bin_with(tmp_path, "ffmpeg"))

    # when the transcode task runs
    outcome = video_transcode.apply(args=[video.pk]).get()

    # then the video failed, telling which program is missing and how to get it
    video.refresh_from_db()
    assert outcome == "failed"
    assert video.status == Video.Status.FAILED
    assert video.error.startswith(FFPROBE_MISSING)
