"""Uploaded videos become HLS: the Celery task in-process, on S3, on the live worker, and
a worker killed midway."""

import os
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from celery.signals import before_task_publish
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone

from media import transcode
from media.models import Video
from media.services import video_requeue_stale, video_upload_received
from media.tasks import video_transcode
from tests.harness.waiting import wait_until

from .test_video_samples import SAMPLE_720P_SECONDS, ffprobe_json, sample, transcoded_720p

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


def _uploaded(kind: str, basetemp: Path, title: str = "Welcome lecture") -> Video:
    video = Video(title=title)
    video.source.save(f"{kind}.mp4", ContentFile(sample(basetemp, kind).read_bytes()), save=False)
    video.save()
    return video


def _files_under(storage, prefix: str) -> list[str]:
    dirs, files = storage.listdir(prefix)
    found = [f"{prefix}/{name}" for name in files]
    for sub in dirs:
        found += _files_under(storage, f"{prefix}/{sub}")
    return sorted(found)


# --- In-process, local storage ---------------------------------------------------------------


def test_a_720p_upload_becomes_360p_and_720p_hls_with_a_poster(local_storage, tmp_path_factory):
    # given
    video = _uploaded("720p", tmp_path_factory.getbasetemp())

    # when
    outcome = video_transcode.apply(args=[video.pk]).get()

    # then
    video.refresh_from_db()
    assert outcome == "ready"
    assert video.status == Video.Status.READY
    assert video.progress == 100
    assert video.error == ""
    assert (video.width, video.height) == (1280, 720)
    assert video.duration_seconds == pytest.approx(SAMPLE_720P_SECONDS, abs=0.1)
    assert [(r["name"], r["width"], r["height"]) for r in video.renditions] == [
        ("360p", 640, 360),
        ("720p", 1280, 720),
    ]
    assert video.hls_prefix.startswith(f"videos/{video.uid}/hls/")
    assert video.poster == f"{video.hls_prefix}/poster.jpg"
    files = _files_under(local_storage, video.hls_prefix)
    for name in ("master.m3u8", "poster.jpg", "360p/index.m3u8", "720p/index.m3u8"):
        assert f"{video.hls_prefix}/{name}" in files
    assert sum(name.endswith(".m4s") for name in files) == 6
    poster = ffprobe_json(local_storage.path(video.poster), "-show_streams")["streams"][0]
    assert (poster["codec_name"], poster["width"], poster["height"]) == ("mjpeg", 1280, 720)


def test_master_playlist_lists_each_rendition_with_bandwidth_resolution_and_codecs(
    tmp_path_factory,
):
    # given
    result = transcoded_720p(tmp_path_factory.getbasetemp())

    # when
    master = (result.folder / "master.m3u8").read_text().splitlines()

    # then 720p is listed first (where players start), then the rest by bandwidth
    assert master[:3] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    streams = dict(zip(master[4::2], master[3::2], strict=True))
    assert list(streams) == ["720p/index.m3u8", "360p/index.m3u8"]
    for name, resolution, level in (("720p", "1280x720", "1f"), ("360p", "640x360", "1e")):
        attributes = transcode.attribute_list(streams[f"{name}/index.m3u8"].split(":", 1)[1])
        rendition = next(r for r in result.renditions if r.name == name)
        assert attributes["RESOLUTION"] == resolution
        assert attributes["CODECS"] == f"avc1.6400{level},mp4a.40.2"  # High profile + AAC-LC
        assert int(attributes["BANDWIDTH"]) == rendition.bandwidth
        assert int(attributes["AVERAGE-BANDWIDTH"]) <= rendition.bandwidth
        assert attributes["FRAME-RATE"] == "30.000"
    assert result.renditions[1].bandwidth > result.renditions[0].bandwidth * 2


