import logging

from celery import shared_task

from . import services, webhooks
from .stripe_client import is_transient

logger = logging.getLogger(__name__)


def _backoff(retries: int) -> int:
    return min(30 * 2**retries, 3600)


@shared_task(bind=True, max_retries=12, acks_late=True)
def offer_sync(self, offer_id: int) -> str:
    """Push an offer and its prices to Stripe. Retries network trouble with backoff; a
    refusal (bad currency, deleted product) is final and stays on the offer for the creator."""
    from .models import Offer

    if not Offer.objects.filter(pk=offer_id).exists():
        return "gone"
    try:
        services.offer_sync_to_stripe(offer_id=offer_id)
    except Exception as exc:
        if is_transient(exc) and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        logger.error("Offer %s could not be synced to Stripe: %r", offer_id, exc)
        return "failed"
    return "synced"


@shared_task(bind=True, max_retries=12, acks_late=True)
def plan_subscription_cancel(self, order_id: int) -> str:
    """Stop billing a payment plan paid in full (the webhook tried once already)."""
    try:
        services.order_plan_subscription_cancel(order_id=order_id)
    except Exception as exc:
        if is_transient(exc) and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        logger.error("Finished plan of order %s could not be cancelled: %r", order_id, exc)
        return "failed"
    return "cancelled"


@shared_task
def offer_requeue_stale() -> int:
    """Beat: syncs of offers saved while the broker was down (services.offer_requeue_stale)."""
    return services.offer_requeue_stale()


@shared_task
def stripe_reconcile_recent() -> dict:
    """Beat: process any event of the last 3 days that never reached the webhook."""
    report = webhooks.stripe_reconcile_recent()
    return {
        "seen": report.seen,
        "processed": report.processed,
        "already_done": report.already_done,
        "failed": report.failed,
    }
