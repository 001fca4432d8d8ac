"""The creator's payments admin: offers and their prices, orders, Stripe events, the revenue
report and the dashboard panel. Purchases go through the Stripe stand-in, as in production."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from wagtail.models import Page

from accounts.models import User
from funnels.models import LandingPage
from payments import selectors, services, tasks
from payments.models import Offer, Order, PaymentReversal, Price, StripeEvent, SyncStatus

from .conftest import BUYER, buy, closed_port_url, make_offer, make_product

pytestmark = pytest.mark.django_db

OFFERS_URL = "/admin/snippets/payments/offer/"
ORDERS_URL = "/admin/payments/orders/"
EVENTS_URL = "/admin/payments/stripe-events/"
REVENUE_URL = "/admin/payments/revenue/"


@pytest.fixture
def creator_client():
    creator = User.objects.create_superuser("creator@example.com", "a-long pass phrase")
    client = Client()
    client.force_login(creator)
    return client


def purchase(sx, offer, email=BUYER) -> Order:
    """A buyer pays on Stripe's page and the webhooks arrive."""
    session_id = buy(Client(), offer)
    sx.complete_checkout(session_id, email=email)
    sx.deliver_pending()
    return Order.objects.get(stripe_checkout_session_id=session_id)


def section(html: str, currency: str) -> str:
    """The revenue report's section for one currency."""
    match = re.search(
        rf'<section class="payments-currency"[^>]*data-currency="{currency}">(.*?)</section>',
        html,
        re.S,
    )
    assert match, f"no {currency} section"
    return match.group(1)


def figure(html: str, name: str) -> str:
    return re.search(rf'data-figure="{name}">([^<]+)<', html).group(1)


# --- Offers and prices ----------------------------------------------------------------------


