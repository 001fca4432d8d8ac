"""Only genuine, fresh Stripe events get in; a forged, stale or altered one changes nothing."""

import hashlib
import hmac
import json
import time

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


# --- Signed bodies PostgreSQL cannot store as sent ----------------------------------------


def signed(body: bytes) -> str:
    at = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256)
    return f"t={at},v1={mac.hexdigest()}"


def event_body(obj: dict, *, event_id: str = "evt_nul_0001", **top) -> bytes:
    event = {
        "id": event_id,
        "object": "event",
        "type": "customer.created",
        "created": 1_790_000_000,
        "data": {"object": obj},
        **top,
    }
    return json.dumps(event).encode()


def test_signed_event_with_nul_characters_is_stored_with_replacement_characters(sx):
    # given a genuine (signed) event whose strings hold NUL, which PostgreSQL cannot store
    body = event_body({"id": "cus_1", "name": "Ada\u0000Lovelace", "meta\u0000": ["\u0000"]})

    response = post_webhook(Client(), body, signed(body))

    # then it is stored and acknowledged, the NULs as U+FFFD
    assert response.status_code == 200, response.content
    event = StripeEvent.objects.get(stripe_id="evt_nul_0001")
    assert event.data_object == {
        "id": "cus_1",
        "name": "Ada\ufffdLovelace",
        "meta\ufffd": ["\ufffd"],
    }
    assert event.processed_at is not None


def test_signed_event_with_a_nul_in_its_id_or_a_lone_surrogate_is_stored(sx):
    body = event_body({"name": "\ud800"}, event_id="evt_\u0000x", api_version="2024\u0000")

    response = post_webhook(Client(), body, signed(body))

    assert response.status_code == 200, response.content
    event = StripeEvent.objects.get()
    assert (event.stripe_id, event.api_version) == ("evt_\ufffdx", "2024\ufffd")
    assert event.data_object == {"name": "\ufffd"}


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1e999"], ids=["nan", "inf", "-inf", "1e999"]
)
def test_signed_event_with_a_number_json_does_not_have_is_refused_with_a_log_line(
    sx, number, caplog
):
    body = event_body({"amount": 1}).replace(b'"amount": 1', b'"amount": ' + number.encode())

    response = post_webhook(Client(), body, signed(body))

    assert response.status_code == 400
    assert "not standard JSON" in response.json()["error"]
    assert "Stripe webhook rejected" in caplog.text
    assert StripeEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("top", "stored"),
    [
        ({"created": 10**30}, ("", False, None)),
        ({"created": "yesterday"}, ("", False, None)),
        ({"api_version": {"v": 1}}, ("", False, 1_790_000_000)),
        ({"livemode": "yes"}, ("", False, 1_790_000_000)),
    ],
    ids=["created-out-of-range", "created-text", "api-version-object", "livemode-text"],
)
def test_signed_event_with_odd_top_level_fields_is_stored_without_them(sx, top, stored):
    body = event_body({"id": "cus_1"}, **top)

    response = post_webhook(Client(), body, signed(body))

    assert response.status_code == 200, response.content
    event = StripeEvent.objects.get()
    created = event.stripe_created_at and int(event.stripe_created_at.timestamp())
    assert (event.api_version, event.livemode, created) == stored


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "evt_1", "object": "event", "type": "x", "data": []}',
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": "cus_1"}}',
        b'{"id": 12, "object": "event", "type": "x", "data": {"object": {}}}',
        (
            '{"id": "evt_' + "x" * 300 + '", "object": "event", "type": "x", '
            '"data": {"object": {}}}'
        ).encode(),
        b'{"id": "evt_1", "object": "event", "type": "x", "data": {"object": '
        + b'{"a": ' * 100
        + b"1"
        + b"}" * 100
        + b"}}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["data-list", "object-string", "id-number", "id-too-long", "too-deep", "json-bomb"],
)
def test_signed_body_that_is_no_stripe_event_is_refused(sx, body, caplog):
    response = post_webhook(Client(), body, signed(body))

    assert response.status_code == 400
    assert "Stripe webhook" in caplog.text
    assert StripeEvent.objects.count() == 0