def test_segments_last_six_seconds_except_the_last_and_start_on_keyframes_aligned_across_renditions(
    tmp_path_factory, tmp_path
):
    # given
    result = transcoded_720p(tmp_path_factory.getbasetemp())
    keyframes = {}

    for rendition in result.renditions:
        # when
        playlist = result.folder / rendition.playlist
        init, segments = transcode.media_playlist_entries(playlist.read_text())
        frames = ffprobe_json(
            playlist,
            "-select_streams",
            "v:0",
            "-skip_frame",
            "nokey",
            "-show_entries",
            "frame=pts_time",
        )["frames"]
        times = [float(f["pts_time"]) for f in frames]
        keyframes[rendition.name] = [round(t - times[0], 3) for t in times]

        # then
        assert [round(duration, 2) for duration, _uri in segments] == [6.0, 6.0, 1.0]
        assert "#EXT-X-TARGETDURATION:6" in playlist.read_text()
        for _duration, uri in segments:
            alone = tmp_path / f"{rendition.name}-{uri}.mp4"
            alone.write_bytes(
                (playlist.parent / init).read_bytes() + (playlist.parent / uri).read_bytes()
            )
            first = ffprobe_json(
                alone,
                "-select_streams",
                "v:0",
                "-read_intervals",
                "%+#1",
                "-show_entries",
                "frame=key_frame,pict_type",
            )["frames"][0]
            assert (first["key_frame"], first["pict_type"]) == (1, "I"), (rendition.name, uri)
    assert keyframes["360p"] == keyframes["720p"] == [0.0, 6.0, 12.0]


def test_every_rendition_decodes_from_its_playlist_without_errors(tmp_path_factory):
    # given
    result = transcoded_720p(tmp_path_factory.getbasetemp())

    for rendition in result.renditions:
        # when the whole rendition is decoded (H.264 video and AAC audio)
        decoded = subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-nostdin",
                "-i",
                str(result.folder / rendition.playlist),
                "-map",
                "0",
                "-f",
                "null",
                "-",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        streams = ffprobe_json(result.folder / rendition.playlist, "-show_streams")["streams"]

        # then
        assert decoded.returncode == 0
        assert decoded.stderr == ""
        video, audio = (
            next(s for s in streams if s["codec_type"] == t) for t in ("video", "audio")
        )
        assert (video["codec_name"], video["pix_fmt"], video["profile"]) == (
            "h264",
            "yuv420p",
            "High",
        )
        assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)


def test_a_1080p_upload_also_gets_a_1080p_rendition(local_storage, tmp_path_factory):
    # given
    video = _uploaded("1080p", tmp_path_factory.getbasetemp())

    # when
    video_transcode.apply(args=[video.pk])

    # then
    video.refresh_from_db()
    assert video.status == Video.Status.READY
    assert [(r["name"], r["width"], r["height"]) for r in video.renditions] == [
        ("360p", 640, 360),
        ("720p", 1280, 720),
        ("1080p", 1920, 1080),
    ]
    master = local_storage.open(f"{video.hls_prefix}/master.m3u8").read().decode()
    assert "RESOLUTION=1920x1080" in master
    assert "1080p/index.m3u8" in master


def test_an_unreadable_upload_fails_with_ffprobes_reason_and_is_not_retried(
    local_storage, tmp_path_factory
):
    # given
    video = _uploaded("garbage", tmp_path_factory.getbasetemp(), title="Not a video")

    # when
    result = video_transcode.apply(args=[video.pk])

    # then
    video.refresh_from_db()
    assert result.get() == "failed"
    assert result.state == "SUCCESS"  # no retry scheduled
    assert video.status == Video.Status.FAILED
    assert video.error == "Could not read the file: moov atom not found"
    assert video.hls_prefix == ""
    assert not local_storage.exists(f"videos/{video.uid}")


def test_transcoding_a_ready_video_again_changes_nothing(local_storage, tmp_path_factory):
    # given
    video = _uploaded("1080p", tmp_path_factory.getbasetemp())
    video_transcode.apply(args=[video.pk])
    video.refresh_from_db()
    before = (video.hls_prefix, video.processed_at, _files_under(local_storage, "videos"))

    # when a redelivered message runs it again
    outcome = video_transcode.apply(args=[video.pk]).get()

    # then
    video.refresh_from_db()
    assert outcome == "already ready"
    assert (video.hls_prefix, video.processed_at, _files_under(local_storage, "videos")) == before


