"""Writes for videos: upload received, the transcode run, stale re-queueing, deletion.

A transcode may be started twice for one video (a redelivered message, the stale
re-queue, a second click), even at the same moment. What keeps that safe:
- On PostgreSQL a session advisory lock per video is held for the whole run, so only one
  run works on a video at a time; the lock dies with the worker's connection, so a run
  whose worker was killed leaves no lock behind. (SQLite, the single-worker demo, has no
  such lock and relies on the status guard alone.)
- Every write of the run is conditional on (status=PROCESSING, the source it started
  from): a video re-uploaded or deleted meanwhile turns the run's writes into no-ops, and
  the run stops (VideoSuperseded) and removes what it uploaded.
- Output goes to a folder of its own, videos/<uid>/hls/<run>/, switched to in one row
  update at the end; older folders (a previous transcode, a killed run's partial upload)
  are deleted only after that.
"""

import contextlib
import logging
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path, PurePosixPath

from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from . import transcode
from .models import Video
from .storage import is_s3, protected_storage

logger = logging.getLogger(__name__)

# Progress is written when it has moved this many percent, or HEARTBEAT_SECONDS have
# passed: updated_at doubles as the run's heartbeat.
PROGRESS_STEP = 2
HEARTBEAT_SECONDS = 30
# The share of the progress bar for ffmpeg; the upload takes the rest.
TRANSCODE_SHARE = 95
# PROCESSING without a heartbeat this long: its worker died. UPLOADED this long: its
# message never reached a worker. Both are queued again (harmless if wrong: see above).
STALE_PROCESSING_AFTER = timedelta(minutes=10)
LOST_UPLOAD_AFTER = timedelta(minutes=30)
S3_THREADS = 8
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".ts": "video/mp2t",
    ".jpg": "image/jpeg",
}
_LOCK_NAMESPACE = 0x4C4F4453 << 32  # "LODS": keeps our advisory lock keys apart


class VideoBusy(Exception):
    """Another live run holds this video."""


class VideoSuperseded(Exception):
    """The video was re-uploaded or deleted while this run worked on it."""


class VideoStorageUnavailable(Exception):
    """Reading the source or storing the output failed in a way worth retrying."""


def segment_seconds() -> int:
    """HLS segment length for new transcodes. A forensic watermark needs enough segments
    to carry a codeword (media/watermark/code.py): shorter segments suit short lessons."""
    return int(getattr(settings, "VIDEO_SEGMENT_SECONDS", transcode.SEGMENT_SECONDS))


