from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from . import services

# A long lecture at 1080p takes about real time on two cores. Keep the broker's
# visibility_timeout above this: Redis redelivers an unacknowledged task after it.
TRANSCODE_TIME_LIMIT = int(getattr(settings, "VIDEO_TRANSCODE_TIME_LIMIT", 4 * 3600))


# acks_late + reject_on_worker_lost: a worker killed mid-run leaves the message for the
# next one, which starts from scratch in a fresh temp dir (see services).
@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=8,
    soft_time_limit=TRANSCODE_TIME_LIMIT,
    time_limit=TRANSCODE_TIME_LIMIT + 300,
)
def video_transcode(self, video_id: int) -> str:
    try:
        return services.video_transcode_run(video_id=video_id)
    except services.VideoBusy as exc:
        # Another run holds the video: maybe one about to see the source was replaced.
        if self.request.retries >= self.max_retries:
            return "busy"
        raise self.retry(exc=exc, countdown=60) from exc
    except services.VideoStorageUnavailable as exc:
        if self.request.retries >= self.max_retries:
            services.video_record_failure(video_id=video_id, reason=str(exc))
            return "failed"
        raise self.retry(exc=exc, countdown=min(30 * 2**self.request.retries, 1800)) from exc
    except SoftTimeLimitExceeded:
        services.video_record_failure(
            video_id=video_id,
            reason=f"Processing took longer than {TRANSCODE_TIME_LIMIT // 60} minutes.",
        )
        return "failed"
    except Exception as exc:
        # A bug, not the file: fail visibly rather than loop through the stale re-queue.
        services.video_record_failure(
            video_id=video_id, reason=f"Processing failed unexpectedly ({type(exc).__name__})."
        )
        raise


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=8,
    soft_time_limit=TRANSCODE_TIME_LIMIT,
    time_limit=TRANSCODE_TIME_LIMIT + 300,
)
def video_watermark(self, video_id: int) -> str:
    """The B variant of a video with the forensic watermark on (media/watermark/)."""
    from .watermark import services as watermark_services

    try:
        return watermark_services.video_watermark_run(video_id=video_id)
    except services.VideoBusy as exc:
        # The transcode (or another run) holds the video: it is usually almost done.
        if self.request.retries >= self.max_retries:
            return "busy"
        raise self.retry(exc=exc, countdown=30) from exc
    except services.VideoStorageUnavailable as exc:
        if self.request.retries >= self.max_retries:
            watermark_services.video_watermark_record_failure(video_id=video_id, reason=str(exc))
            return "failed"
        raise self.retry(exc=exc, countdown=min(30 * 2**self.request.retries, 1800)) from exc
    except SoftTimeLimitExceeded:
        watermark_services.video_watermark_record_failure(
            video_id=video_id,
            reason=f"The watermark took longer than {TRANSCODE_TIME_LIMIT // 60} minutes.",
        )
        return "failed"
    except Exception as exc:
        watermark_services.video_watermark_record_failure(
            video_id=video_id,
            reason=f"The watermark failed unexpectedly ({type(exc).__name__}).",
        )
        raise


@shared_task
def video_requeue_stale() -> int:
    return services.video_requeue_stale()


@shared_task(bind=True, acks_late=True, max_retries=5)
def video_files_delete(self, uid: str, source_name: str = "") -> str:
    try:
        services.video_files_remove(uid=uid, source_name=source_name)
    except Exception as exc:
        if not services.is_transient_storage_error(exc) or self.request.retries >= 5:
            raise
        raise self.retry(exc=exc, countdown=60 * 2**self.request.retries) from exc
    return "deleted"


from .stamping.tasks import download_prepare  # noqa: E402,F401  (registers the task)