def test_a_new_transcode_replaces_the_previous_output_folder(local_storage, tmp_path_factory):
    # given a video transcoded once, then marked for another transcode
    video = _uploaded("1080p", tmp_path_factory.getbasetemp())
    video_transcode.apply(args=[video.pk])
    video.refresh_from_db()
    first_prefix = video.hls_prefix
    Video.objects.filter(pk=video.pk).update(status=Video.Status.UPLOADED)

    # when
    video_transcode.apply(args=[video.pk])

    # then only the new folder is left
    video.refresh_from_db()
    assert video.status == Video.Status.READY
    assert video.hls_prefix != first_prefix
    runs, _files = local_storage.listdir(f"videos/{video.uid}/hls")
    assert runs == [video.hls_prefix.rsplit("/", 1)[1]]


# --- Stale runs --------------------------------------------------------------------------------


def test_stale_and_lost_videos_are_queued_again_and_healthy_ones_are_left_alone(
    local_storage, tmp_path_factory, celery_broker
):
    # given
    now = timezone.now()
    basetemp = tmp_path_factory.getbasetemp()
    dead = _uploaded("garbage", basetemp, title="worker died")
    lost = _uploaded("garbage", basetemp, title="message lost")
    busy = _uploaded("garbage", basetemp, title="still transcoding")
    waiting = _uploaded("garbage", basetemp, title="just uploaded")
    for video, status, age in (
        (dead, Video.Status.PROCESSING, timedelta(minutes=11)),
        (lost, Video.Status.UPLOADED, timedelta(minutes=31)),
        (busy, Video.Status.PROCESSING, timedelta(minutes=1)),
        (waiting, Video.Status.UPLOADED, timedelta(minutes=5)),
    ):
        Video.objects.filter(pk=video.pk).update(status=status, updated_at=now - age)
    published = []

    def record(sender=None, body=None, **kwargs):
        published.append((sender, list(body[0])))

    before_task_publish.connect(record)
    try:
        # when
        count = video_requeue_stale(now=now)
    finally:
        before_task_publish.disconnect(record)

    # then
    assert count == 2
    assert sorted(published) == sorted(
        [("media.tasks.video_transcode", [dead.pk]), ("media.tasks.video_transcode", [lost.pk])]
    )


def test_a_worker_killed_midway_leaves_a_run_the_next_delivery_redoes_from_scratch(
    transactional_db,
    server_protected_storage,
    django_server_env,
    tmp_path,
    tmp_path_factory,
    monkeypatch,
):
    # given a video being transcoded by another process (the command, as a worker would)
    storage = server_protected_storage
    workdirs = tmp_path / "tmp"
    workdirs.mkdir()
    video = _uploaded("720p", tmp_path_factory.getbasetemp(), title="Killed midway")
    Video.objects.filter(pk=video.pk).update(status=Video.Status.UPLOADED)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "transcode_video", str(video.uid)],
        cwd=Path(__file__).resolve().parents[2],
        env={**django_server_env, "TMPDIR": str(workdirs)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: Video.objects.filter(pk=video.pk, progress__gte=10).exists(),
            timeout=120,
            what="the transcode to report progress",
        )
    finally:
        # when it is killed midway
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    killed = Video.objects.get(pk=video.pk)
    leftovers = list(workdirs.glob(f"lodestone-video-{video.uid}-*"))

    # and the message is delivered again
    monkeypatch.setattr(tempfile, "tempdir", str(workdirs))
    outcome = video_transcode.apply(args=[video.pk]).get()

    # then
    assert killed.status == Video.Status.PROCESSING
    assert 10 <= killed.progress < 100
    assert leftovers
    video.refresh_from_db()
    assert outcome == "ready"
    assert video.status == Video.Status.READY
    assert not any(path.exists() for path in leftovers)
    runs, _files = storage.listdir(f"videos/{video.uid}/hls")
    assert runs == [video.hls_prefix.rsplit("/", 1)[1]]


