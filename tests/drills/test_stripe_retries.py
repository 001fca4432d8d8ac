"""Drill: the site cannot take Stripe's webhooks for an hour of a launch (down, then
answering 503). Stripe retries on its own schedule (1 min, 5 min, 30 min, 2 h … on the
stand-in's virtual clock, nothing sleeps); the first delivery after the site is back makes
the order, and every later copy of the event is a harmless duplicate: one order, one
entitlement, one welcome email."""

import pytest
from django.test import Client

from core.models import OutboundEmail
from payments import webhooks
from payments.models import Entitlement, Order, StripeEvent
from tests.payments.conftest import WEBHOOK_PATH, WEBHOOK_SECRET, buy, make_offer, post_webhook
from tests.stripe_standin.fixtures import stripe_standin  # noqa: F401

pytestmark = pytest.mark.django_db

HOUR = 3600
BUYER = "leila@drill.lodestone-mail.fi"


@pytest.fixture
def sx(settings, stripe_standin, celery_broker):
    stripe_standin.reset()
    settings.STRIPE_API_BASE = stripe_standin.url
    settings.STRIPE_SECRET_KEY = stripe_standin.api_key
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.SITE_URL = "http://testserver"
    stripe_standin.auto_deliver = False
    yield stripe_standin
    stripe_standin.reset()


def test_stripe_retrying_a_webhook_through_an_hour_long_outage_makes_one_order(sx):
    # given a site that cannot take webhooks for the first hour: refused, then 503 pages
    started = sx.clock_now()
    client = Client()

    def site(url, body, headers):
        down_for = sx.clock_now() - started
        if down_for < HOUR / 2:
            raise ConnectionRefusedError("nginx is down")
        if down_for < HOUR:
            return 503, "We are back in a moment"
        response = post_webhook(client, body, headers["Stripe-Signature"])
        return response.status_code, response.content.decode()

    sx.add_webhook_endpoint(
        WEBHOOK_PATH,
        secret=WEBHOOK_SECRET,
        enabled_events=sorted(webhooks.HANDLERS),
        transport=site,
    )
    offer = make_offer("launch-course")
    session_id = buy(Client(), offer)

    # when the buyer pays and Stripe keeps trying for three hours of its clock
    sx.complete_checkout(session_id, email=BUYER, name="Leila")
    sx.deliver_pending()
    for _minute in range(3 * 60):
        sx.advance_clock(60)
        sx.deliver_pending()
    # and one more copy arrives late (Stripe does send duplicates)
    [completed] = [e for e in sx.events("checkout.session.completed")]
    sx.deliver(completed["id"])

    # then the outage was seen and ridden out: failures first, then one success
    attempts = sx.attempts(event_id=completed["id"])
    outcomes = [(a.kind, a.status) for a in attempts]
    assert [s for _k, s in outcomes[:3]] == [None, None, None]  # 0, +1 min, +6 min: refused
    assert outcomes[3] == ("retry", 503)  # +36 min: the 503 page
    assert outcomes[4][1] == 200  # +2 h 36 min: the site is back
    assert all(a.clock - started >= HOUR for a in attempts if a.status == 200)
    assert sx.pending_deliveries() == []
    # and exactly one order, one entitlement, one welcome email, whatever the copies
    assert StripeEvent.objects.filter(stripe_id=completed["id"]).count() == 1
    order = Order.objects.get()
    assert order.status == Order.Status.PAID
    assert Entitlement.objects.filter(user__email=BUYER).count() == 1
    assert OutboundEmail.objects.filter(to=BUYER, kind="payments:welcome").count() == 1
    assert '"duplicate": true' in attempts[-1].response_body