def test_offer_list_shows_slug_products_formatted_prices_and_the_sync_error(creator_client):
    offer = make_offer("launch-course", amount=4900, products=[make_product("launch-video")])
    Price.objects.create(offer=offer, amount=490000, currency="jpy")
    Offer.objects.filter(pk=offer.pk).update(
        sync_status=SyncStatus.FAILED, sync_error="InvalidRequestError: No such product"
    )

    response = creator_client.get(OFFERS_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert "launch-course" in html
    assert "Launch Video" in html
    assert "$49.00, ¥490,000" in html
    assert "Sync failed" in html
    assert "No such product" in html


def test_new_offer_gets_its_first_price_in_minor_units_and_a_queued_sync(
    creator_client, django_capture_on_commit_callbacks
):
    product = make_product("ebook", title="The E-book")

    with django_capture_on_commit_callbacks() as callbacks:
        response = creator_client.post(
            OFFERS_URL + "add/",
            {
                "title": "The E-book",
                "slug": "the-ebook",
                "description": "",
                "is_published": "on",
                "products": [product.pk],
                "first_price_amount": "19.50",
                "first_price_currency": "EUR",
                "bump_headline": "",
            },
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    offer = Offer.objects.get(slug="the-ebook")
    price = offer.prices.get()
    assert (price.amount, price.currency, price.kind) == (1950, "eur", Price.Kind.ONE_TIME)
    assert list(offer.products.all()) == [product]
    assert len(callbacks) == 1, "one sync queued for after the commit"


def test_new_offer_refuses_a_price_finer_than_its_currency(creator_client):
    product = make_product("ebook")

    response = creator_client.post(
        OFFERS_URL + "add/",
        {
            "title": "The E-book",
            "slug": "the-ebook",
            "products": [product.pk],
            "first_price_amount": "4900.5",
            "first_price_currency": "jpy",
        },
    )

    assert response.status_code == 200
    assert "JPY has 0 decimal places" in response.content.decode()
    assert not Offer.objects.exists()


def test_offer_page_lists_its_prices_with_their_stripe_state_and_links_to_edit_and_add(
    creator_client,
):
    offer = make_offer(amount=4900)
    plan = Price.objects.create(
        offer=offer,
        kind=Price.Kind.PAYMENT_PLAN,
        amount=1900,
        currency="usd",
        interval=Price.Interval.MONTH,
        installments=3,
    )

    response = creator_client.get(OFFERS_URL + f"edit/{offer.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Prices and Stripe" in html
    assert "$49.00" in html
    assert "3 × $19.00 / month" in html
    assert "Not yet in Stripe" in html
    assert reverse("payments_prices:edit", args=[plan.pk]) in html
    assert reverse("payments_prices:add") + f"?offer={offer.pk}" in html


def test_price_is_typed_as_the_buyer_reads_it_and_saved_in_minor_units(
    creator_client, django_capture_on_commit_callbacks
):
    offer = make_offer(amount=4900)

    with django_capture_on_commit_callbacks() as callbacks:
        response = creator_client.post(
            reverse("payments_prices:add") + f"?offer={offer.pk}",
            {
                "offer": offer.pk,
                "kind": Price.Kind.SUBSCRIPTION,
                "amount": "12.5",
                "currency": "GBP",
                "interval": Price.Interval.MONTH,
                "installments": "",
                "is_active": "on",
            },
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == OFFERS_URL + f"edit/{offer.pk}/"
    price = offer.prices.get(kind=Price.Kind.SUBSCRIPTION)
    assert (price.amount, price.currency, price.display) == (1250, "gbp", "£12.50 / month")
    assert len(callbacks) == 1


def test_price_edit_shows_the_amount_in_major_units_and_keeps_its_offer(creator_client):
    offer = make_offer(amount=4900)
    other = make_offer("other", amount=100)
    price = offer.prices.get()

    form = creator_client.get(reverse("payments_prices:edit", args=[price.pk]))
    response = creator_client.post(
        reverse("payments_prices:edit", args=[price.pk]),
        {
            "offer": other.pk,
            "kind": Price.Kind.ONE_TIME,
            "amount": "59",
            "currency": "usd",
            "interval": "",
            "installments": "",
            "is_active": "on",
        },
    )

    assert 'value="49.00"' in form.content.decode()
    assert response.status_code == 302, response.content.decode()[:2000]
    price.refresh_from_db()
    assert (price.offer_id, price.amount) == (offer.pk, 5900)


def test_a_bought_price_cannot_be_deleted_only_switched_off(sx, webhook, creator_client):
    offer = make_offer()
    purchase(sx, offer)
    price = offer.prices.get()

    response = creator_client.post(reverse("payments_prices:delete", args=[price.pk]))

    assert response.status_code == 302
    assert Price.objects.filter(pk=price.pk).exists()


def test_sync_action_queues_the_sync_that_puts_the_offer_in_stripe(
    sx, creator_client, django_capture_on_commit_callbacks
):
    offer = make_offer(amount=4900)

    with django_capture_on_commit_callbacks() as callbacks:
        response = creator_client.post(OFFERS_URL + f"sync/{offer.pk}/")
    assert response.status_code == 302
    assert len(callbacks) == 1
    tasks.offer_sync.apply(args=[offer.pk])  # what the worker does with it

    offer.refresh_from_db()
    assert offer.sync_status == SyncStatus.SYNCED
    assert sx.get(offer.stripe_product_id)["name"] == offer.title
    assert creator_client.get(OFFERS_URL).content.decode().count("In Stripe") >= 1


def test_offer_is_choosable_from_a_landing_page_buy_button_block(creator_client):
    make_offer("launch-course", title="Launch Course")
    page = LandingPage(title="Launch", slug="launch")
    Page.get_first_root_node().add_child(instance=page)

    edit = creator_client.get(reverse("wagtailadmin_pages:edit", args=[page.pk]))
    chooser_url = reverse("wagtailsnippetchoosers_payments_offer:choose")
    chooser = creator_client.get(chooser_url)

    assert edit.status_code == 200
    assert "Buy button" in edit.content.decode()
    assert chooser_url in edit.content.decode()
    assert chooser.status_code == 200
    assert "Launch Course" in chooser.json()["html"]


# --- Orders -------------------------------------------------------------------------------


def test_orders_filter_by_status_offer_and_date_and_search_by_email(sx, webhook, creator_client):
    course = make_offer("course", title="The Course")
    ebook = make_offer("ebook", title="The E-book", amount=900)
    first = purchase(sx, course, email="aino@example.fi")
    purchase(sx, ebook, email="mai@example.vn")
    refunded = purchase(sx, course, email="kofi@example.gh")
    sx.refund(refunded.stripe_payment_intent_id)
    sx.deliver_pending()
    Order.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=40))

    def emails(**query):
        html = creator_client.get(ORDERS_URL, query).content.decode()
        return sorted(set(re.findall(r"[a-z]+@example\.(?:fi|vn|gh)", html)))

    assert emails() == ["aino@example.fi", "kofi@example.gh", "mai@example.vn"]
    assert emails(status="refunded") == ["kofi@example.gh"]
    assert emails(offer=ebook.pk) == ["mai@example.vn"]
    since = (timezone.localdate() - timedelta(days=7)).isoformat()
    assert emails(created_from=since) == ["kofi@example.gh", "mai@example.vn"]
    assert emails(q="aino") == ["aino@example.fi"]


def test_order_page_shows_items_access_stripe_ids_and_its_events(sx, webhook, creator_client):
    offer = make_offer(title="Launch Course", amount=4900)
    order = purchase(sx, offer)

    html = creator_client.get(ORDERS_URL + f"inspect/{order.pk}/").content.decode()

    assert "Launch Course" in html
    assert "$49.00" in html
    assert BUYER in html
    assert order.stripe_checkout_session_id in html
    assert order.stripe_payment_intent_id in html
    assert "checkout.session.completed" in html
    assert "Active" in html  # the entitlement
    assert "Approve" not in html


def test_order_held_for_review_is_approved_from_its_page(
    sx, webhook, creator_client, stripe_client
):
    offer = make_offer(amount=4900, currency="usd")
    price = offer.prices.get()
    offer = services.offer_sync_to_stripe(offer_id=offer.pk)
    # A session naming our offer at another amount (a payment link, a leaked key).
    session = stripe_client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "unit_amount": 100,
                        "currency": "usd",
                        "product": offer.stripe_product_id,
                    },
                    "quantity": 1,
                }
            ],
            "success_url": "http://testserver/pay/checkout/success/?session_id={CHECKOUT_SESSION_ID}",
            "metadata": {"lodestone_offer_id": str(offer.pk), "lodestone_price_id": str(price.pk)},
        }
    )
    sx.complete_checkout(session.id, email=BUYER)
    sx.deliver_pending()
    order = Order.objects.get()
    assert order.status == Order.Status.NEEDS_REVIEW

    page = creator_client.get(ORDERS_URL + f"inspect/{order.pk}/").content.decode()
    response = creator_client.post(reverse("payments_orders:approve", args=[order.pk]))

    assert "Approve and grant access" in page
    assert "$1.00" in page  # the review reason names what was paid
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert selectors.has_access(order.buyer, offer.products.get())


