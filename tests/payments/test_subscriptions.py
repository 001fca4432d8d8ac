"""Memberships and payment plans: renewals, instalments counted to N, dunning, the end."""

import pytest
from django.test import Client

from core.models import OutboundEmail
from payments import selectors
from payments.models import Entitlement, Order, Price, Product, SubscriptionInvoice

from .conftest import BUYER, buy, link_in, make_offer, make_product

pytestmark = pytest.mark.django_db


@pytest.fixture
def membership(db):
    return make_offer(
        "inner-circle",
        amount=1500,
        kind=Price.Kind.SUBSCRIPTION,
        interval=Price.Interval.MONTH,
        products=[make_product("inner-circle-access", kind=Product.Kind.MEMBERSHIP)],
    )


@pytest.fixture
def payment_plan(db):
    return make_offer(
        "masterclass",
        amount=11000,
        kind=Price.Kind.PAYMENT_PLAN,
        interval=Price.Interval.MONTH,
        installments=3,
    )


def subscribe(sx, client, offer, django_capture_on_commit_callbacks) -> Order:
    sx.complete_checkout(buy(client, offer), email=BUYER)
    with django_capture_on_commit_callbacks(execute=True):
        sx.deliver_pending()
    return Order.objects.get()


def test_membership_checkout_is_a_subscription_with_access_while_it_runs(
    sx, webhook, client, membership, django_capture_on_commit_callbacks
):
    order = subscribe(sx, client, membership, django_capture_on_commit_callbacks)

    assert sx.get(order.stripe_checkout_session_id)["mode"] == "subscription"
    assert order.status == Order.Status.PAID
    assert order.stripe_subscription_id.startswith("sub_")
    assert order.subscription_status == "active"
    entitlement = Entitlement.objects.get()
    assert (entitlement.source, entitlement.ends_at) == ("subscription", None)
    assert sx.get(order.stripe_subscription_id)["metadata"]["lodestone_offer_id"] == str(
        membership.pk
    )

    sx.renew_subscription(order.stripe_subscription_id)
    sx.deliver_pending()

    assert SubscriptionInvoice.objects.filter(order=order).count() == 2
    assert selectors.has_access(order.buyer, membership.products.get())


def test_subscription_deleted_ends_membership_access(
    sx, webhook, client, membership, django_capture_on_commit_callbacks
):
    from payments.signals import access_revoked

    order = subscribe(sx, client, membership, django_capture_on_commit_callbacks)
    revoked = []

    def receiver(sender, order, products, reason, **kwargs):
        revoked.append((order.pk, [p.slug for p in products], reason))

    access_revoked.connect(receiver)
    try:
        sx.cancel_subscription(order.stripe_subscription_id)
        with django_capture_on_commit_callbacks(execute=True):
            sx.deliver_pending()
    finally:
        access_revoked.disconnect(receiver)

    order.refresh_from_db()
    assert order.subscription_status == "canceled"
    assert order.status == Order.Status.PAID, "they paid for what they had"
    assert not selectors.has_access(order.buyer, membership.products.get())
    entitlement = Entitlement.objects.get()
    assert entitlement.ends_at is not None
    assert entitlement.revoked_at is None
    assert revoked == [(order.pk, ["inner-circle-access"], "subscription ended")]


def test_subscription_deleted_before_the_purchase_event_still_ends_access(
    sx, webhook, client, membership
):
    session_id = buy(client, membership)
    session = sx.complete_checkout(session_id, email=BUYER)
    sx.cancel_subscription(session["subscription"])

    sx.deliver_pending(order="reverse")

    order = Order.objects.get()
    assert order.status == Order.Status.PAID
    assert order.subscription_status == "canceled"
    assert not selectors.has_access(order.buyer, membership.products.get())


