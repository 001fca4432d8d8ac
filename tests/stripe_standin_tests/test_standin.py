"""The Stripe stand-in, driven through the official ``stripe`` client and the control handle.

Webhooks go to a small receiver in this module that verifies every delivery with
``stripe.Webhook.construct_event``, exactly as the app's webhook view does.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from tests.stripe_standin import DEFAULT_API_KEY, StripeError, StripeStandin
from tests.stripe_standin import fixtures as standin_fixtures

# The package's pytest fixtures (tests/conftest.py may register them for everyone).
stripe_standin = standin_fixtures.stripe_standin
stripe_standin_fresh = standin_fixtures.stripe_standin_fresh

WAIT = 5.0


# ---------------------------------------------------------------------- helpers
class Receiver:
    """A webhook endpoint: verifies signatures, records events, answers scripted statuses."""

    def __init__(self) -> None:
        self.secret = ""
        self.events: list[stripe.Event] = []
        self.rejections: list[str] = []
        self.script: list[int] = []  # statuses for the next verified deliveries
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 200
                try:
                    event = stripe.Webhook.construct_event(
                        body, self.headers.get("Stripe-Signature"), receiver.secret
                    )
                except stripe.SignatureVerificationError as e:
                    status = 400
                    with receiver.cond:
                        receiver.rejections.append(str(e))
                        receiver.cond.notify_all()
                else:
                    with receiver.cond:
                        status = receiver.script.pop(0) if receiver.script else 200
                        if status < 300:
                            receiver.events.append(event)
                        receiver.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/stripe"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def types(self) -> list[str]:
        with self.cond:
            return [e.type for e in self.events]

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = WAIT) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self), timeout), (
                f"timed out; received {[e.type for e in self.events]}, rejected {self.rejections}"
            )

    def wait_for_type(self, event_type: str, count: int = 1) -> list[stripe.Event]:
        self.wait_for(lambda r: sum(e.type == event_type for e in r.events) >= count)
        with self.cond:
            return [e for e in self.events if e.type == event_type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def standin(stripe_standin_fresh: StripeStandin) -> StripeStandin:
    return stripe_standin_fresh


@pytest.fixture
def client(standin: StripeStandin) -> stripe.StripeClient:
    return stripe.StripeClient(
        DEFAULT_API_KEY, base_addresses={"api": standin.url}, max_network_retries=0
    )


@pytest.fixture
def receiver(standin: StripeStandin) -> Iterator[Receiver]:
    r = Receiver()
    endpoint = standin.add_webhook_endpoint(r.url)
    r.secret = endpoint.secret
    yield r
    r.close()


def make_price(client: stripe.StripeClient, *, recurring: bool = False, amount: int = 4900):
    product = client.v1.products.create(params={"name": "Deep Work Course"})
    params: dict[str, Any] = {"product": product.id, "unit_amount": amount, "currency": "usd"}
    if recurring:
        params["recurring"] = {"interval": "month"}
    return client.v1.prices.create(params=params)


def payment_session(client: stripe.StripeClient, price_id: str, **extra: Any):
    params = {
        "mode": "payment",
        "line_items": [{"price": price_id, "quantity": 1}],
        "success_url": "https://lodestone.test/thanks?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://lodestone.test/cart",
        **extra,
    }
    return client.v1.checkout.sessions.create(params=params)


def subscription_session(client: stripe.StripeClient, price_id: str, **extra: Any):
    params = {
        "mode": "subscription",
        "line_items": [{"price": price_id, "quantity": 1}],
        "customer_email": "member@example.com",
        "success_url": "https://lodestone.test/welcome?session_id={CHECKOUT_SESSION_ID}",
        **extra,
    }
    return client.v1.checkout.sessions.create(params=params)


# ---------------------------------------------------------------------- catalogue
def test_products_and_prices_round_trip_with_metadata_lookup_keys_and_expand(client):
    product = client.v1.products.create(
        params={"name": "Focus Workshop", "metadata": {"course_slug": "focus"}}
    )
    assert product.id.startswith("prod_")
    assert product.object == "product"
    assert product.livemode is False
    assert product.metadata["course_slug"] == "focus"

    one_time = client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 9900,
            "currency": "usd",
            "lookup_key": "focus_once",
        }
    )
    monthly = client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": 1500,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "lookup_key": "focus_monthly",
        }
    )
    assert one_time.type == "one_time" and one_time.recurring is None
    assert monthly.type == "recurring"
    assert monthly.recurring.interval == "month" and monthly.recurring.interval_count == 1

    updated = client.v1.products.update(product.id, params={"metadata": {"level": "2"}})
    assert updated.metadata.to_dict() == {"course_slug": "focus", "level": "2"}

    found = client.v1.prices.list(
        params={"lookup_keys": ["focus_monthly"], "expand": ["data.product"]}
    )
    assert [p.id for p in found.data] == [monthly.id]
    assert found.data[0].product.name == "Focus Workshop"

    archived = client.v1.prices.update(one_time.id, params={"active": False})
    assert archived.active is False
    active_ids = [p.id for p in client.v1.prices.list(params={"active": True}).data]
    assert active_ids == [monthly.id]


def test_lookup_key_conflict_is_rejected_unless_transferred(client):
    first = make_price(client)
    client.v1.prices.update(first.id, params={"lookup_key": "standard"})
    second = make_price(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.update(second.id, params={"lookup_key": "standard"})
    assert err.value.param == "lookup_key"
    client.v1.prices.update(
        second.id, params={"lookup_key": "standard", "transfer_lookup_key": True}
    )
    assert client.v1.prices.retrieve(first.id).lookup_key is None


def test_list_pagination_uses_limit_starting_after_and_auto_paging(client):
    ids = [client.v1.customers.create(params={"email": f"c{i}@example.com"}).id for i in range(5)]
    page = client.v1.customers.list(params={"limit": 2})
    assert page.object == "list" and page.url == "/v1/customers"
    assert page.has_more is True
    assert [c.id for c in page.data] == ids[::-1][:2]  # newest first
    nxt = client.v1.customers.list(params={"limit": 2, "starting_after": page.data[-1].id})
    assert [c.id for c in nxt.data] == ids[::-1][2:4]
    assert [c.id for c in page.auto_paging_iter()] == ids[::-1]
    by_email = client.v1.customers.list(params={"email": "c3@example.com"})
    assert [c.id for c in by_email.data] == [ids[3]]


# ---------------------------------------------------------------------- checkout (payment)
def test_payment_session_points_at_hosted_page_and_expands_line_items(client, standin):
    price = make_price(client)
    session = payment_session(
        client,
        price.id,
        client_reference_id="user-42",
        metadata={"order_id": "o-1"},
        payment_intent_data={"metadata": {"order_id": "o-1"}},
    )
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert session.url == f"{standin.url}/pay/{session.id}"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert session.amount_total == 4900 and session.currency == "usd"
    assert session.client_reference_id == "user-42"
    assert session.payment_intent is None  # created when the buyer pays, as in Stripe
    assert "line_items" not in session

    again = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    (item,) = again.line_items.data
    assert (item.price.id, item.quantity, item.amount_total) == (price.id, 1, 4900)
    assert item.description == "Deep Work Course"

    listed = client.v1.checkout.sessions.line_items.list(session.id)
    assert [li.id for li in listed.data] == [item.id]

    raw = client.raw_request(
        "get", f"/v1/checkout/sessions/{session.id}", **{"expand[]": "line_items"}
    )
    assert json.loads(raw.body)["line_items"]["data"][0]["price"]["id"] == price.id


def test_completed_payment_session_creates_payment_intent_charge_and_signed_events(
    client, standin, receiver
):
    price = make_price(client)
    session = payment_session(
        client,
        price.id,
        customer_email="buyer@example.com",
        metadata={"order_id": "o-7"},
        payment_intent_data={"metadata": {"order_id": "o-7"}},
    )
    standin.complete_checkout(session.id)

    (completed,) = receiver.wait_for_type("checkout.session.completed")
    assert completed.id.startswith("evt_") and completed.object == "event"
    assert completed.api_version == stripe.api_version
    obj = completed.data.object
    assert isinstance(obj, stripe.checkout.Session)
    assert obj.id == session.id
    assert (obj.status, obj.payment_status) == ("complete", "paid")
    assert obj.metadata["order_id"] == "o-7"
    assert obj.customer_details.email == "buyer@example.com"
    receiver.wait_for_type("payment_intent.succeeded")
    receiver.wait_for_type("charge.succeeded")

    paid = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent.latest_charge"]}
    )
    pi = paid.payment_intent
    assert pi.id.startswith("pi_") and pi.status == "succeeded"
    assert pi.amount_received == 4900 and pi.metadata["order_id"] == "o-7"
    charge = pi.latest_charge
    assert charge.id.startswith("ch_")
    assert (charge.paid, charge.amount, charge.refunded) == (True, 4900, False)

    evt = client.v1.events.retrieve(completed.id)
    assert evt.type == "checkout.session.completed"
    listed = client.v1.events.list(params={"type": "checkout.session.completed"})
    assert [e.id for e in listed.data] == [completed.id]
    standin.wait_for_deliveries()
    assert client.v1.events.retrieve(completed.id).pending_webhooks == 0


def test_guest_payment_without_customer_creation_has_no_customer(client, standin):
    session = payment_session(client, make_price(client).id)
    standin.complete_checkout(session.id, email="guest@example.com")
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.customer is None
    assert done.customer_details.email == "guest@example.com"
    always = payment_session(client, make_price(client).id, customer_creation="always")
    standin.complete_checkout(always.id)
    assert client.v1.checkout.sessions.retrieve(always.id).customer.startswith("cus_")


def test_existing_customer_is_expandable_on_the_session(client, standin):
    customer = client.v1.customers.create(params={"email": "known@example.com", "name": "Ada"})
    session = payment_session(client, make_price(client).id, customer=customer.id)
    standin.complete_checkout(session.id)
    done = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["customer"]})
    assert done.customer.id == customer.id and done.customer.email == "known@example.com"
    assert done.customer_details.email == "known@example.com"


def test_async_payment_completes_unpaid_then_succeeds_or_fails(client, standin, receiver):
    price = make_price(client)
    ok = payment_session(client, price.id)
    standin.complete_checkout(ok.id, outcome="async_pending")
    pending = client.v1.checkout.sessions.retrieve(ok.id, params={"expand": ["payment_intent"]})
    assert (pending.status, pending.payment_status) == ("complete", "unpaid")
    assert pending.payment_intent.status == "processing"
    standin.complete_checkout(ok.id, outcome="async_succeeded")
    (succeeded,) = receiver.wait_for_type("checkout.session.async_payment_succeeded")
    assert succeeded.data.object.payment_status == "paid"

    bad = payment_session(client, price.id)
    standin.complete_checkout(bad.id, outcome="async_failed")
    (failed,) = receiver.wait_for_type("checkout.session.async_payment_failed")
    assert failed.data.object.id == bad.id
    assert failed.data.object.payment_status == "unpaid"
    pi = client.v1.payment_intents.retrieve(failed.data.object.payment_intent)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.code == "insufficient_funds"


def test_promotion_code_discounts_the_session_total(client, standin):
    coupon = client.v1.coupons.create(params={"percent_off": 25, "duration": "once"})
    promo = client.v1.promotion_codes.create(
        params={"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "LAUNCH25"}
    )
    assert promo.id.startswith("promo_") and promo.promotion.coupon == coupon.id
    session = payment_session(client, make_price(client).id, allow_promotion_codes=True)
    standin.complete_checkout(session.id, promotion_code="launch25")
    done = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    assert done.amount_subtotal == 4900
    assert done.total_details.amount_discount == 1225
    assert done.amount_total == 3675 == done.payment_intent.amount
    assert done.discounts[0].promotion_code == promo.id
    assert client.v1.promotion_codes.retrieve(promo.id).times_redeemed == 1


def test_promotion_code_is_refused_when_session_does_not_allow_codes(client, standin):
    coupon = client.v1.coupons.create(params={"amount_off": 500, "currency": "usd"})
    client.v1.promotion_codes.create(
        params={"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "FIVE"}
    )
    session = payment_session(client, make_price(client).id)
    with pytest.raises(StripeError) as err:
        standin.complete_checkout(session.id, promotion_code="FIVE")
    assert err.value.param == "promotion_code"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_checkout_rejects_recurring_price_in_payment_mode(client):
    price = make_price(client, recurring=True)
    with pytest.raises(stripe.InvalidRequestError) as err:
        payment_session(client, price.id)
    assert err.value.http_status == 400
    assert err.value.param == "line_items[0][price]"
    assert "recurring price" in err.value.user_message


def test_session_expires_via_api_or_when_the_clock_passes_expires_at(client, standin, receiver):
    price = make_price(client)
    first = payment_session(client, price.id)
    expired = client.v1.checkout.sessions.expire(first.id)
    assert expired.status == "expired" and expired.url is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(first.id)

    second = payment_session(client, price.id)
    standin.advance_clock(24 * 3600 + 1)
    assert client.v1.checkout.sessions.retrieve(second.id).status == "expired"
    events = receiver.wait_for_type("checkout.session.expired", count=2)
    assert {e.data.object.id for e in events} == {first.id, second.id}


def test_hosted_page_pay_button_redirects_to_success_url_with_session_id(client, standin):
    session = payment_session(client, make_price(client).id)
    with urllib.request.urlopen(session.url, timeout=WAIT) as page:
        html = page.read().decode()
    assert 'id="pay"' in html and "Deep Work Course" in html

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    form = urllib.request.Request(
        session.url, data=b"outcome=paid&email=web%40example.com&card_number=4242424242424242"
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(form, timeout=WAIT)
    assert answer.value.code == 303
    assert (
        answer.value.headers["Location"] == f"https://lodestone.test/thanks?session_id={session.id}"
    )
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.payment_status == "paid" and done.customer_details.email == "web@example.com"


# ---------------------------------------------------------------------- refunds / disputes
def test_partial_then_full_refund_updates_charge_and_emits_events(client, standin, receiver):
    session = payment_session(client, make_price(client, amount=5000).id)
    standin.complete_checkout(session.id)
    pi_id = client.v1.checkout.sessions.retrieve(session.id).payment_intent

    partial = client.v1.refunds.create(params={"payment_intent": pi_id, "amount": 2000})
    assert partial.id.startswith("re_") and partial.status == "succeeded"
    charge = client.v1.charges.retrieve(partial.charge)
    assert (charge.amount_refunded, charge.refunded) == (2000, False)

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 3001})
    assert too_much.value.code == "amount_too_large"

    rest = standin.refund(charge.id)  # e.g. refunded in the Dashboard
    assert rest["amount"] == 3000
    charge = client.v1.charges.retrieve(charge.id, params={"expand": ["refunds"]})
    assert (charge.amount_refunded, charge.refunded) == (5000, True)
    assert {r.id for r in charge.refunds.data} == {partial.id, rest["id"]}

    refunded = receiver.wait_for_type("charge.refunded", count=2)
    assert refunded[-1].data.object.refunded is True
    assert refunded[-1].data.previous_attributes.amount_refunded == 2000
    receiver.wait_for_type("refund.created", count=2)

    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create(params={"charge": charge.id})
    assert again.value.code == "charge_already_refunded"


def test_dispute_marks_charge_disputed_and_emits_dispute_events(client, standin, receiver):
    session = payment_session(client, make_price(client).id)
    standin.complete_checkout(session.id)
    pi = client.v1.payment_intents.retrieve(
        client.v1.checkout.sessions.retrieve(session.id).payment_intent
    )
    dispute = standin.dispute(pi.latest_charge)
    assert dispute["id"].startswith("dp_") and dispute["status"] == "needs_response"
    assert client.v1.charges.retrieve(pi.latest_charge).disputed is True
    (created,) = receiver.wait_for_type("charge.dispute.created")
    assert created.data.object.charge == pi.latest_charge
    standin.close_dispute(dispute["id"], won=False)
    (closed,) = receiver.wait_for_type("charge.dispute.closed")
    assert closed.data.object.status == "lost"


# ---------------------------------------------------------------------- subscriptions
def test_subscription_session_creates_customer_active_subscription_and_paid_invoice(
    client, standin, receiver
):
    price = make_price(client, recurring=True, amount=1500)
    session = subscription_session(
        client, price.id, subscription_data={"metadata": {"plan": "monthly"}}
    )
    assert session.mode == "subscription" and session.amount_total == 1500
    standin.complete_checkout(session.id)

    (completed,) = receiver.wait_for_type("checkout.session.completed")
    done = completed.data.object
    assert done.subscription.startswith("sub_") and done.customer.startswith("cus_")
    assert done.invoice.startswith("in_") and done.payment_status == "paid"
    (paid,) = receiver.wait_for_type("invoice.paid")
    assert paid.data.object.billing_reason == "subscription_create"
    assert paid.data.object.amount_paid == 1500
    assert paid.data.object.parent.subscription_details.subscription == done.subscription

    session = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["subscription", "customer"]}
    )
    sub = session.subscription
    assert sub.status == "active" and sub.metadata["plan"] == "monthly"
    assert sub.items.data[0].price.id == price.id
    assert sub.latest_invoice == done.invoice
    assert session.customer.email == "member@example.com"
    created = receiver.wait_for_type("customer.subscription.created")[0]
    assert created.data.object.status == "incomplete"
    updated = receiver.wait_for_type("customer.subscription.updated")[0]
    assert updated.data.previous_attributes.status == "incomplete"

    invoice = client.v1.invoices.retrieve(done.invoice, params={"expand": ["payments"]})
    assert invoice.status == "paid"
    assert invoice.payments.data[0].payment.payment_intent.startswith("pi_")


def test_subscription_renewal_paid_advances_period_and_emits_invoice_paid(
    client, standin, receiver
):
    price = make_price(client, recurring=True, amount=1500)
    session = subscription_session(client, price.id)
    standin.complete_checkout(session.id)
    sub_id = client.v1.checkout.sessions.retrieve(session.id).subscription
    before = client.v1.subscriptions.retrieve(sub_id).items.data[0]

    invoice = standin.renew_subscription(sub_id)
    assert invoice["billing_reason"] == "subscription_cycle" and invoice["status"] == "paid"

    paid = receiver.wait_for_type("invoice.paid", count=2)
    assert paid[-1].data.object.id == invoice["id"]
    after = client.v1.subscriptions.retrieve(sub_id)
    assert after.status == "active" and after.latest_invoice == invoice["id"]
    assert after.items.data[0].current_period_start == before.current_period_end
    assert after.items.data[0].current_period_end > before.current_period_end
    listed = client.v1.invoices.list(params={"subscription": sub_id})
    assert [i.id for i in listed.data] == [invoice["id"], paid[0].data.object.id]


def test_failed_renewal_makes_subscription_past_due_until_a_retry_pays(client, standin, receiver):
    session = subscription_session(client, make_price(client, recurring=True).id)
    standin.complete_checkout(session.id)
    sub_id = client.v1.checkout.sessions.retrieve(session.id).subscription

    invoice = standin.renew_subscription(sub_id, paid=False)
    (failed,) = receiver.wait_for_type("invoice.payment_failed")
    assert failed.data.object.id == invoice["id"] and failed.data.object.status == "open"
    assert client.v1.subscriptions.retrieve(sub_id).status == "past_due"

    standin.retry_invoice(invoice["id"])
    receiver.wait_for_type("invoice.paid", count=2)
    assert client.v1.subscriptions.retrieve(sub_id).status == "active"


def test_cancellation_now_or_at_period_end_emits_subscription_deleted(client, standin, receiver):
    price = make_price(client, recurring=True)
    now_session = subscription_session(client, price.id)
    standin.complete_checkout(now_session.id)
    sub_now = client.v1.checkout.sessions.retrieve(now_session.id).subscription
    canceled = client.v1.subscriptions.cancel(sub_now)
    assert canceled.status == "canceled" and canceled.ended_at is not None

    later_session = subscription_session(client, price.id)
    standin.complete_checkout(later_session.id)
    sub_later = client.v1.checkout.sessions.retrieve(later_session.id).subscription
    flagged = client.v1.subscriptions.update(sub_later, params={"cancel_at_period_end": True})
    assert flagged.cancel_at_period_end is True and flagged.status == "active"
    standin.renew_subscription(sub_later)  # the period ends instead of renewing

    deleted = receiver.wait_for_type("customer.subscription.deleted", count=2)
    assert [e.data.object.id for e in deleted] == [sub_now, sub_later]
    assert client.v1.subscriptions.retrieve(sub_later).status == "canceled"
    assert client.v1.subscriptions.list().data == []  # canceled ones are hidden by default
    assert len(client.v1.subscriptions.list(params={"status": "all"}).data) == 2

    third = subscription_session(client, price.id)
    standin.complete_checkout(third.id)
    sub_third = client.v1.checkout.sessions.retrieve(third.id).subscription
    standin.cancel_subscription(sub_third)
    receiver.wait_for_type("customer.subscription.deleted", count=3)


def test_trial_subscription_starts_trialing_with_zero_invoice(client, standin):
    session = subscription_session(
        client, make_price(client, recurring=True).id, subscription_data={"trial_period_days": 14}
    )
    assert session.amount_total == 0
    standin.complete_checkout(session.id)
    done = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription"]})
    assert done.payment_status == "no_payment_required"
    assert done.subscription.status == "trialing" and done.subscription.trial_end is not None
    first_paid = standin.renew_subscription(done.subscription.id)
    assert first_paid["amount_paid"] == 4900
    assert client.v1.subscriptions.retrieve(done.subscription.id).status == "active"


def test_paying_an_open_invoice_with_a_declining_card_is_a_402_card_error(
    client, standin, receiver
):
    session = subscription_session(client, make_price(client, recurring=True).id)
    standin.complete_checkout(session.id)
    sub_id = client.v1.checkout.sessions.retrieve(session.id).subscription
    invoice = standin.renew_subscription(sub_id, paid=False)

    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(invoice["id"], params={"payment_method": "pm_card_chargeDeclined"})
    assert declined.value.http_status == 402
    assert (declined.value.code, declined.value.json_body["error"]["decline_code"]) == (
        "card_declined",
        "generic_decline",
    )
    assert client.v1.invoices.retrieve(invoice["id"]).status == "open"

    paid = client.v1.invoices.pay(invoice["id"], params={"payment_method": "pm_card_visa"})
    assert paid.status == "paid" and paid.attempt_count == 3
    assert client.v1.subscriptions.retrieve(sub_id).status == "active"
    receiver.wait_for_type("invoice.payment_failed", count=2)
    receiver.wait_for_type("invoice.paid", count=2)


def test_billing_portal_session_returns_a_url(client, standin):
    customer = client.v1.customers.create(params={"email": "member@example.com"})
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://lodestone.test/account"}
    )
    assert portal.id.startswith("bps_") and portal.url.startswith(f"{standin.url}/portal/")
    with urllib.request.urlopen(portal.url, timeout=WAIT) as page:
        assert "https://lodestone.test/account" in page.read().decode()


# ---------------------------------------------------------------------- API behaviour
def test_idempotency_key_replays_the_first_response(client):
    price = make_price(client)
    params = {"mode": "payment", "line_items": [{"price": price.id, "quantity": 2}]}
    first = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "k-1"})
    second = client.v1.checkout.sessions.create(params=params, options={"idempotency_key": "k-1"})
    assert second.id == first.id
    assert second.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert len(client.v1.checkout.sessions.list().data) == 1


def test_idempotency_key_reused_with_other_parameters_is_an_idempotency_error(client):
    client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k"})
    with pytest.raises(stripe.IdempotencyError) as err:
        client.v1.customers.create(
            params={"email": "b@example.com"}, options={"idempotency_key": "k"}
        )
    assert err.value.http_status == 400
    assert err.value.json_body["error"]["type"] == "idempotency_error"


def test_missing_or_invalid_api_key_is_a_401(standin):
    bad = stripe.StripeClient(
        "sk_live_not_for_tests", base_addresses={"api": standin.url}, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError) as err:
        bad.v1.products.list()
    assert err.value.http_status == 401
    assert err.value.json_body["error"]["type"] == "invalid_request_error"
    request = urllib.request.Request(f"{standin.url}/v1/products")
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(request, timeout=WAIT)
    assert anonymous.value.code == 401
    assert "did not provide an API key" in json.load(anonymous.value)["error"]["message"]


def test_unknown_parameter_is_a_400_naming_the_parameter(client):
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.products.create(params={"name": "X", "colour": "blue"})
    assert err.value.http_status == 400
    assert err.value.code == "parameter_unknown" and err.value.param == "colour"
    price = make_price(client)
    with pytest.raises(stripe.InvalidRequestError) as nested:
        payment_session(client, price.id, line_items=[{"price": price.id, "quantity": 1, "x": 1}])
    assert nested.value.param == "line_items[0][x]"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.prices.create(params={"unit_amount": 100, "product": price.product})
    assert missing.value.code == "parameter_missing" and missing.value.param == "currency"


def test_unknown_ids_and_urls_are_404s(client):
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert err.value.http_status == 404 and err.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as price_err:
        payment_session(client, "price_missing")
    assert price_err.value.http_status == 404
    assert price_err.value.param == "line_items[0][price]"
    with pytest.raises(stripe.InvalidRequestError) as url_err:
        client.raw_request("get", "/v1/not_a_resource")
    assert url_err.value.http_status == 404
    assert "Unrecognized request URL" in url_err.value.user_message


def test_search_finds_objects_by_field_and_metadata(client):
    for n in range(3):
        client.v1.customers.create(
            params={"email": f"member{n}@example.com", "metadata": {"user_id": str(n)}}
        )
    found = client.v1.customers.search(params={"query": "email:'MEMBER1@example.com'"})
    assert [c.metadata["user_id"] for c in found.data] == ["1"]
    either = client.v1.customers.search(
        params={"query": "metadata['user_id']:'0' OR metadata['user_id']:'2'", "limit": 1}
    )
    assert either.object == "search_result" and either.has_more is True
    assert sorted(c.metadata["user_id"] for c in either.auto_paging_iter()) == ["0", "2"]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.search(params={"query": "email:"})


def test_deleted_customer_retrieves_as_deleted_stub(client):
    customer = client.v1.customers.create(params={"email": "leaving@example.com"})
    gone = client.v1.customers.delete(customer.id)
    assert gone.deleted is True
    again = client.v1.customers.retrieve(customer.id)
    assert again.deleted is True and again.id == customer.id


def test_expand_reaches_four_levels_and_rejects_unexpandable_fields(client):
    session = payment_session(client, make_price(client).id)
    deep = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["line_items.data.price.product"]}
    )
    assert deep.line_items.data[0].price.product.name == "Deep Work Course"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["currency"]})
    assert "cannot be expanded" in err.value.user_message


def test_global_api_base_configuration_also_works(standin, monkeypatch):
    monkeypatch.setattr(stripe, "api_key", DEFAULT_API_KEY)
    monkeypatch.setattr(stripe, "api_base", standin.url)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    product = stripe.Product.create(name="Legacy style")
    assert stripe.Product.retrieve(product.id).name == "Legacy style"


# ---------------------------------------------------------------------- webhook delivery
def test_webhook_endpoint_created_through_the_api_returns_its_secret(client, standin):
    r = Receiver()
    try:
        endpoint = client.v1.webhook_endpoints.create(
            params={"url": r.url, "enabled_events": ["customer.created"]}
        )
        assert endpoint.id.startswith("we_") and endpoint.status == "enabled"
        assert endpoint.secret.startswith("whsec_")
        r.secret = endpoint.secret
        client.v1.products.create(params={"name": "not subscribed to"})
        client.v1.customers.create(params={"email": "hook@example.com"})
        r.wait_for_type("customer.created")
        standin.wait_for_deliveries()
        assert r.types() == ["customer.created"]
        assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id)
        client.v1.webhook_endpoints.delete(endpoint.id)
        assert client.v1.webhook_endpoints.list().data == []
    finally:
        r.close()


def test_failed_deliveries_are_retried_on_the_virtual_clock(client, standin, receiver):
    receiver.script = [500, 503]
    customer = client.v1.customers.create(params={"email": "retry@example.com"})
    standin.wait_for_deliveries()
    (event,) = standin.events("customer.created")
    assert [a.status for a in standin.attempts(event_id=event["id"])] == [500]
    assert client.v1.events.retrieve(event["id"]).pending_webhooks == 1

    standin.advance_clock(standin.retry_schedule[0])
    standin.wait_for_deliveries()
    assert [a.status for a in standin.attempts(event_id=event["id"])] == [500, 503]

    standin.advance_clock(standin.retry_schedule[1])
    standin.wait_for_deliveries()
    attempts = standin.attempts(event_id=event["id"])
    assert [(a.status, a.kind, a.number) for a in attempts] == [
        (500, "automatic", 1),
        (503, "retry", 2),
        (200, "retry", 3),
    ]
    assert receiver.types() == ["customer.created"]
    assert receiver.events[0].data.object.id == customer.id
    assert client.v1.events.retrieve(event["id"]).pending_webhooks == 0


def test_manual_delivery_out_of_order_and_duplicates(client, standin, receiver):
    standin.auto_deliver = False
    client.v1.customers.create(params={"email": "one@example.com"})
    client.v1.customers.create(params={"email": "two@example.com"})
    assert receiver.types() == []
    first, second = standin.events("customer.created")

    sent = standin.deliver_pending(order="reverse")
    assert [a.event_id for a in sent] == [second["id"], first["id"]]
    receiver.wait_for_type("customer.created", count=2)
    assert [e.id for e in receiver.events] == [second["id"], first["id"]]

    (dup,) = standin.deliver(first["id"])
    assert dup.kind == "redelivery" and dup.ok
    receiver.wait_for_type("customer.created", count=3)
    assert [e.id for e in receiver.events].count(first["id"]) == 2


def test_stale_or_badly_signed_deliveries_fail_verification(client, standin, receiver):
    standin.auto_deliver = False
    client.v1.customers.create(params={"email": "sig@example.com"})
    (event,) = standin.events("customer.created")

    (stale,) = standin.deliver(event["id"], stale=True)
    (forged,) = standin.deliver(event["id"], bad_signature=True)
    assert (stale.status, forged.status) == (400, 400)
    assert stale.kind == forged.kind == "tampered"
    receiver.wait_for(lambda r: len(r.rejections) == 2)
    assert "tolerance" in receiver.rejections[0]
    assert "No signatures found matching" in receiver.rejections[1]
    assert receiver.types() == []

    (genuine,) = standin.deliver_pending()
    assert genuine.ok and genuine.event_id == event["id"]
    assert genuine.signature_header.startswith("t=") and ",v1=" in genuine.signature_header


def test_fixture_file_ships_unchanged_and_stripe_fixtures_overrides_it(monkeypatch, tmp_path):
    from tests.stripe_standin import start_stripe_standin
    from tests.stripe_standin._shapes import DEFAULT_FIXTURES, SHARED_FIXTURES

    assert DEFAULT_FIXTURES.is_file()
    if SHARED_FIXTURES.is_file():
        # the shipped copy is the project's shared one, byte for byte
        assert DEFAULT_FIXTURES.read_bytes() == SHARED_FIXTURES.read_bytes()
    copy = tmp_path / "fixtures.json"
    copy.write_bytes(DEFAULT_FIXTURES.read_bytes())
    monkeypatch.setenv("STRIPE_FIXTURES", str(copy))
    with start_stripe_standin() as other:
        assert other.shapes.path == copy
        assert other.client().v1.products.create(params={"name": "x"}).object == "product"
    monkeypatch.setenv("STRIPE_FIXTURES", str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="STRIPE_FIXTURES"):
        start_stripe_standin()


def test_http_control_api_mirrors_the_handle(client, standin, receiver):
    def control(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{standin.url}/_control/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            return json.load(answer)

    session = payment_session(client, make_price(client).id)
    done = control("POST", f"checkout/sessions/{session.id}/complete", {"outcome": "paid"})
    assert done["payment_status"] == "paid"
    refund = control("POST", "refunds", {"payment_intent": done["payment_intent"], "amount": 100})
    assert refund["amount"] == 100
    receiver.wait_for_type("charge.refunded")
    control("POST", "webhooks/wait", {"timeout": WAIT})
    attempts = control("GET", "attempts?type=charge.refunded")
    assert [a["status"] for a in attempts] == [200]
    assert control("POST", "clock/advance", {"seconds": 60})["clock"] >= standin.clock_now() - 1


def test_transport_callable_receives_signed_payloads_in_the_test_thread(client, standin):
    received: list[tuple[str, stripe.Event]] = []

    def transport(url: str, body: bytes, headers: dict[str, str]) -> int:
        event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_test")
        received.append((threading.current_thread().name, event))
        return 204

    standin.auto_deliver = False
    standin.add_webhook_endpoint("/stripe/webhook/", secret="whsec_test", transport=transport)
    client.v1.customers.create(params={"email": "inline@example.com"})
    standin.deliver_pending()
    assert [(name, e.type) for name, e in received] == [
        (threading.current_thread().name, "customer.created")
    ]

    body, headers = standin.signed_payload(received[0][1].id)
    assert stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_test")


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ("4000 0000 0000 0002", "Your card was declined."),
        ("4000000000009995", "Your card has insufficient funds."),
        ("4242 4242 4242 4241", "Your card number is invalid."),
        ("", "Your card number is incomplete."),
        ("4111 1111 1111 1111", "used a non test card"),
    ],
)
def test_hosted_page_refuses_declined_invalid_and_real_cards_and_keeps_the_session_open(
    client, standin, card, message
):
    session = payment_session(client, make_price(client).id)
    body = urllib.parse.urlencode(
        {"outcome": "paid", "email": "web@example.com", "card_number": card}
    ).encode()

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(urllib.request.Request(session.url, data=body), timeout=WAIT)

    assert answer.value.code == 402
    assert message in answer.value.read().decode()
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert (again.status, again.payment_status) == ("open", "unpaid")