def test_staff_without_the_order_permission_cannot_approve(sx, webhook, client):
    offer = make_offer()
    order = purchase(sx, offer)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.NEEDS_REVIEW)
    staff = User.objects.create_user("helper@example.com", "a-long pass phrase", is_staff=True)
    client.force_login(staff)

    response = client.post(reverse("payments_orders:approve", args=[order.pk]))

    assert response.status_code in (302, 403)
    assert Order.objects.get(pk=order.pk).status == Order.Status.NEEDS_REVIEW


def test_orders_csv_has_amounts_in_major_units_and_defuses_formulas(sx, webhook, creator_client):
    offer = make_offer(amount=4900)
    purchase(sx, offer, email="=cmd@example.com")

    response = creator_client.get(ORDERS_URL, {"export": "csv"})

    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows[0]["Email"] == "'=cmd@example.com"
    assert rows[0]["Total"] == "49.00"
    assert rows[0]["Currency"] == "USD"
    assert rows[0]["Status"] == "Paid"


def test_orders_cannot_be_added_edited_or_deleted_by_hand(sx, webhook, creator_client):
    order = purchase(sx, make_offer())

    assert creator_client.get(ORDERS_URL + "new/").status_code in (302, 403)
    assert creator_client.post(ORDERS_URL + f"edit/{order.pk}/", {}).status_code in (302, 403)
    assert creator_client.post(ORDERS_URL + f"delete/{order.pk}/").status_code in (302, 403)
    assert Order.objects.filter(pk=order.pk).exists()


# --- Stripe events ------------------------------------------------------------------------


def test_failed_event_is_listed_and_replayed_once_the_cause_is_fixed(
    sx, webhook, settings, creator_client
):
    offer = make_offer()
    session = sx.complete_checkout(buy(Client(), offer), email=BUYER)
    sx.refund(session["payment_intent"])
    refund = sx.last_event("charge.refunded")
    api_base = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = closed_port_url()  # Stripe is down while the refund arrives
    sx.deliver(refund["id"])
    event = StripeEvent.objects.get(stripe_id=refund["id"])

    failed_list = creator_client.get(EVENTS_URL, {"state": "failed"}).content.decode()
    page = creator_client.get(EVENTS_URL + f"inspect/{event.pk}/").content.decode()
    settings.STRIPE_API_BASE = api_base
    response = creator_client.post(reverse("payments_events:replay", args=[event.pk]))

    assert refund["id"] in failed_list
    assert "APIConnectionError" in failed_list
    assert "Replay" in page
    assert "Traceback" in page
    assert response.status_code == 302
    event.refresh_from_db()
    assert event.processed_at is not None
    assert event.last_error == ""
    assert PaymentReversal.objects.filter(stripe_object_id=refund["data"]["object"]["id"]).exists()


