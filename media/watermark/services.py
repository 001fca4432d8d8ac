"""Writes for forensic watermarking: the creator's switch, the B-variant run, the ledger.

Policy while the B variant is made: a video with the switch on does not stream at all
(the player shows "Adding the forensic watermark" with progress) — never unmarked. The
run is queued when a transcode of a video with the switch on finishes, and when the
switch is turned on for a ready video. It holds the same per-video lock as the
transcode, and every write is conditional on the HLS output it started from, so a
re-upload meanwhile turns it into a no-op (as in media.services).
"""

import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .. import services as video_services
from .. import transcode
from ..models import Video, VideoDelivery, WatermarkStatus
from ..storage import protected_storage
from . import code, mark

logger = logging.getLogger(__name__)

ENCODE_SHARE = 75  # percent of the bar for the B encode; the reference and upload follow
REFERENCE_SHARE = 20


class _Progress:
    def __init__(self, video_id: int, hls_prefix: str, echo: Callable[[int], None] | None):
        self.video_id, self.hls_prefix, self.echo = video_id, hls_prefix, echo
        self.written, self.written_at = 0, time.monotonic()

    def update(self, percent: int, **fields) -> None:
        percent = max(0, min(99, percent))
        if self.echo:
            self.echo(percent)
        now = time.monotonic()
        moved = percent >= self.written + video_services.PROGRESS_STEP
        if not fields and not moved and now - self.written_at < video_services.HEARTBEAT_SECONDS:
            return
        if not _mine(self.video_id, self.hls_prefix).update(
            watermark_progress=percent, updated_at=timezone.now(), **fields
        ):
            raise video_services.VideoSuperseded
        self.written, self.written_at = percent, now

    def heartbeat(self) -> None:
        self.update(self.written)


def _mine(video_id: int, hls_prefix: str):
    return Video.objects.filter(
        pk=video_id,
        status=Video.Status.READY,
        hls_prefix=hls_prefix,
        watermark_status=WatermarkStatus.PROCESSING,
    )


# --- The switch ---------------------------------------------------------------------------


@transaction.atomic
def video_watermark_switch(*, video: Video, enabled: bool) -> Video:
    """Turn forensic watermarking on or off for a video; on queues the B variant.

    Off keeps a finished B variant, so turning it on again is immediate."""
    from ..tasks import video_watermark

    Video.objects.filter(pk=video.pk).update(forensic_watermark=enabled, updated_at=timezone.now())
    video.refresh_from_db()
    if not enabled:
        if video.watermark_status != WatermarkStatus.READY:
            Video.objects.filter(pk=video.pk).exclude(
                watermark_status=WatermarkStatus.READY
            ).update(watermark_status=WatermarkStatus.OFF, watermark_progress=0)
    elif not video.is_marked:
        if video.watermark.get("hls_prefix") == video.hls_prefix and video.hls_prefix:
            # Made before the switch went off, for this very output.
            Video.objects.filter(pk=video.pk).update(watermark_status=WatermarkStatus.READY)
        else:
            Video.objects.filter(pk=video.pk).update(
                watermark_status=WatermarkStatus.WAITING, watermark_progress=0, watermark_error=""
            )
            if video.status == Video.Status.READY:
                video_watermark.delay_on_commit(video.pk)
    video.refresh_from_db()
    return video


@transaction.atomic
def video_watermarks_set(*, on: Iterable[int] = (), off: Iterable[int] = ()) -> list[int]:
    """Flip the switch of the given videos to the wanted state; returns the ids flipped.

    For callers that decide for many videos at once (a course's switch, courses/watermark.py).
    Rows are locked in id order and the flag re-read under the lock, so two publishes at
    once flip a video once: switching on a video already on would re-queue its B variant
    and supersede the run in progress."""
    wanted = {pk: True for pk in on}
    wanted.update({pk: False for pk in off if pk not in wanted})
    flipped = []
    videos = Video.objects.select_for_update().filter(pk__in=wanted).order_by("pk")
    for video in videos:
        if video.forensic_watermark != wanted[video.pk]:
            video_watermark_switch(video=video, enabled=wanted[video.pk])
            flipped.append(video.pk)
    return flipped


def video_watermark_after_transcode(*, video_id: int) -> None:
    """A fresh HLS output: any earlier B variant belongs to the old one."""
    from ..tasks import video_watermark

    Video.objects.filter(pk=video_id, forensic_watermark=False).update(
        watermark_status=WatermarkStatus.OFF, watermark_progress=0, watermark={}
    )
    if Video.objects.filter(pk=video_id, forensic_watermark=True).update(
        watermark_status=WatermarkStatus.WAITING,
        watermark_progress=0,
        watermark_error="",
        watermark={},
    ):
        video_watermark.delay_on_commit(video_id)


