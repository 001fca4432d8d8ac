from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from . import services

# A long lecture at 1080p takes about real time on two cores. Keep the broker's
# visibility_timeout above this: Redis redelivers an unacknowledged task after it.
TRANSCODE_TIME_LIMIT = int(getattr(settings, "VIDEO_TRANSCODE_TIME_LIMIT", 4 * 3600))


def _run_video_job(task, video_id: int, *, run, record_failure, what: str, busy_countdown: int):
    """Run one long video job (transcode or watermark) with the retry and failure policy
    both share: wait while another run holds the video, back off while storage is down,
    and record a failure the creator can read for a timeout or a bug."""
    try:
        return run(video_id=video_id)
    except services.VideoBusy as exc:
        # Another run holds the video: usually one about to finish or to see a new source.
        if task.request.retries >= task.max_retries:
            return "busy"
        raise task.retry(exc=exc, countdown=busy_countdown) from exc
    except services.VideoStorageUnavailable as exc:
        if task.request.retries >= task.max_retries:
            record_failure(video_id=video_id, reason=str(exc))
            return "failed"
        raise task.retry(exc=exc, countdown=min(30 * 2**task.request.retries, 1800)) from exc
    except SoftTimeLimitExceeded:
        record_failure(
            video_id=video_id,
            reason=f"{what} took longer than {TRANSCODE_TIME_LIMIT // 60} minutes.",
        )
        return "failed"
    except Exception as exc:
        # A bug, not the file: fail visibly rather than loop through the stale re-queue.
        record_failure(
            video_id=video_id, reason=f"{what} failed unexpectedly ({type(exc).__name__})."
        )
        raise


# acks_late + reject_on_worker_lost: a worker killed mid-run leaves the message for the
# next one, which starts from scratch in a fresh temp dir (see services).
VIDEO_JOB = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": 8,
    "soft_time_limit": TRANSCODE_TIME_LIMIT,
    "time_limit": TRANSCODE_TIME_LIMIT + 300,
}


@shared_task(**VIDEO_JOB)
def video_transcode(self, video_id: int) -> str:
    return _run_video_job(
        self,
        video_id,
        run=services.video_transcode_run,
        record_failure=services.video_record_failure,
        what="Processing",
        busy_countdown=60,
    )


@shared_task(**VIDEO_JOB)
def video_watermark(self, video_id: int) -> str:
    """The B variant of a video with the forensic watermark on (media/watermark/)."""
    from .watermark import services as watermark_services

    return _run_video_job(
        self,
        video_id,
        run=watermark_services.video_watermark_run,
        record_failure=watermark_services.video_watermark_record_failure,
        what="The watermark",
        busy_countdown=30,
    )


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
