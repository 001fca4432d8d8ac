"""Everything runs twice, at once: real threads, real PostgreSQL transactions."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from core.models import OutboundEmail
from payments import selectors
from payments.models import Entitlement, Order, StripeEvent
from payments.signals import purchase_completed
from tests.harness.concurrency import run_at_once

from .conftest import WEBHOOK_SECRET, buy, make_offer, post_webhook

pytestmark = pytest.mark.django_db(transaction=True)


def signed(sx, event):
    body, headers = sx.signed_payload(event["id"], secret=WEBHOOK_SECRET)
    return body, headers["Stripe-Signature"]


def test_twenty_concurrent_deliveries_of_one_event_make_one_order_and_one_entitlement(sx, client):
    offer = make_offer()
    session_id = buy(client, offer)
    sx.complete_checkout(session_id, email="racer@lodestone-mail.fi")
    body, signature = signed(sx, sx.last_event("checkout.session.completed"))
    sent = []
    purchase_completed.connect(receiver := lambda sender, order, **kw: sent.append(order.pk))
    try:
        statuses = run_at_once(
            *[lambda: post_webhook(Client(), body, signature).status_code for _ in range(20)]
        )
    finally:
        purchase_completed.disconnect(receiver)

    assert statuses == [200] * 20
    assert StripeEvent.objects.count() == 1
    assert StripeEvent.objects.get().attempts == 1
    assert Order.objects.count() == 1
    assert Entitlement.objects.count() == 1
    assert get_user_model().objects.count() == 1
    assert OutboundEmail.objects.filter(kind="payments:welcome").count() == 1
    assert sent == [Order.objects.get().pk], "the drip hook hears of the purchase once"


def test_success_page_and_webhook_at_the_same_moment_make_one_order(sx):
    offer = make_offer()
    for round_ in range(5):
        buyer_browser = Client()
        session_id = buy(buyer_browser, offer)
        email = f"buyer{round_}@lodestone-mail.fi"
        sx.complete_checkout(session_id, email=email)
        body, signature = signed(sx, sx.last_event("checkout.session.completed"))

        page, hook = run_at_once(
            lambda b=buyer_browser, s=session_id: b.get(f"/pay/checkout/success/?session_id={s}"),
            lambda b=body, s=signature: post_webhook(Client(), b, s),
        )

        assert (page.status_code, hook.status_code) == (200, 200)
        assert "you are in" in page.content.decode().lower()
        order = Order.objects.get(stripe_checkout_session_id=session_id)
        assert order.status == Order.Status.PAID
        assert Entitlement.objects.filter(user__email=email).count() == 1
        assert OutboundEmail.objects.filter(kind="payments:welcome", to=email).count() == 1
    assert Order.objects.count() == 5


def test_refund_and_purchase_events_at_the_same_moment_never_leave_access(sx):
    offer = make_offer()
    for round_ in range(5):
        browser = Client()
        session = sx.complete_checkout(buy(browser, offer), email=f"r{round_}@lodestone-mail.fi")
        completed = signed(sx, sx.last_event("checkout.session.completed"))
        sx.refund(session["payment_intent"])
        refunded = signed(sx, sx.last_event("charge.refunded"))

        statuses = run_at_once(
            lambda c=completed: post_webhook(Client(), *c).status_code,
            lambda r=refunded: post_webhook(Client(), *r).status_code,
        )

        assert statuses == [200, 200]
        order = Order.objects.get(stripe_checkout_session_id=session["id"])
        assert order.status == Order.Status.REFUNDED
        assert not Entitlement.objects.active().filter(user__email=order.email).exists()
        assert order.buyer is None or not selectors.has_access(order.buyer, offer.products.get())
