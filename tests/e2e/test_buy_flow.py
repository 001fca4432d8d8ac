"""A visitor buys from a landing page in Chromium: the buy button, Stripe's hosted checkout
(the stand-in), the success page, access; then a refund made through the official stripe
client takes the access away by webhook. gunicorn, the Celery worker, the SMTP sink and
the Stripe stand-in are real servers."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from funnels.models import LandingPage
from payments.models import Entitlement, Offer, Order, Price, Product
from tests.harness.plugin import SERVER_STRIPE_WEBHOOK_SECRET
from tests.harness.wagtail_pages import site_root_install
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WEBHOOK_PATH = "/pay/stripe/webhook/"


@pytest.fixture
def stripe_servers(web_server, celery_worker, server_stripe, settings):
    """The servers' Stripe stand-in, reset, posting its webhooks to gunicorn; this test
    process talks to the same stand-in (the official client, and offer syncs made here)."""
    server_stripe.reset()
    server_stripe.auto_deliver = True
    server_stripe.add_webhook_endpoint(
        web_server.url + WEBHOOK_PATH, secret=SERVER_STRIPE_WEBHOOK_SECRET
    )
    settings.STRIPE_API_BASE = server_stripe.url
    settings.STRIPE_SECRET_KEY = server_stripe.api_key
    settings.STRIPE_WEBHOOK_SECRET = SERVER_STRIPE_WEBHOOK_SECRET
    yield server_stripe
    server_stripe.reset()


def _course_for_sale() -> Offer:
    product = Product.objects.create(
        kind=Product.Kind.COURSE, slug="launch-your-first-course", title="Launch Your First Course"
    )
    offer = Offer.objects.create(
        slug="launch-your-first-course", title="Launch Your First Course", is_published=True
    )
    offer.products.add(product)
    Price.objects.create(offer=offer, amount=14900, currency="eur")
    return offer


def _landing_page_selling(offer: Offer) -> LandingPage:
    return site_root_install(
        LandingPage(
            title="Launch checklist",
            slug="launch-checklist",
            body=[
                ("hero", {"headline": "Launch your first course without the overwhelm"}),
                (
                    "buy_button",
                    {
                        "offer": offer,
                        "headline": "Ready to launch for real?",
                        "text": "Six weeks from idea to first sale.",
                        "button_label": "Get the course",
                    },
                ),
            ],
        )
    )


def test_visitor_buys_from_a_landing_page_and_a_refund_takes_access_away(
    stripe_servers, web_server, smtp_sink, page
):
    # given a landing page selling a course
    offer = _course_for_sale()
    _landing_page_selling(offer)
    email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"

    # when a visitor presses the buy button
    page.goto(web_server.url + "/")
    buy_box = page.locator("section.lp-buy")
    expect(buy_box).to_contain_text("€149.00")
    expect(buy_box).to_contain_text("Test checkout — no real payment")
    page.get_by_role("button", name="Get the course").click()

    # then Stripe's hosted checkout page shows the course and its price
    expect(page).to_have_url(re.compile(re.escape(stripe_servers.url) + r"/pay/cs_"))
    expect(page.locator("#total")).to_contain_text("149")

    # when they pay there
    page.locator("#email").fill(email)
    page.locator("#pay").click()

    # then they are back on the site, told that access is theirs
    expect(page).to_have_url(re.compile(re.escape(web_server.url) + r"/pay/checkout/success/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you — you are in!")
    expect(page.get_by_role("main")).to_contain_text("Launch Your First Course")
    order = Order.objects.get(email=email)
    assert order.status == Order.Status.PAID
    entitlement = Entitlement.objects.get(user=order.buyer, product=offer.products.get())
    assert entitlement.is_active()
    # the signed webhook for the same checkout was accepted too
    stripe_servers.wait_for_deliveries(timeout=10)
    assert [a.status for a in stripe_servers.attempts(type="checkout.session.completed")] == [200]
    # and the welcome email with a sign-in link went out through the worker
    welcome = smtp_sink.wait_for(lambda m: m["To"] == email)
    assert "/pay/login/" in welcome.get_body(("plain",)).get_content()

    # when the creator refunds the payment in Stripe
    stripe_servers.client().v1.refunds.create(
        params={"payment_intent": order.stripe_payment_intent_id}
    )

    # then Stripe's webhook takes the access away
    wait_until(
        lambda: Entitlement.objects.get(pk=entitlement.pk).revoked_at is not None,
        timeout=10,
        what="the charge.refunded webhook to revoke the entitlement",
    )
    order.refresh_from_db()
    assert order.status == Order.Status.REFUNDED
    assert order.amount_refunded == 14900
    stripe_servers.wait_for_deliveries(timeout=10)  # its answer is recorded after processing
    assert [a.status for a in stripe_servers.attempts(type="charge.refunded")] == [200]
