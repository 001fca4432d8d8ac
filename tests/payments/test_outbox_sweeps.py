"""Payment side effects committed while the broker (Redis) is down: the request that
committed still answers normally, the stored row says what is owed, and a periodic sweep
queues it once the broker is back; a real worker then does it once.

- Offer → Stripe sync: the offer is marked pending in the saving transaction;
  ``offer_requeue_stale`` (beat) queues the sync.
- A payment plan paid in full: the webhook answers 200 even when neither Stripe (to cancel
  the subscription) nor the broker (to queue a retry) answers; the hourly reconciliation
  cancels it.
"""

import logging
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from config.celery_app import app
from payments import services, webhooks
from payments.models import Offer, Order, Price, Product, SyncStatus
from tests.harness.celery_worker import broker_unreachable
from tests.harness.waiting import wait_until

from .conftest import BUYER, buy, closed_port_url, make_offer, make_product


@pytest.fixture
def worker_stripe(settings, server_stripe):
    """The stand-in the session's worker subprocess syncs to, emptied, and this process
    configured for it (the sweep only runs with Stripe settings)."""
    server_stripe.reset()
    settings.STRIPE_API_BASE = server_stripe.url
    settings.STRIPE_SECRET_KEY = server_stripe.api_key
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    yield server_stripe
    server_stripe.reset()


def products_for(standin, offer: Offer) -> list:
    return [
        p
        for p in standin.client().v1.products.list(params={"limit": 100}).data
        if p.to_dict().get("metadata", {}).get(services.META_OFFER) == str(offer.pk)
    ]


def offer_saved_in_admin(slug: str) -> Offer:
    """What the admin's create view does: the offer, its first price, a sync request, in one
    transaction."""
    with transaction.atomic():
        offer = Offer.objects.create(slug=slug, title="Launch Week", is_published=True)
        offer.products.set([make_product(f"{slug}-product")])
        Price.objects.create(offer=offer, amount=9900, currency="eur")
        services.offer_request_sync(offer=offer)
    return offer


@pytest.mark.django_db(transaction=True)
def test_offer_saved_while_the_broker_is_down_is_synced_once_by_the_sweep(
    celery_worker, worker_stripe, caplog
):
    # given an offer saved while Redis is down
    with broker_unreachable(app), caplog.at_level(logging.WARNING, logger="core.celery_task"):
        offer = offer_saved_in_admin("launch-week")
    assert "Could not queue payments.tasks.offer_sync" in caplog.text
    offer.refresh_from_db()
    assert offer.sync_status == SyncStatus.PENDING
    assert products_for(worker_stripe, offer) == []

    # when the sweep runs with the broker back (as beat would, a few minutes later)
    later = timezone.now() + timedelta(minutes=3)
    assert services.offer_requeue_stale(now=timezone.now()) == 0, "not stale yet"
    queued = services.offer_requeue_stale(now=later)

    # then the worker syncs it, once
    assert queued == 1
    wait_until(
        lambda: Offer.objects.get(pk=offer.pk).sync_status == SyncStatus.SYNCED,
        timeout=30,
        what="the worker to sync the offer",
    )
    [product] = products_for(worker_stripe, offer)
    offer.refresh_from_db()
    assert offer.stripe_product_id == product.id
    assert offer.prices.get().stripe_price_id
    assert services.offer_requeue_stale(now=later) == 0, "a synced offer is not due again"


@pytest.mark.django_db
def test_every_sync_request_marks_the_offer_pending_until_the_sync_ran(sx, stripe_client):
    offer = make_offer("course")
    services.offer_sync_to_stripe(offer_id=offer.pk)
    assert Offer.objects.get(pk=offer.pk).sync_status == SyncStatus.SYNCED

    services.offer_request_sync(offer=offer)  # an edit in the admin

    assert Offer.objects.get(pk=offer.pk).sync_status == SyncStatus.PENDING


@pytest.mark.django_db
def test_the_offer_sweep_does_nothing_without_stripe_settings(settings):
    settings.STRIPE_SECRET_KEY = ""
    make_offer("course")

    assert services.offer_requeue_stale(now=timezone.now() + timedelta(days=1)) == 0


@pytest.mark.django_db
def test_a_sweep_during_the_outage_queues_nothing_and_does_not_fail(sx, caplog):
    make_offer("course")

    with broker_unreachable(app), caplog.at_level(logging.WARNING, logger="core.celery_task"):
        queued = services.offer_requeue_stale(now=timezone.now() + timedelta(minutes=3))

    assert queued == 0
    assert "Sweep: could not queue payments.tasks.offer_sync" in caplog.text
    assert Offer.objects.get().sync_status == SyncStatus.PENDING


# --- A payment plan completed while Stripe and the broker are both unreachable -------------


@pytest.mark.django_db(transaction=True)
def test_plan_completed_while_stripe_and_the_broker_are_down_answers_200_and_is_cancelled_later(
    sx, webhook, settings, caplog
):
    # given a three-instalment plan with two instalments paid
    plan = make_offer(
        "masterclass",
        amount=11000,
        kind=Price.Kind.PAYMENT_PLAN,
        interval=Price.Interval.MONTH,
        installments=3,
        products=[make_product("masterclass-access", kind=Product.Kind.COURSE)],
    )
    sx.complete_checkout(buy(Client(), plan), email=BUYER)
    sx.deliver_pending()
    order = Order.objects.get()
    sx.renew_subscription(order.stripe_subscription_id)
    sx.deliver_pending()

    # when the last instalment's invoice.paid arrives while our calls to Stripe fail and
    # Redis is down
    sx.renew_subscription(order.stripe_subscription_id)
    api_base = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = closed_port_url()
    with broker_unreachable(app), caplog.at_level(logging.WARNING):
        attempts = sx.deliver_pending()

    # then Stripe hears 200 (no retry storm), the plan is recorded as complete, and the
    # cancellation waits for the hourly reconciliation, with a clear log line
    assert "invoice.paid" in {a.event_type for a in attempts}
    assert {(a.event_type, a.status) for a in attempts if a.status != 200} == set()
    order.refresh_from_db()
    assert order.plan_completed_at is not None
    assert order.subscription_cancel_requested_at is None
    assert "hourly reconciliation retries it" in caplog.text
    assert "Could not queue payments.tasks.plan_subscription_cancel" in caplog.text
    assert sx.get(order.stripe_subscription_id)["status"] == "active"

    # and once Stripe answers again, the hourly sweep cancels the subscription, once
    settings.STRIPE_API_BASE = api_base
    webhooks._retry_unfinished_plan_cancellations()
    webhooks._retry_unfinished_plan_cancellations()
    order.refresh_from_db()
    assert order.subscription_cancel_requested_at is not None
    assert sx.get(order.stripe_subscription_id)["status"] == "canceled"
    assert len(sx.events("customer.subscription.deleted")) == 1
