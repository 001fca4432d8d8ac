"""A visitor buys a course from a landing page in Chromium: the buy button, Stripe's hosted
checkout (the stand-in; a declined test card, then one that pays), the success page, a paid
lesson opened; then a refund made through the official stripe client takes the access away
by webhook and the lesson is refused. gunicorn, the Celery worker, the SMTP sink and
the Stripe stand-in are real servers."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from funnels.models import LandingPage
from payments.models import Entitlement, Offer, Order
from tests.courses.conftest import PAID_LESSON_TEXT, course_tree_install, publish_child
from tests.harness.wagtail_pages import home_page_install
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _landing_page_selling(home, offer: Offer) -> LandingPage:
    return publish_child(
        home,
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
        ),
    )


def test_visitor_buys_from_a_landing_page_and_a_refund_takes_access_away(
    stripe_servers, web_server, smtp_sink, page
):
    # given a course, and a landing page selling it
    home = home_page_install(title="Northwind Academy")
    tree = course_tree_install(home)
    offer = tree.offer
    landing = _landing_page_selling(home, offer)
    email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"

    # when a visitor presses the buy button
    page.goto(web_server.url + landing.url)
    buy_box = page.locator("section.lp-buy")
    expect(buy_box).to_contain_text("€149.00")
    expect(buy_box).to_contain_text("Test checkout — no real payment")
    page.get_by_role("button", name="Get the course").click()

    # then Stripe's hosted checkout page shows the course and its price
    expect(page).to_have_url(re.compile(re.escape(stripe_servers.url) + r"/pay/cs_"))
    expect(page.locator("#total")).to_contain_text("149")

    # when they pay there with Stripe's declined test card
    page.locator("#email").fill(email)
    page.locator("#card-number").fill("4000 0000 0000 0002")
    page.locator("#pay").click()

    # then the checkout says so and nothing was bought
    expect(page.get_by_role("alert")).to_have_text("Your card was declined.")
    assert not Order.objects.filter(email=email).exists()

    # when they pay with the test card that works
    page.locator("#card-number").fill("4242 4242 4242 4242")
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
    # when they start the course from there and open a paid lesson
    page.get_by_role("link", name="Start now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Launch Your First Course")
    page.goto(web_server.url + tree.paid_lesson.url)

    # then the lesson is theirs
    expect(page.get_by_role("heading", level=1)).to_have_text(tree.paid_lesson.title)
    expect(page.get_by_role("main")).to_contain_text(PAID_LESSON_TEXT)
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

    # and the lesson is refused to them from that moment
    response = page.goto(web_server.url + tree.paid_lesson.url)
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("is for students of this course")
    expect(page.get_by_role("main")).not_to_contain_text(PAID_LESSON_TEXT)
