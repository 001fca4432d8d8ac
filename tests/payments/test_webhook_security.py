"""Only genuine, fresh Stripe events get in; a forged, stale or altered one changes nothing."""

import json

import pytest
from django.test import Client

from payments.models import Entitlement, Order, StripeEvent

from .conftest import WEBHOOK_SECRET, buy, make_offer, post_webhook

pytestmark = pytest.mark.django_db


@pytest.fixture
def completed_event(sx, webhook, client):
    """A real checkout.session.completed for a paid purchase, not yet delivered."""
    offer = make_offer()
    session_id = buy(client, offer)
    sx.complete_checkout(session_id, email="buyer@lodestone-mail.fi")
    return sx.last_event("checkout.session.completed")


def assert_nothing_happened():
    assert StripeEvent.objects.count() == 0
    assert Order.objects.count() == 0
    assert Entitlement.objects.count() == 0


def test_webhook_without_signature_is_refused_before_any_database_query(
    sx, completed_event, django_assert_num_queries
):
    body, _headers = sx.signed_payload(completed_event["id"], secret=WEBHOOK_SECRET)

    with django_assert_num_queries(0):
        response = post_webhook(Client(), body, None)

    assert response.status_code == 400
    assert_nothing_happened()


@pytest.mark.parametrize(
    "header",
    ["garbage", "t=notanumber,v1=abc", "t=1700000000", "v1=deadbeef", ""],
    ids=["garbage", "bad-timestamp", "no-v1", "no-timestamp", "empty"],
)
def test_webhook_with_malformed_signature_is_refused_and_nothing_stored(
    sx, completed_event, header, django_assert_num_queries
):
    body, _headers = sx.signed_payload(completed_event["id"], secret=WEBHOOK_SECRET)

    with django_assert_num_queries(0):
        response = post_webhook(Client(), body, header)

    assert response.status_code == 400
    assert_nothing_happened()


def test_webhook_signed_with_another_secret_is_refused(sx, completed_event):
    [attempt] = sx.deliver(completed_event["id"], bad_signature=True)

    assert attempt.status == 400
    assert_nothing_happened()


def test_webhook_signed_ten_minutes_ago_is_refused(sx, completed_event):
    [attempt] = sx.deliver(completed_event["id"], stale=True)

    assert attempt.status == 400
    assert "tolerance" in attempt.response_body
    assert_nothing_happened()


def test_webhook_body_altered_after_signing_is_refused(sx, completed_event):
    body, headers = sx.signed_payload(completed_event["id"], secret=WEBHOOK_SECRET)
    event = json.loads(body)
    event["data"]["object"]["customer_details"]["email"] = "attacker@example.com"

    response = post_webhook(Client(), json.dumps(event), headers["Stripe-Signature"])

    assert response.status_code == 400
    assert_nothing_happened()


def test_genuine_webhook_is_stored_processed_and_acknowledged(sx, completed_event):
    [attempt] = sx.deliver(completed_event["id"])

    assert attempt.status == 200
    event = StripeEvent.objects.get()
    assert (event.stripe_id, event.type) == (completed_event["id"], "checkout.session.completed")
    assert event.processed_at is not None
    assert event.attempts == 1
    assert Order.objects.get().status == Order.Status.PAID


def test_same_event_delivered_again_is_acknowledged_and_not_processed_twice(sx, completed_event):
    sx.deliver(completed_event["id"])
    [again] = sx.deliver(completed_event["id"])

    assert again.status == 200
    assert json.loads(again.response_body)["duplicate"] is True
    assert StripeEvent.objects.get().attempts == 1
    assert Order.objects.count() == 1
    assert Entitlement.objects.count() == 1


def test_unknown_event_type_is_stored_and_acknowledged(sx, webhook, stripe_client):
    stripe_client.v1.customers.create(params={"email": "someone@lodestone-mail.fi"})

    attempts = sx.deliver_pending()

    assert [(a.event_type, a.status) for a in attempts] == [("customer.created", 200)]
    event = StripeEvent.objects.get()
    assert event.type == "customer.created"
    assert event.processed_at is not None
    assert event.payload["data"]["object"]["email"] == "someone@lodestone-mail.fi"