def test_a_second_run_while_one_is_transcoding_leaves_it_alone(
    transactional_db, server_protected_storage, django_server_env, tmp_path_factory
):
    # given a transcode in progress in another process (as on another worker)
    video = _uploaded("720p", tmp_path_factory.getbasetemp(), title="Sent twice")
    first = subprocess.Popen(
        [sys.executable, "manage.py", "transcode_video", str(video.uid)],
        cwd=Path(__file__).resolve().parents[2],
        env=django_server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: Video.objects.filter(pk=video.pk, progress__gte=5).exists(),
            timeout=120,
            what="the first run to report progress",
        )

        # when the same task arrives again (its retries run at once in-process)
        outcome = video_transcode.apply(args=[video.pk]).get()
        during = Video.objects.get(pk=video.pk)
    finally:
        _out, errors = first.communicate(timeout=180)

    # then the second one gave up without touching it, and the first one finished
    assert outcome == "busy"
    assert during.status == Video.Status.PROCESSING
    assert first.returncode == 0, errors
    video.refresh_from_db()
    assert video.status == Video.Status.READY
    runs, _files = storages["protected"].listdir(f"videos/{video.uid}/hls")
    assert len(runs) == 1


# --- S3 (SeaweedFS), in-process ---------------------------------------------------------------


def test_transcoding_onto_s3_stores_playlists_and_segments_with_their_content_types(
    s3_protected_storage, tmp_path_factory
):
    # given
    video = _uploaded("1080p", tmp_path_factory.getbasetemp())

    # when
    outcome = video_transcode.apply(args=[video.pk]).get()

    # then
    video.refresh_from_db()
    assert outcome == "ready"
    client = s3_protected_storage.server.client()
    bucket = s3_protected_storage.server.bucket
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"protected/{video.hls_prefix}/")
    keys = sorted(item["Key"].split(video.hls_prefix + "/", 1)[1] for item in listed["Contents"])
    assert keys == [
        "1080p/index.m3u8",
        "1080p/init_1080p.mp4",
        "1080p/seg_00000.m4s",
        "360p/index.m3u8",
        "360p/init_360p.mp4",
        "360p/seg_00000.m4s",
        "720p/index.m3u8",
        "720p/init_720p.mp4",
        "720p/seg_00000.m4s",
        "master.m3u8",
        "poster.jpg",
    ]

    def content_type(name):
        key = f"protected/{video.hls_prefix}/{name}"
        return client.head_object(Bucket=bucket, Key=key)["ContentType"]

    assert content_type("master.m3u8") == "application/vnd.apple.mpegurl"
    assert content_type("720p/seg_00000.m4s") == "video/iso.segment"
    assert content_type("720p/init_720p.mp4") == "video/mp4"
    assert content_type("poster.jpg") == "image/jpeg"


# --- The live worker ------------------------------------------------------------------------------


def test_an_upload_is_transcoded_by_the_live_worker_showing_progress_on_the_way(
    transactional_db, celery_worker, server_protected_storage, tmp_path_factory
):
    # given the storage the worker uses (the harness gives server processes a local folder)
    video = _uploaded("720p", tmp_path_factory.getbasetemp(), title="Via the worker")
    seen = set()

    # when the admin reports the upload (the task is queued on commit)
    with transaction.atomic():
        video_upload_received(video=Video.objects.get(pk=video.pk))

    # then
    def ready():
        status, progress = Video.objects.values_list("status", "progress").get(pk=video.pk)
        seen.add((status, progress))
        return status in (Video.Status.READY, Video.Status.FAILED)

    wait_until(ready, timeout=180, what="the worker to finish the transcode", interval=0.2)
    video.refresh_from_db()
    assert video.status == Video.Status.READY, video.error
    assert [r["name"] for r in video.renditions] == ["360p", "720p"]
    in_between = {p for status, p in seen if status == Video.Status.PROCESSING and 0 < p < 100}
    assert in_between, f"no progress seen while processing: {sorted(seen)}"
    assert storages["protected"].exists(f"{video.hls_prefix}/720p/seg_00002.m4s")
