"""Creators upload videos in the Wagtail admin and follow their processing there."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from media.models import Video
from media.tasks import video_files_delete

from .test_video_samples import install_ready_video, transcoded_720p

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_storage(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    return storages["protected"]


@pytest.fixture
def creator_client(client, django_user_model):
    creator = django_user_model.objects.create_superuser(email="creator@example.com", password="-")
    client.force_login(creator)
    return client


def _url(action: str, *args) -> str:
    return reverse(f"wagtailsnippets_lodestone_media_video:{action}", args=args)


def test_uploading_a_video_in_the_admin_queues_its_transcode_once_saved(
    creator_client,
    local_storage,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
):
    # given
    upload = SimpleUploadedFile("week-1.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4")

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = creator_client.post(
            _url("add"), {"title": "Week 1: Getting started", "source": upload}
        )

    # then
    assert response.status_code == 302
    video = Video.objects.get(title="Week 1: Getting started")
    assert video.status == Video.Status.UPLOADED
    assert local_storage.exists(video.source.name)
    assert published == [("media.tasks.video_transcode", [video.pk])]


def test_video_list_shows_status_progress_duration_and_poster(
    creator_client, local_storage, tmp_path_factory
):
    # given
    ready = install_ready_video(
        local_storage, transcoded_720p(tmp_path_factory.getbasetemp()), title="Ready one"
    )
    busy = Video(title="Busy one", status=Video.Status.PROCESSING, progress=42)
    busy.source.save("busy.mp4", ContentFile(b"-"), save=False)
    busy.save()

    # when
    html = creator_client.get(_url("list")).content.decode()

    # then
    assert "Ready one" in html
    assert "0:13" in html  # duration
    assert "360p, 720p" in html
    assert f'src="/protected/video/{ready.uid}/poster.jpg"' in html
    assert '<progress max="100" value="42"' in html
    assert "Processing" in html


def test_inspecting_a_video_shows_the_player(creator_client, local_storage, tmp_path_factory):
    # given
    video = install_ready_video(local_storage, transcoded_720p(tmp_path_factory.getbasetemp()))

    # when
    html = creator_client.get(_url("inspect", video.pk)).content.decode()

    # then
    assert f'data-video-src="/protected/video/{video.uid}/master.m3u8"' in html


def test_a_failed_video_shows_the_reason_to_the_creator(creator_client, local_storage):
    # given
    video = Video(
        title="Broken",
        status=Video.Status.FAILED,
        error="Could not read the file: moov atom not found",
    )
    video.source.save("broken.mp4", ContentFile(b"-"), save=False)
    video.save()

    # when
    html = creator_client.get(_url("inspect", video.pk)).content.decode()

    # then
    assert "This video could not be processed." in html
    assert "moov atom not found" in html


def test_replacing_the_file_queues_a_new_transcode_and_discards_the_old_file(
    creator_client,
    local_storage,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
    tmp_path_factory,
):
    # given
    video = install_ready_video(local_storage, transcoded_720p(tmp_path_factory.getbasetemp()))
    old_source = video.source.name
    upload = SimpleUploadedFile("week-1-v2.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4")

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = creator_client.post(
            _url("edit", video.pk), {"title": video.title, "source": upload}
        )

    # then
    assert response.status_code == 302
    video.refresh_from_db()
    assert video.status == Video.Status.UPLOADED
    assert video.source.name != old_source
    assert sorted(published) == [
        ("media.tasks.video_files_delete", ["", old_source]),
        ("media.tasks.video_transcode", [video.pk]),
    ]


def test_renaming_a_video_keeps_its_transcode(
    creator_client, local_storage, published, tmp_path_factory, django_capture_on_commit_callbacks
):
    # given
    video = install_ready_video(local_storage, transcoded_720p(tmp_path_factory.getbasetemp()))

    # when
    with django_capture_on_commit_callbacks(execute=True):
        creator_client.post(_url("edit", video.pk), {"title": "Week 1 (new title)"})

    # then
    video.refresh_from_db()
    assert video.title == "Week 1 (new title)"
    assert video.status == Video.Status.READY
    assert published == []


def test_deleting_a_video_deletes_its_source_and_every_hls_file(
    creator_client,
    local_storage,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
    tmp_path_factory,
):
    # given
    video = install_ready_video(local_storage, transcoded_720p(tmp_path_factory.getbasetemp()))
    uid, source = str(video.uid), video.source.name

    # when the creator deletes it, and the queued task runs
    with django_capture_on_commit_callbacks(execute=True):
        response = creator_client.post(_url("delete", video.pk))
    assert published == [("media.tasks.video_files_delete", [uid, source])]
    video_files_delete.apply(args=published[0][1])

    # then
    assert response.status_code == 302
    assert not Video.objects.filter(pk=video.pk).exists()
    assert not local_storage.exists(source)
    assert not local_storage.exists(f"videos/{uid}")