def video_watermark_record_failure(*, video_id: int, reason: str) -> None:
    Video.objects.filter(pk=video_id, watermark_status=WatermarkStatus.PROCESSING).update(
        watermark_status=WatermarkStatus.FAILED,
        watermark_error=reason[:2000],
        watermark_progress=0,
        updated_at=timezone.now(),
    )


def video_watermark_requeue_stale(*, now=None) -> int:
    from ..tasks import video_watermark

    now = now or timezone.now()
    stale = Q(
        watermark_status=WatermarkStatus.PROCESSING,
        updated_at__lt=now - video_services.STALE_PROCESSING_AFTER,
    ) | Q(
        watermark_status=WatermarkStatus.WAITING,
        updated_at__lt=now - video_services.LOST_UPLOAD_AFTER,
    )
    ids = list(
        Video.objects.filter(stale, status=Video.Status.READY, forensic_watermark=True).values_list(
            "pk", flat=True
        )[:200]
    )
    Video.objects.filter(pk__in=ids).update(updated_at=now)
    for pk in ids:
        video_watermark.delay(pk)
    return len(ids)


# --- The run ------------------------------------------------------------------------------------


def video_watermark_run(
    *, video_id: int, echo_progress: Callable[[int], None] | None = None
) -> str:
    """Make the B variant of the video's current HLS output; returns what happened.

    Raises VideoBusy (a transcode or another run holds the video) and
    VideoStorageUnavailable (retry)."""
    with video_services._run_lock(video_id) as locked:
        if not locked:
            raise video_services.VideoBusy(f"Video {video_id} is being processed elsewhere.")
        video = Video.objects.filter(pk=video_id).first()
        if video is None:
            return "gone"
        if video.status != Video.Status.READY or not video.forensic_watermark:
            return "not needed"
        if video.is_marked:
            return "already ready"
        hls_prefix = video.hls_prefix
        claimed = (
            Video.objects.filter(
                pk=video_id,
                status=Video.Status.READY,
                hls_prefix=hls_prefix,
                forensic_watermark=True,
            )
            .exclude(watermark_status=WatermarkStatus.READY)
            .update(
                watermark_status=WatermarkStatus.PROCESSING,
                watermark_progress=0,
                watermark_error="",
                updated_at=timezone.now(),
            )
        )
        if not claimed:
            return "changed meanwhile"
        progress = _Progress(video_id, hls_prefix, echo_progress)
        storage = protected_storage()
        prefix = f"{hls_prefix}/mark-{timezone.now():%Y%m%d%H%M%S}{secrets.token_hex(3)}"
        try:
            return _run_claimed(video, storage, prefix, progress)
        except video_services.VideoSuperseded:
            video_services.delete_tree(storage, prefix)
            return "superseded"


def _fail(video: Video, reason: str) -> str:
    logger.info("Watermark of video %s failed: %s", video.pk, reason)
    video_watermark_record_failure(video_id=video.pk, reason=reason)
    return "failed"


