from celery import shared_task

from . import audience
from .models import Subscriber

BACKOFF_CAP = 3600


def _backoff(retries: int) -> int:
    return min(60 * 2**retries, BACKOFF_CAP)


@shared_task(bind=True, max_retries=10, acks_late=True)
def audience_sync_subscriber(self, subscriber_id: int) -> str:
    """Mirror one subscriber to Mailchimp. Idempotent: an upsert of current state."""
    if not audience.enabled():
        return "disabled"
    subscriber = Subscriber.objects.filter(pk=subscriber_id).first()
    if subscriber is None:
        return "gone"
    if subscriber.status == Subscriber.Status.PENDING:
        # Upserted as "pending", Mailchimp would send its own confirmation email beside
        # ours. The confirmation's sync sends the subscriber, with any edit made meanwhile.
        return "pending"
    try:
        tags_sent = audience.member_upsert(subscriber)
    except audience.AudienceError as exc:
        Subscriber.objects.filter(pk=subscriber_id).update(audience_sync_error=str(exc)[:2000])
        if exc.retryable and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        return "failed"
    if not audience.subscribers_mark_synced(
        subscribers=[subscriber], tags_sent={subscriber.pk: tags_sent}
    ):
        # Edited while the upsert was on its way: Mailchimp has the state before the edit.
        # The row stays due; the edit's own task, or the sweep, sends the newer state.
        return "superseded"
    return "synced"


@shared_task
def audience_requeue_stale() -> int:
    """Beat: re-queue the syncs of confirmations, unsubscriptions and admin edits committed
    while the broker was down (the on-commit publish only logged). Nothing is synced twice
    in effect: the sync is an upsert of current state, and a synced row is no longer due."""
    if not audience.enabled():
        return 0
    return audience_sync_subscriber.requeue(audience.subscribers_sync_due())


@shared_task(bind=True, max_retries=10, acks_late=True)
def audience_forget(self, email: str) -> str:
    """Permanently delete an erased subscriber from Mailchimp."""
    if not audience.enabled():
        return "disabled"
    try:
        audience.member_forget(email)
    except audience.AudienceError as exc:
        if exc.retryable and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        return "failed"
    return "forgotten"


@shared_task(bind=True, max_retries=5, acks_late=True)
def audience_sync_batch(self, subscriber_ids: list[int]) -> str:
    """Bulk changes (imports, tag edits across a list) go through one batch operation."""
    if not audience.enabled():
        return "disabled"
    subscribers = list(
        Subscriber.objects.filter(pk__in=subscriber_ids)
        .exclude(status=Subscriber.Status.PENDING)  # see audience_sync_subscriber
        .prefetch_related("tagged_items__tag")
    )
    if not subscribers:
        return "empty"
    try:
        batch_id = audience.members_batch(subscribers)
    except audience.AudienceError as exc:
        if exc.retryable and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        Subscriber.objects.filter(pk__in=[s.pk for s in subscribers]).update(
            audience_sync_error=str(exc)[:2000]
        )
        return "failed"
    audience.subscribers_mark_synced(
        subscribers=subscribers,
        tags_sent={s.pk: audience.subscriber_tag_names(s) for s in subscribers},
    )
    return batch_id


from . import tasks_sequences, tasks_signups  # noqa: E402,F401