def test_replay_that_fails_again_keeps_the_error_and_says_so(sx, webhook, settings, creator_client):
    offer = make_offer()
    session = sx.complete_checkout(buy(Client(), offer), email=BUYER)
    sx.refund(session["payment_intent"])
    refund = sx.last_event("charge.refunded")
    settings.STRIPE_API_BASE = closed_port_url()
    sx.deliver(refund["id"])
    event = StripeEvent.objects.get(stripe_id=refund["id"])

    response = creator_client.post(reverse("payments_events:replay", args=[event.pk]), follow=True)

    assert "failed again" in response.content.decode()
    event.refresh_from_db()
    assert event.processed_at is None
    assert event.attempts == 2


# --- Revenue ------------------------------------------------------------------------------


def test_revenue_report_counts_each_currency_on_its_own(sx, webhook, creator_client):
    course = make_offer("course", title="The Course", amount=4900, currency="usd")
    ebook = make_offer("ebook", title="The E-book", amount=1900, currency="usd")
    club = make_offer(
        "club",
        title="The Club",
        amount=1000,
        currency="eur",
        kind=Price.Kind.SUBSCRIPTION,
        interval=Price.Interval.MONTH,
    )
    purchase(sx, course, email="aino@example.fi")
    refunded = purchase(sx, course, email="kofi@example.gh")
    purchase(sx, ebook, email="mai@example.vn")
    member = purchase(sx, club, email="leila@example.ir")
    sx.refund(refunded.stripe_payment_intent_id)
    sx.renew_subscription(member.stripe_subscription_id)  # a second month, paid
    sx.deliver_pending()
    old = purchase(sx, course, email="old@example.com")
    Order.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=45),
        paid_at=timezone.now() - timedelta(days=45),
    )

    response = creator_client.get(REVENUE_URL)

    html = response.content.decode()
    assert response.status_code == 200
    usd, eur = section(html, "usd"), section(html, "eur")
    assert figure(usd, "gross") == "$117.00"  # 49 + 49 + 19; the 45-day-old order is out
    assert figure(usd, "refunds") == "$49.00"
    assert figure(usd, "net") == "$68.00"
    assert figure(usd, "orders") == "3"
    assert figure(eur, "gross") == "€20.00"  # the first month and the renewal
    assert figure(eur, "orders") == "1"
    assert "€" not in usd and "$" not in eur, "never mixed"
    assert "<svg" in usd and "<svg" in eur
    assert "The Course" in usd and "The E-book" in usd and "The Club" in eur
    assert "kofi@example.gh" in html  # the refunds list


def test_revenue_report_period_can_be_chosen(sx, webhook, creator_client):
    offer = make_offer(amount=4900)
    old = purchase(sx, offer)
    Order.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=45),
        paid_at=timezone.now() - timedelta(days=45),
    )
    today = timezone.localdate()

    html = creator_client.get(
        REVENUE_URL,
        {"since": (today - timedelta(days=89)).isoformat(), "until": today.isoformat()},
    ).content.decode()

    assert figure(section(html, "usd"), "gross") == "$49.00"


def test_revenue_report_without_payments_says_so(creator_client):
    html = creator_client.get(REVENUE_URL).content.decode()

    assert "No payments in this period." in html


def test_dashboard_shows_last_weeks_revenue_per_currency(sx, webhook, creator_client):
    purchase(sx, make_offer("course", amount=4900, currency="usd"))
    purchase(sx, make_offer("ebook", amount=1500, currency="eur"), email="mai@example.vn")

    html = creator_client.get("/admin/").content.decode()

    assert "Revenue, last 7 days" in html
    assert "$49.00" in html
    assert "€15.00" in html


def test_revenue_is_hidden_from_staff_without_the_order_permission(client):
    staff = User.objects.create_user("helper@example.com", "a-long pass phrase", is_staff=True)
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="access_admin"))
    client.force_login(staff)

    assert client.get(REVENUE_URL).status_code in (302, 403)
    assert "Revenue, last 7 days" not in client.get("/admin/").content.decode()
