"""The buyer's account page: their purchases with Stripe's receipts, what they can open, and
the way to Stripe's billing portal. Only ever their own."""

from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from payments.models import Order, Price

from .conftest import BUYER, buy, make_offer, make_product

pytestmark = pytest.mark.django_db

ACCOUNT_URL = "/account/"


def purchase(sx, offer, email=BUYER) -> Order:
    session_id = buy(Client(), offer)
    sx.complete_checkout(session_id, email=email)
    sx.deliver_pending()
    return Order.objects.get(stripe_checkout_session_id=session_id)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_account_lists_the_buyers_orders_with_amount_status_and_receipt(sx, webhook):
    order = purchase(sx, make_offer("launch-course", title="Launch Course", amount=4900))
    other = purchase(sx, make_offer("ebook", title="The E-book", amount=900, currency="eur"))

    html = signed_in(order.buyer).get(ACCOUNT_URL).content.decode()

    assert "Your purchases" in html
    assert "Launch Course" in html and "$49.00" in html
    assert "The E-book" in html and "€9.00" in html
    assert html.count(">Paid<") == 2
    assert reverse("account_order_receipt", args=[order.pk]) in html
    assert reverse("account_order_receipt", args=[other.pk]) in html
    assert "Manage subscription and cards" in html


def test_account_never_shows_someone_elses_orders(sx, webhook):
    purchase(sx, make_offer(title="Launch Course"), email="aino@example.fi")
    stranger = User.objects.create_user("mai@example.vn")

    html = signed_in(stranger).get(ACCOUNT_URL).content.decode()

    assert "Launch Course" not in html
    assert "You have not bought anything yet." in html
    assert "See what is on offer" in html
    assert "Manage subscription and cards" not in html


def test_account_lists_what_the_buyer_can_open_and_not_what_was_refunded(sx, webhook):
    kept = make_offer("course", title="The Course", products=[make_product("course-access")])
    refunded = make_offer("ebook", title="The E-book", products=[make_product("ebook-file")])
    order = purchase(sx, kept)
    gone = purchase(sx, refunded)
    sx.refund(gone.stripe_payment_intent_id)
    sx.deliver_pending()

    html = signed_in(order.buyer).get(ACCOUNT_URL).content.decode()

    access = html.split('id="access-title"')[1].split("</section>")[0]
    assert "Course Access" in access
    assert "Ebook File" not in access
    assert ">Refunded<" in html  # the order is still listed, as refunded


def test_payment_plan_order_shows_how_many_payments_are_made(sx, webhook):
    plan = make_offer(
        "plan",
        title="Course in instalments",
        amount=1900,
        kind=Price.Kind.PAYMENT_PLAN,
        interval=Price.Interval.MONTH,
        installments=3,
    )
    order = purchase(sx, plan)

    html = signed_in(order.buyer).get(ACCOUNT_URL).content.decode()

    assert "payment plan, 1 of 3 paid" in html


def test_receipt_link_opens_stripes_receipt_for_the_payment(sx, webhook):
    order = purchase(sx, make_offer(amount=4900))

    response = signed_in(order.buyer).get(reverse("account_order_receipt", args=[order.pk]))

    assert response.status_code == 303
    charge = sx.get(order.stripe_payment_intent_id, expand=["latest_charge"])["latest_charge"]
    assert response["Location"] == charge["receipt_url"]
    assert urlsplit(response["Location"]).path.startswith("/receipts/")


def test_receipt_of_a_subscription_is_its_hosted_invoice(sx, webhook):
    club = make_offer(
        "club", amount=1000, kind=Price.Kind.SUBSCRIPTION, interval=Price.Interval.MONTH
    )
    order = purchase(sx, club)

    response = signed_in(order.buyer).get(reverse("account_order_receipt", args=[order.pk]))

    assert response.status_code == 303
    assert response["Location"] == sx.get(order.stripe_invoice_id)["hosted_invoice_url"]


def test_receipt_of_someone_elses_order_is_not_found(sx, webhook):
    order = purchase(sx, make_offer())
    stranger = User.objects.create_user("mai@example.vn")

    response = signed_in(stranger).get(reverse("account_order_receipt", args=[order.pk]))

    assert response.status_code == 404


def test_receipt_when_stripe_is_down_says_so_on_the_account_page(sx, webhook, settings):
    from .conftest import closed_port_url

    order = purchase(sx, make_offer())
    settings.STRIPE_API_BASE = closed_port_url()

    response = signed_in(order.buyer).get(
        reverse("account_order_receipt", args=[order.pk]), follow=True
    )

    assert response.redirect_chain[-1][0] == ACCOUNT_URL
    assert "receipt for this order is not available right now" in response.content.decode()


def test_manage_billing_opens_the_stripe_billing_portal_for_the_buyer(sx, webhook):
    order = purchase(sx, make_offer())

    response = signed_in(order.buyer).post(reverse("payments:billing_portal_mine"))

    assert response.status_code == 303
    assert "/portal/" in response["Location"]


def test_account_page_needs_a_signed_in_user(client):
    response = client.get(ACCOUNT_URL)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