def is_transient_storage_error(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or code in {"SlowDown", "RequestTimeout", "Throttling"}
    return isinstance(exc, BotoCoreError | S3UploadFailedError | S3TransferFailedError | OSError)


# --- Upload received -----------------------------------------------------------------------


@transaction.atomic
def video_upload_received(*, video: Video) -> Video:
    """A new or replaced source: mark the video waiting and queue its transcode on commit."""
    from .tasks import video_transcode

    video_transcode_reset(video=video)
    video_transcode.delay_on_commit(video.pk)
    return video


def video_transcode_reset(*, video: Video) -> Video:
    """Mark a video for a fresh transcode without queueing one (the command runs it inline)."""
    Video.objects.filter(pk=video.pk).update(
        status=Video.Status.UPLOADED, progress=0, error="", updated_at=timezone.now()
    )
    video.status, video.progress, video.error = Video.Status.UPLOADED, 0, ""
    return video


@transaction.atomic
def video_delete(*, video: Video) -> None:
    """Delete the row, then its files once that commits."""
    uid, source = str(video.uid), video.source.name
    video.delete()
    video_files_discard(uid=uid, source_name=source)


def video_files_discard(*, uid: str, source_name: str) -> None:
    """Queue the deletion of a deleted video's files (source, every HLS folder) on commit."""
    from .tasks import video_files_delete

    video_files_delete.delay_on_commit(uid, source_name)


def video_files_remove(*, uid: str = "", source_name: str = "") -> None:
    storage = protected_storage()
    if uid:
        delete_tree(storage, f"videos/{uuid.UUID(uid)}")
    if source_name and storage.exists(source_name):
        storage.delete(source_name)


@transaction.atomic
def video_source_replaced(*, video: Video, old_source_name: str) -> Video:
    """The creator uploaded a new file for an existing video: transcode it again."""
    if old_source_name and old_source_name != video.source.name:
        video_files_discard(uid="", source_name=old_source_name)
    return video_upload_received(video=video)


def video_requeue_stale(*, now=None) -> int:
    """Queue again videos whose run died or whose message was lost; returns how many."""
    from .tasks import video_transcode

    now = now or timezone.now()
    stale = Q(status=Video.Status.PROCESSING, updated_at__lt=now - STALE_PROCESSING_AFTER) | Q(
        status=Video.Status.UPLOADED, updated_at__lt=now - LOST_UPLOAD_AFTER
    )
    ids = list(Video.objects.filter(stale).values_list("pk", flat=True)[:200])
    # Touch them, so a video still waiting behind a long queue is sent again only after
    # another full interval, not at every beat.
    Video.objects.filter(pk__in=ids).update(updated_at=now)
    for pk in ids:
        video_transcode.delay(pk)
    from .watermark.services import video_watermark_requeue_stale

    return len(ids) + video_watermark_requeue_stale(now=now)


def video_record_failure(*, video_id: int, reason: str) -> None:
    Video.objects.filter(pk=video_id, status=Video.Status.PROCESSING).update(
        status=Video.Status.FAILED, error=reason[:2000], progress=0, updated_at=timezone.now()
    )


# --- The transcode run ---------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(video_id: int) -> Iterator[bool]:
    if connection.vendor != "postgresql":
        yield True
        return
    key = _LOCK_NAMESPACE | (video_id & 0xFFFFFFFF)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        locked = cursor.fetchone()[0]
    try:
        yield locked
    finally:
        if locked:
            with contextlib.suppress(Exception), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


class _Progress:
    """Writes progress (and the heartbeat) for a claimed run, at most every PROGRESS_STEP %."""

    def __init__(self, video_id: int, source_name: str, echo: Callable[[int], None] | None) -> None:
        self.video_id, self.source_name, self.echo = video_id, source_name, echo
        self.written, self.written_at = 0, time.monotonic()

    def _mine(self):
        return Video.objects.filter(
            pk=self.video_id, status=Video.Status.PROCESSING, source=self.source_name
        )

    def update(self, percent: int, **fields) -> None:
        percent = max(0, min(99, percent))
        if self.echo:
            self.echo(percent)
        now = time.monotonic()
        moved = percent >= self.written + PROGRESS_STEP
        if not fields and not moved and now - self.written_at < HEARTBEAT_SECONDS:
            return
        if not self._mine().update(progress=percent, updated_at=timezone.now(), **fields):
            raise VideoSuperseded
        self.written, self.written_at = percent, now

    def transcoding(self, fraction: float) -> None:
        self.update(int(fraction * TRANSCODE_SHARE))

    def heartbeat(self) -> None:
        self.update(self.written)


def video_transcode_run(
    *, video_id: int, echo_progress: Callable[[int], None] | None = None
) -> str:
    """Transcode one video from scratch; returns what happened, for the task's result.

    Raises VideoBusy (another run holds the video) and VideoStorageUnavailable (retry);
    an unreadable source ends as FAILED with the first error line of ffprobe/ffmpeg.
    """
    with _run_lock(video_id) as locked:
        if not locked:
            raise VideoBusy(f"Video {video_id} is being transcoded by another worker.")
        video = Video.objects.filter(pk=video_id).first()
        if video is None:
            return "gone"
        if video.status not in (Video.Status.UPLOADED, Video.Status.PROCESSING):
            return f"already {video.status}"
        source_name = video.source.name
        claimed = Video.objects.filter(
            pk=video_id,
            status__in=[Video.Status.UPLOADED, Video.Status.PROCESSING],
            source=source_name,
        ).update(status=Video.Status.PROCESSING, progress=0, error="", updated_at=timezone.now())
        if not claimed:
            return "changed meanwhile"
        progress = _Progress(video_id, source_name, echo_progress)
        storage = protected_storage()
        run = f"{timezone.now():%Y%m%d%H%M%S}{secrets.token_hex(3)}"
        prefix = f"videos/{video.uid}/hls/{run}"
        try:
            return _transcode_claimed(video, storage, source_name, prefix, progress)
        except VideoSuperseded:
            delete_tree(storage, prefix)
            return "superseded"


def _transcode_claimed(
    video: Video, storage: Storage, source_name: str, prefix: str, progress: _Progress
) -> str:
    _remove_abandoned_workdirs(video)
    with tempfile.TemporaryDirectory(prefix=_workdir_prefix(video)) as workdir:
        workdir = Path(workdir)
        try:
            # Before fetching the source: a missing ffmpeg is the machine's problem, and
            # the creator reads how to fix it on the video's status.
            transcode.tools_check()
            source = _local_source(storage, source_name, workdir, progress)
            info = transcode.probe(source)
            progress.update(0, duration_seconds=info.duration, width=info.width, height=info.height)
            result = transcode.transcode_to_hls(
                source,
                workdir / "hls",
                info=info,
                on_progress=progress.transcoding,
                segment_seconds=segment_seconds(),
            )
        except transcode.TranscodeError as exc:
            logger.info("Video %s failed: %s", video.pk, exc.reason)
            video_record_failure(video_id=video.pk, reason=exc.reason)
            return "failed"
        _upload_folder(storage, result.folder, prefix, progress)
    renditions = [r.as_json() for r in result.renditions]
    finished = Video.objects.filter(
        pk=video.pk, status=Video.Status.PROCESSING, source=source_name
    ).update(
        status=Video.Status.READY,
        progress=100,
        error="",
        hls_prefix=prefix,
        renditions=renditions,
        poster=f"{prefix}/{result.poster}" if result.poster else "",
        duration_seconds=info.duration,
        width=info.width,
        height=info.height,
        processed_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if not finished:
        raise VideoSuperseded
    if progress.echo:
        progress.echo(100)
    _delete_other_runs(storage, video, keep=prefix)
    from .watermark.services import video_watermark_after_transcode

    video_watermark_after_transcode(video_id=video.pk)
    logger.info(
        "Video %s ready: %s in %.1f s",
        video.pk,
        ", ".join(r["name"] for r in renditions),
        result.seconds_spent,
    )
    return "ready"


def _workdir_prefix(video: Video) -> str:
    return f"lodestone-video-{video.uid}-"


def _remove_abandoned_workdirs(video: Video) -> None:
    """A killed run leaves its temp folder; we hold the video's lock, so it is dead."""
    for leftover in Path(tempfile.gettempdir()).glob(_workdir_prefix(video) + "*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _local_source(storage: Storage, name: str, workdir: Path, progress: _Progress) -> Path:
    """A path ffmpeg can read: the file itself on local storage, a downloaded copy on S3."""
    try:
        return Path(storage.path(name))
    except NotImplementedError:
        pass
    target = workdir / ("source" + PurePosixPath(name).suffix.lower())
    try:
        with storage.open(name, "rb") as remote, target.open("wb") as local:
            while chunk := remote.read(8 * 1024 * 1024):
                local.write(chunk)
                progress.heartbeat()
    except FileNotFoundError as exc:
        raise transcode.SourceUnreadable("The uploaded file is missing from storage.") from exc
    except Exception as exc:
        if is_transient_storage_error(exc):
            raise VideoStorageUnavailable(f"Could not read the uploaded file: {exc}") from exc
        raise
    return target


def _upload_folder(storage: Storage, folder: Path, prefix: str, progress: _Progress) -> None:
    files = transcode.folder_files(folder)

    def put(relative: Path) -> None:
        name = f"{prefix}/{relative.as_posix()}"
        with (folder / relative).open("rb") as handle:
            content = File(handle, name=relative.name)
            content.content_type = CONTENT_TYPES.get(relative.suffix, "application/octet-stream")
            saved = storage.save(name, content)
        if saved != name:
            # The folder is new: something else is writing into it.
            storage.delete(saved)
            raise VideoStorageUnavailable(f"{name} already existed in storage.")

    threads = S3_THREADS if is_s3(storage) else 1
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for done, _ in enumerate(pool.map(put, files), start=1):
                progress.update(TRANSCODE_SHARE + (100 - TRANSCODE_SHARE) * done // len(files))
    except VideoSuperseded:
        raise
    except Exception as exc:
        delete_tree(storage, prefix)
        if isinstance(exc, VideoStorageUnavailable) or is_transient_storage_error(exc):
            raise VideoStorageUnavailable(f"Could not store the video: {exc}") from exc
        raise


def _delete_other_runs(storage: Storage, video: Video, *, keep: str) -> None:
    root = f"videos/{video.uid}/hls"
    try:
        runs, _files = storage.listdir(root)
    except FileNotFoundError:
        return
    for run in runs:
        if f"{root}/{run}" != keep:
            delete_tree(storage, f"{root}/{run}")


def delete_tree(storage: Storage, prefix: str) -> None:
    """Delete every file under `prefix` (and, on local disk, the folders)."""
    try:
        path = storage.path(prefix)
    except NotImplementedError:
        path = None
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        return
    names: list[str] = []

    def collect(folder: str) -> None:
        try:
            dirs, files = storage.listdir(folder)
        except FileNotFoundError:
            return
        names.extend(f"{folder}/{name}" for name in files)
        for sub in dirs:
            collect(f"{folder}/{sub}")

    collect(prefix)
    with ThreadPoolExecutor(max_workers=S3_THREADS) as pool:
        list(pool.map(storage.delete, names))