def test_payment_plan_counts_instalments_then_stops_billing_and_keeps_access_for_good(
    sx, webhook, client, payment_plan, django_capture_on_commit_callbacks
):
    order = subscribe(sx, client, payment_plan, django_capture_on_commit_callbacks)
    product = payment_plan.products.get()
    assert (order.installments_paid, order.installments_total) == (1, 3)
    assert Entitlement.objects.get().source == "subscription"

    sx.renew_subscription(order.stripe_subscription_id)
    with django_capture_on_commit_callbacks(execute=True):
        sx.deliver_pending()
    order.refresh_from_db()
    assert order.installments_paid == 2
    assert order.plan_completed_at is None
    assert sx.get(order.stripe_subscription_id)["status"] == "active"

    sx.renew_subscription(order.stripe_subscription_id)
    with django_capture_on_commit_callbacks(execute=True):
        sx.deliver_pending()  # the third invoice.paid: the plan is complete

    order.refresh_from_db()
    assert order.installments_paid == 3
    assert order.plan_completed_at is not None
    assert order.subscription_cancel_requested_at is not None
    assert sx.get(order.stripe_subscription_id)["status"] == "canceled"
    entitlement = Entitlement.objects.get()
    assert (entitlement.source, entitlement.ends_at) == ("order", None)

    sx.deliver_pending()  # Stripe's customer.subscription.deleted for the cancellation

    assert [a.event_type for a in sx.attempts(type="customer.subscription.deleted")] == [
        "customer.subscription.deleted"
    ]
    assert selectors.has_access(order.buyer, product), "paid in full: access for good"
    assert not Entitlement.objects.get().ends_at
    with pytest.raises(Exception, match="cannot renew"):
        sx.renew_subscription(order.stripe_subscription_id)


def test_payment_plan_abandoned_part_way_ends_access(
    sx, webhook, client, payment_plan, django_capture_on_commit_callbacks
):
    order = subscribe(sx, client, payment_plan, django_capture_on_commit_callbacks)

    sx.cancel_subscription(order.stripe_subscription_id)
    sx.deliver_pending()

    assert not selectors.has_access(order.buyer, payment_plan.products.get())


def test_same_invoice_paid_event_twice_counts_one_instalment(
    sx, webhook, client, payment_plan, django_capture_on_commit_callbacks
):
    order = subscribe(sx, client, payment_plan, django_capture_on_commit_callbacks)
    sx.renew_subscription(order.stripe_subscription_id)
    sx.deliver_pending()
    paid_event = sx.last_event("invoice.paid")

    sx.deliver(paid_event["id"])
    sx.deliver(paid_event["id"])

    order.refresh_from_db()
    assert order.installments_paid == 2


def test_failed_renewal_emails_the_buyer_a_link_to_the_billing_portal(
    sx, webhook, client, membership, django_capture_on_commit_callbacks
):
    order = subscribe(sx, client, membership, django_capture_on_commit_callbacks)

    sx.renew_subscription(order.stripe_subscription_id, paid=False)
    sx.deliver_pending()

    [mail] = OutboundEmail.objects.filter(kind="payments:dunning")
    assert mail.to == BUYER
    assert "$15.00" in mail.text_body
    order.refresh_from_db()
    assert order.subscription_status == "past_due"
    assert selectors.has_access(order.buyer, membership.products.get()), "access while dunning"

    portal = link_in(mail.text_body, "/pay/billing/")
    response = Client().get(portal.removeprefix("http://testserver"))

    assert response.status_code == 303
    assert response["Location"].startswith(f"{sx.url}/portal/bps_")

    sx.retry_invoice(sx.last_event("invoice.payment_failed")["data"]["object"]["id"])
    sx.deliver_pending()
    order.refresh_from_db()
    assert order.subscription_status == "active"


def test_billing_portal_link_that_was_tampered_with_is_refused(sx, client):
    response = client.get("/pay/billing/not-a-real-token/")

    assert response.status_code == 400
    assert "not valid" in response.content.decode()


def test_refund_of_the_first_subscription_payment_before_the_purchase_event_wins(
    sx, webhook, client, membership
):
    session = sx.complete_checkout(buy(client, membership), email=BUYER)
    invoice = sx.get(session["invoice"], expand=["payments"])
    sx.refund(invoice["payments"]["data"][0]["payment"]["payment_intent"])

    attempts = sx.deliver_pending(order="reverse")

    assert all(a.ok for a in attempts)
    order = Order.objects.get()
    assert order.status == Order.Status.REFUNDED
    assert Entitlement.objects.count() == 0


def test_refund_of_a_renewal_takes_membership_access_away(
    sx, webhook, client, membership, django_capture_on_commit_callbacks
):
    order = subscribe(sx, client, membership, django_capture_on_commit_callbacks)
    renewal = sx.renew_subscription(order.stripe_subscription_id)
    sx.deliver_pending()
    paid = sx.get(renewal["id"], expand=["payments"])

    sx.refund(paid["payments"]["data"][0]["payment"]["payment_intent"])
    sx.deliver_pending()

    order.refresh_from_db()
    assert order.status == Order.Status.REFUNDED
    assert not selectors.has_access(order.buyer, membership.products.get())
