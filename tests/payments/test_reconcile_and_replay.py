"""The safety nets: reconciliation for webhooks that never arrived, replay for events that
failed, and the beat task that runs the former."""

from datetime import date

import pytest
from django.core.management import call_command

from payments import selectors, webhooks
from payments.models import Entitlement, Order, StripeEvent
from payments.tasks import stripe_reconcile_recent

from .conftest import BUYER, buy, closed_port_url, make_offer

pytestmark = pytest.mark.django_db


def test_reconciliation_processes_a_purchase_whose_webhook_never_arrived(sx, client, capsys):
    offer = make_offer()
    sx.complete_checkout(buy(client, offer), email=BUYER)  # no endpoint: nothing is delivered
    assert Order.objects.count() == 0

    call_command("stripe_reconcile", "--since", date.today().isoformat())

    assert "1 seen, 1 processed now" in capsys.readouterr().out
    order = Order.objects.get()
    assert order.status == Order.Status.PAID
    assert selectors.has_access(order.buyer, offer.products.get())
    stored = StripeEvent.objects.get(type="checkout.session.completed")
    assert (stored.received_via, stored.processed_at is not None) == ("reconcile", True)

    call_command("stripe_reconcile", since=date.today().isoformat())  # again: nothing new

    assert "0 processed now, 1 already done" in capsys.readouterr().out
    assert Order.objects.count() == 1
    assert StripeEvent.objects.get(type="checkout.session.completed").attempts == 1


def test_reconciliation_skips_events_the_webhook_already_processed(sx, webhook, client):
    offer = make_offer()
    sx.complete_checkout(buy(client, offer), email=BUYER)
    sx.deliver_pending()
    before = {e.stripe_id: e.attempts for e in StripeEvent.objects.all()}

    report = webhooks.stripe_reconcile(since=Order.objects.get().created_at.replace(hour=0))

    assert report.processed == 0
    assert report.already_done == report.seen > 0
    assert {e.stripe_id: e.attempts for e in StripeEvent.objects.all()} == before


def test_beat_task_reconciles_the_last_three_days(sx, client):
    offer = make_offer()
    sx.complete_checkout(buy(client, offer), email=BUYER)

    result = stripe_reconcile_recent.apply().get()

    assert result["processed"] >= 1
    assert result["failed"] == []
    assert Order.objects.get().status == Order.Status.PAID


def test_failed_event_keeps_its_error_and_is_replayed_once_the_cause_is_fixed(
    sx, webhook, client, settings
):
    offer = make_offer()
    session = sx.complete_checkout(buy(client, offer), email=BUYER)
    sx.refund(session["payment_intent"])
    refund = sx.last_event("charge.refunded")
    api_base = settings.STRIPE_API_BASE
    # The refund arrives first; finding out what it belongs to needs Stripe, which is down.
    settings.STRIPE_API_BASE = closed_port_url()

    [attempt] = sx.deliver(refund["id"])

    assert attempt.status == 500
    event = StripeEvent.objects.get(stripe_id=refund["id"])
    assert event.processed_at is None
    assert event.attempts == 1
    assert "APIConnectionError" in event.last_error
    assert "Traceback" in event.error_traceback
    assert event.last_error_at is not None

    settings.STRIPE_API_BASE = api_base
    call_command("stripe_replay", refund["id"])

    event.refresh_from_db()
    assert event.processed_at is not None
    assert event.attempts == 2
    assert event.last_error == ""
    sx.deliver_pending()  # now the purchase: the refund recorded earlier wins
    assert Order.objects.get().status == Order.Status.REFUNDED
    assert Entitlement.objects.count() == 0


def test_replay_of_an_event_we_never_stored_fetches_it_from_stripe(sx, client):
    offer = make_offer()
    sx.complete_checkout(buy(client, offer), email=BUYER)
    completed = sx.last_event("checkout.session.completed")

    result = webhooks.stripe_event_replay(stripe_id=completed["id"])

    assert result.processed_now
    assert result.event.received_via == "replay"
    assert Order.objects.get().status == Order.Status.PAID