def _run_claimed(video: Video, storage, prefix: str, progress: _Progress) -> str:
    top = mark.top_rendition(video.renditions)
    _init, entries = mark.stored_entries(storage, f"{video.hls_prefix}/{top['playlist']}")
    durations = [duration for duration, _uri in entries]
    segment_seconds = max(1, round(durations[0])) if durations else transcode.SEGMENT_SECONDS
    try:
        params = code.CodeParams.for_segments(len(durations))
    except code.CodeTooShort as exc:
        return _fail(
            video,
            f"This video is too short for a forensic watermark: {exc} "
            f"(segments are {segment_seconds} s long here).",
        )
    with tempfile.TemporaryDirectory(prefix=video_services._workdir_prefix(video)) as workdir:
        workdir = Path(workdir)
        try:
            source = video_services._local_source(storage, video.source.name, workdir, progress)
            info = transcode.probe(source)
            the_mark = mark.choose_mark(source)
            result = transcode.transcode_to_hls(
                source,
                workdir / "b",
                info=info,
                segment_seconds=segment_seconds,
                mark=the_mark,
                on_progress=lambda f: progress.update(int(f * ENCODE_SHARE)),
            )
        except transcode.TranscodeError as exc:
            return _fail(video, exc.reason)
        problem = _misaligned(storage, video, result)
        if problem:
            return _fail(video, problem)
        a_file, b_file = workdir / "a.mp4", workdir / "b.mp4"
        mark.concat_stored_rendition(storage, video.hls_prefix, top["playlist"], a_file)
        progress.update(ENCODE_SHARE + REFERENCE_SHARE // 4)
        mark.concat_local_rendition(result.folder, top["playlist"], b_file)
        reference = mark.build_reference(
            a_file=a_file,
            b_file=b_file,
            rate=transcode.output_frame_rate(info),
            durations=durations,
            mark=the_mark,
        )
        a_file.unlink()
        b_file.unlink()
        (result.folder / mark.REFERENCE_NAME).write_bytes(reference.to_bytes())
        progress.update(ENCODE_SHARE + REFERENCE_SHARE)
        video_services._upload_folder(storage, result.folder, prefix, progress)
    info_json = {
        "hls_prefix": video.hls_prefix,
        "prefix": prefix,
        "cell": [the_mark.column, the_mark.row],
        "strength": the_mark.strength,
        "segments": len(durations),
        "segment_seconds": segment_seconds,
        "code": params.as_json(),
        "reference": f"{prefix}/{mark.REFERENCE_NAME}",
    }
    finished = _mine(video.pk, video.hls_prefix).update(
        watermark_status=WatermarkStatus.READY,
        watermark_progress=100,
        watermark_error="",
        watermark=info_json,
        updated_at=timezone.now(),
    )
    if not finished:
        raise video_services.VideoSuperseded
    if progress.echo:
        progress.echo(100)
    _delete_other_marks(storage, video.hls_prefix, keep=prefix)
    logger.info("Video %s: B variant ready (cell %s, %s)", video.pk, info_json["cell"], params)
    return "ready"


def _misaligned(storage, video: Video, result: transcode.HlsResult) -> str:
    """Why B cannot be switched with A segment by segment, or "" when it can."""
    by_name = {r.name: r for r in result.renditions}
    for rendition in video.renditions:
        b = by_name.get(rendition["name"])
        if b is None:
            return f"The B variant has no {rendition['name']} rendition."
        a_init, a_entries = mark.stored_entries(
            storage, f"{video.hls_prefix}/{rendition['playlist']}"
        )
        b_init, b_entries = transcode.media_playlist_entries(
            (result.folder / rendition["playlist"]).read_text()
        )
        if [(round(d, 3), u) for d, u in a_entries] != [(round(d, 3), u) for d, u in b_entries]:
            return (
                f"The B variant's {rendition['name']} segments do not line up with the video's "
                "(ffmpeg cut them differently). Transcode the video again, then retry."
            )
        folder = rendition["playlist"].rsplit("/", 1)[0]
        with storage.open(f"{video.hls_prefix}/{folder}/{a_init}", "rb") as handle:
            same_init = handle.read() == (result.folder / folder / (b_init or "")).read_bytes()
        if not same_init:
            return (
                f"The B variant's {rendition['name']} init segment differs from the video's "
                "(another ffmpeg version made it?). Transcode the video again, then retry."
            )
    return ""


def _delete_other_marks(storage, hls_prefix: str, *, keep: str) -> None:
    try:
        dirs, _files = storage.listdir(hls_prefix)
    except FileNotFoundError:
        return
    for name in dirs:
        if name.startswith("mark-") and f"{hls_prefix}/{name}" != keep:
            video_services.delete_tree(storage, f"{hls_prefix}/{name}")


# --- The ledger ----------------------------------------------------------------------------------


def _existing(video: Video, user) -> VideoDelivery | None:
    if user is not None and user.is_authenticated:
        return VideoDelivery.objects.filter(video=video, user=user).first()
    return VideoDelivery.objects.filter(video=video, anonymous=True).first()


def video_delivery_ensure(
    *, video: Video, user, ip_address: str | None = None, user_agent: str = ""
) -> VideoDelivery:
    """The viewer's delivery of a marked video: their codeword, made on first request.

    Two first requests at once: the unique constraints let one insert win; the other
    reads the winner's row. A random id already taken (by chance) is drawn again."""
    params = code.CodeParams(**video.watermark["code"])
    found = _existing(video, user)
    if found is not None:
        if len(found.codeword) != params.bits:
            # The video was watermarked again with another code length: same id, new word.
            found.codeword = code.encode(found.message, params)
            VideoDelivery.objects.filter(pk=found.pk).update(codeword=found.codeword)
        return found
    signed_in = user is not None and user.is_authenticated
    for _attempt in range(10):
        message = code.random_message(params)
        try:
            with transaction.atomic():
                return VideoDelivery.objects.create(
                    video=video,
                    user=user if signed_in else None,
                    anonymous=not signed_in,
                    viewer_email=user.email if signed_in else "",
                    message=message,
                    codeword=code.encode(message, params),
                    ip_address=ip_address,
                    user_agent=(user_agent or "")[:500],
                )
        except IntegrityError:
            found = _existing(video, user)
            if found is not None:
                return found
    raise RuntimeError(f"Could not draw a free delivery id for video {video.pk}.")
