"""Processing of stored sign-ups: the opt-in request stores one row and wakes a drain
(funnels.services.signup_wake), and the sweep queues one for what nothing woke. A sign-up
that fails in a drain, the creator's retry, and sites without a shared cache use the
per-sign-up task with its retries."""

import contextlib
import logging

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from . import services

logger = logging.getLogger(__name__)

MAX_RETRIES = 8
BACKOFF_CAP = 1800


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True)
def signup_process_task(self, signup_id: int) -> str:
    """Idempotent: the sign-up row is locked and processed once, so a duplicate message
    (the sweep re-queued it, a worker died after the commit) finds it done."""
    try:
        return services.signup_process(signup_id=signup_id)
    except (DatabaseError, InterfaceError) as exc:
        # Database trouble (a restart, a deadlock, a lost connection): worth another try.
        final = self.request.retries >= self.max_retries
        # Still down, perhaps: then the retry (or the sweep) comes back to it.
        with contextlib.suppress(DatabaseError):
            services.signup_record_failure(signup_id=signup_id, error=repr(exc), final=final)
        if final:
            return "failed"
        raise self.retry(exc=exc, countdown=min(10 * 2**self.request.retries, BACKOFF_CAP)) from exc
    except Exception as exc:
        # A bug, not the database: mark the sign-up failed, where the creator sees it and can
        # retry it, instead of letting the sweep re-queue it every minute unseen.
        services.signup_record_failure(
            signup_id=signup_id,
            error=f"Processing failed unexpectedly ({type(exc).__name__}: {exc})",
            final=True,
        )
        raise


@shared_task(acks_late=True)
def signup_drain_task(after_id: int = 0) -> int:
    """Process the sign-ups waiting after `after_id`, a batch at a time. A full batch first
    queues a drain of the next one, so a burst spreads over every worker process."""
    if not after_id:
        services.signup_wake_clear()  # before reading: later sign-ups wake another drain
    ids = services.signups_waiting(after_id=after_id, limit=services.SIGNUP_DRAIN_BATCH)
    if len(ids) == services.SIGNUP_DRAIN_BATCH:
        signup_drain_task.delay_or_log(ids[-1])
    if not ids:
        return 0
    try:
        # The whole batch in one transaction, its shared reads and its writes done once.
        services.signups_process_batch(signup_ids=ids)
    except Exception:
        # Nothing of the batch was written. One by one, then: the others go through and
        # only the sign-up at fault goes to its own task.
        logger.warning(
            "Sign-up batch after %s failed; processing it one by one", after_id, exc_info=True
        )
        for signup_id in ids:
            try:
                services.signup_process(signup_id=signup_id, skip_busy=True)
            except Exception:
                # Its own task has the retries, backoff and failure policy.
                signup_process_task.delay_or_log(signup_id)
    return len(ids)


@shared_task
def signup_requeue_stale() -> int:
    return services.signup_requeue_stale()
