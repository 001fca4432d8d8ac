"""Sample videos made with ffmpeg for the video tests, and what ffprobe reads from them.

The samples (and one transcode of the 720p sample) are made once per session and shared
by the test_video_* modules through the helpers here; each test copies what it needs
into its own storage.
"""

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.files import File
from django.core.files.base import ContentFile

from media import transcode
from media.models import Video
from media.services import CONTENT_TYPES

# 13 s: two full 6 s segments and a 1 s one.
SAMPLE_720P_SECONDS = 13


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=120,
    )


@functools.cache
def sample(basetemp: Path, kind: str) -> Path:
    """A source file: "720p" (1280x720, 13 s, tone), "1080p" (1920x1080, 2 s, tone),
    "garbage" (random bytes named .mp4). Made once per session."""
    folder = basetemp / "video-samples"
    folder.mkdir(exist_ok=True)
    path = folder / f"{kind}.mp4"
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) * 400)
        return path
    size, seconds = {"720p": ("1280x720", SAMPLE_720P_SECONDS), "1080p": ("1920x1080", 2)}[kind]
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=30:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "28",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    )
    return path


@functools.cache
def transcoded_720p(basetemp: Path) -> transcode.HlsResult:
    """The 720p sample as media.transcode writes it, made once per session."""
    folder = basetemp / "video-samples" / "hls-720p"
    shutil.rmtree(folder, ignore_errors=True)
    return transcode.transcode_to_hls(sample(basetemp, "720p"), folder)


def install_ready_video(storage, result: transcode.HlsResult, *, title: str = "Lesson 1") -> Video:
    """A READY video whose HLS files (a copy of `result`) are in `storage`, as the
    transcode task leaves it."""
    video = Video(title=title)
    video.source.save("lesson.mp4", ContentFile(b"source"), save=False)
    video.save()
    prefix = f"videos/{video.uid}/hls/test0001"
    for relative in transcode.folder_files(result.folder):
        with (result.folder / relative).open("rb") as handle:
            content = File(handle, name=relative.name)
            content.content_type = CONTENT_TYPES.get(relative.suffix, "application/octet-stream")
            storage.save(f"{prefix}/{relative.as_posix()}", content)
    Video.objects.filter(pk=video.pk).update(
        status=Video.Status.READY,
        progress=100,
        hls_prefix=prefix,
        renditions=[r.as_json() for r in result.renditions],
        poster=f"{prefix}/{result.poster}",
        duration_seconds=sum(result.renditions[0].segment_durations),
        width=1280,
        height=720,
    )
    video.refresh_from_db()
    return video


def ffprobe_json(path: Path | str, *args: str) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


# --- What probe() reads --------------------------------------------------------------------


def test_probe_reads_duration_size_and_audio_of_a_video(tmp_path_factory):
    # given
    source = sample(tmp_path_factory.getbasetemp(), "720p")

    # when
    info = transcode.probe(source)

    # then
    assert info.width == 1280
    assert info.height == 720
    assert info.has_audio
    assert info.frame_rate == pytest.approx(30)
    assert info.duration == pytest.approx(SAMPLE_720P_SECONDS, abs=0.1)


def test_probe_refuses_a_file_that_is_no_video_with_ffprobes_own_words(tmp_path_factory):
    # given
    source = sample(tmp_path_factory.getbasetemp(), "garbage")

    # when
    with pytest.raises(transcode.SourceUnreadable) as refused:
        transcode.probe(source)

    # then the reason is ffprobe's first error line, without its "[mov,mp4,… @ 0x…]"
    assert refused.value.reason == "Could not read the file: moov atom not found"


def test_probe_swaps_width_and_height_of_a_video_recorded_upright(tmp_path):
    # given a phone video: stored landscape, with a display matrix turning it 90°
    landscape = tmp_path / "landscape.mp4"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(landscape),
    )
    upright = tmp_path / "upright.mp4"
    _ffmpeg("-i", str(landscape), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(upright))

    # when
    info = transcode.probe(upright)

    # then
    assert (info.width, info.height) == (360, 640)


def test_ladder_never_scales_up_and_adds_1080p_only_for_full_hd_sources():
    def names(width, height):
        info = transcode.SourceInfo(
            duration=10, width=width, height=height, has_audio=True, frame_rate=30
        )
        return [(p.name, p.width, p.height) for p in transcode.rendition_ladder(info)]

    assert names(1280, 720) == [("360p", 640, 360), ("720p", 1280, 720)]
    assert names(1920, 1080) == [("360p", 640, 360), ("720p", 1280, 720), ("1080p", 1920, 1080)]
    assert names(3840, 2160)[-1] == ("1080p", 1920, 1080)
    # a 480p webcam recording: 360p and its own size, nothing larger
    assert names(854, 480) == [("360p", 640, 360), ("480p", 854, 480)]
    # a tiny screen capture: only its own size
    assert names(320, 240) == [("240p", 320, 240)]
    # portrait: the rung is the short side
    assert names(1080, 1920) == [("360p", 360, 640), ("720p", 720, 1280), ("1080p", 1080, 1920)]
