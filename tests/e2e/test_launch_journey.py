"""Launch day, as one visitor lives it, in one Chromium session: the landing page, the
opt-in, the confirmation link from their inbox, the stamped checklist, the drip sequence's
offer email, its tracked link to the course, Stripe's checkout (the stand-in) with the
test card, the lesson's video playing from signed segments, a webinar registration; then
the creator refunds, Stripe's webhook takes the access away, and the lesson says so.

gunicorn, the Celery worker, the SMTP sink and the Stripe stand-in are real servers. Time
is not moved by patching: the offer is the sequence's zero-delay first step, the visitor's
browser is in a zone where it is now the middle of the day (inside the send window), and
the real scheduler task runs on the worker.
"""

import re
import subprocess
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from funnels.models import DripDelivery, Enrolment, Subscriber
from funnels.sequences import scheduler
from funnels.sequences.windows import Window, in_window, zone_for
from funnels.tasks_sequences import drip_schedule
from media.models import DownloadDelivery
from payments.models import Entitlement, Order
from tests.harness.waiting import wait_until
from webinars.models import Registration

from .journey_world import (
    CONSENT,
    LAST_CALL_SUBJECT,
    MAGNET_PDF,
    bot_check_wait,
    daytime_zone,
    launch_world_build,
    link_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PLAYER = "document.querySelector('[data-video-player] video')"
SEGMENT_URL = re.compile(r"/protected/video/seg/[\w-]+\.[0-9a-f]+\.[\w-]{22}/$")


@pytest.fixture
def visitor_zone() -> str:
    """Where the visitor is: a zone where it is the middle of the day now."""
    return daytime_zone()


@pytest.fixture
def browser_context(browser, visitor_zone):
    """The visitor's browser, in their zone (the harness's `page` fixture opens its page
    here)."""
    context = browser.new_context(locale="en-US", timezone_id=visitor_zone)
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_a_visitor_goes_from_the_landing_page_to_a_refund_and_loses_access(
    web_server,
    celery_worker,
    smtp_sink,
    stripe_servers,
    server_protected_storage,
    page,
    visitor_zone,
    settings,
    tmp_path,
    tmp_path_factory,
):
    # given the creator's launch: a landing page and its sequence, a course, a webinar
    settings.SITE_URL = web_server.url
    world = launch_world_build(
        site_url=web_server.url,
        protected_storage=server_protected_storage,
        basetemp=tmp_path_factory.getbasetemp(),
    )
    tree = world.tree
    email = f"leila-{uuid.uuid4().hex[:10]}@example.com"
    responses: list[tuple[str, int]] = []
    page.on("response", lambda r: responses.append((_path(r.url), r.status)))

    # when a visitor opens the landing page and opts in
    page.goto(f"{web_server.url}{world.landing.url}?utm_source=podcast")
    form = page.locator("form[data-optin-form]")
    form.get_by_label("First name").fill("Leila")
    form.get_by_label("Email address").fill(email)
    form.get_by_label(CONSENT).check()
    bot_check_wait(form)
    form.get_by_role("button", name="Send me the checklist").click()

    # then they are asked to confirm, and the confirmation email arrives
    expect(page.get_by_role("status").filter(has_text="check your inbox")).to_be_visible()
    confirmation = smtp_sink.wait_for(lambda m: m["To"] == email)

    # when they open its link
    page.goto(link_in(confirmation, r"/f/confirm/"))

    # then they are confirmed, in their own time zone, and get the checklist stamped for them
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you, Leila!")
    subscriber = Subscriber.objects.get(email=email)
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert subscriber.time_zone == visitor_zone
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download your copy").click()
    checklist = tmp_path / downloading.value.suggested_filename
    downloading.value.save_as(checklist)
    assert checklist.name == "launch-checklist.pdf"
    assert checklist.read_bytes() != MAGNET_PDF
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(checklist), "-"], capture_output=True, check=True
    ).stdout.decode()
    pages = text.split("\f")[:-1]
    assert len(pages) == 2 and all(email in page_text for page_text in pages), pages
    assert DownloadDelivery.objects.filter(subscriber_email=email).count() == 1

    # and the confirmation enrolled them in the launch sequence, its offer due now: it is
    # daytime where they are
    enrolment = Enrolment.objects.get(subscriber=subscriber, sequence=world.sequence)
    assert enrolment.status == Enrolment.Status.ACTIVE
    now = timezone.now()
    assert enrolment.next_send_at <= now
    assert in_window(now, zone_for(visitor_zone), Window.of(world.sequence))

    # when the scheduler's periodic task runs on the worker
    drip_schedule.delay()

    # then the offer email reaches their inbox
    offer_mail = smtp_sink.wait_for(
        lambda m: m["To"] == email and m["Subject"] == "Doors are open, Leila"
    )
    # (the worker records the send once SMTP has taken the message)
    delivery = wait_until(
        lambda: DripDelivery.objects.filter(
            subscriber=subscriber, step__sort_order=0, status=DripDelivery.Status.SENT
        ).first(),
        timeout=10,
        what="the offer's delivery to be recorded as sent",
    )

    # when they read it and press its button
    page.set_content(offer_mail.get_body(("html",)).get_content())
    page.get_by_role("link", name="See the course").click()

    # then the tracked link takes them to the course page, and the click is counted
    expect(page.get_by_role("heading", level=1)).to_have_text(tree.course.title)
    assert _path(page.url) == tree.course.url
    assert [s for p, s in responses if p.startswith("/f/c/")] == [302]
    delivery.refresh_from_db()
    assert delivery.clicks == 1 and delivery.clicked_at is not None

    # when they buy it: the course's buy button, then Stripe's checkout with the test card
    page.get_by_role("link", name="Buy the course").click()
    page.get_by_role("button", name="Continue to secure payment").click()
    expect(page).to_have_url(re.compile(re.escape(stripe_servers.url) + r"/pay/cs_"))
    expect(page.locator("#total")).to_contain_text("149")
    page.locator("#email").fill(email)
    page.locator("#card-number").fill("4242 4242 4242 4242")
    page.locator("#pay").click()

    # then they are back on the site, in, and the order is theirs
    expect(page).to_have_url(re.compile(re.escape(web_server.url) + r"/pay/checkout/success/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you — you are in!")
    order = Order.objects.get(email=email)
    assert order.status == Order.Status.PAID
    assert order.subscriber_id == subscriber.pk  # the sale is credited to the funnel
    entitlement = Entitlement.objects.get(user=order.buyer, product=tree.product)
    assert entitlement.is_active()
    # and the sequence selling the course stopped for them: no last call, ever
    enrolment = wait_until(
        lambda: Enrolment.objects.filter(pk=enrolment.pk, status=Enrolment.Status.EXITED).first(),
        timeout=10,
        what="the purchase to end the sequence selling the course",
    )
    assert enrolment.exit_reason == Enrolment.ExitReason.PURCHASED
    assert enrolment.next_send_at is None
    later = scheduler.drip_schedule_due(now=now + timedelta(days=3), dispatch=False)
    assert later.claimed == 0 and later.deliveries == 0

    # when they open the paid lesson and press play
    page.goto(web_server.url + tree.paid_lesson.url)
    expect(page.get_by_role("heading", level=1)).to_have_text(tree.paid_lesson.title)
    page.wait_for_function(
        "() => document.querySelector('[data-video-player]')?.dataset.fragmentsLoaded >= 1"
    )
    page.evaluate(f"() => {{ const v = {PLAYER}; v.muted = true; return v.play(); }}")

    # then the video plays on, past the first segment, through signed segment URLs only
    page.wait_for_function(
        f"() => {{ const v = {PLAYER}; return !v.paused && v.currentTime > 2.5; }}",
        timeout=20_000,
    )
    assert page.evaluate(f"() => {PLAYER}.error") is None
    segments = [(p, s) for p, s in responses if p.startswith("/protected/video/seg/")]
    assert len(segments) >= 3  # the init segment and the first two media segments
    assert all(SEGMENT_URL.search(p) and s == 200 for p, s in segments), segments
    page.evaluate(f"() => {PLAYER}.pause()")

    # when they register for the webinar
    page.goto(web_server.url + world.webinar.url)
    form = page.locator("form", has=page.get_by_role("button", name="Register"))
    form.get_by_label("First name").fill("Leila")
    form.get_by_label("Email address").fill(email)
    form.get_by_label(world.webinar.consent_text).check()
    bot_check_wait(form)
    form.get_by_role("button", name="Register").click()

    # then they are registered, and the confirmation with their join link arrives
    expect(page.get_by_role("status").filter(has_text="You're registered")).to_be_visible()
    registration = Registration.objects.get(email=email)
    assert registration.status == Registration.Status.REGISTERED
    registered_mail = smtp_sink.wait_for(
        lambda m: m["To"] == email and m["Subject"].startswith("You're registered")
    )
    assert link_in(registered_mail, r"/webinar/join/").startswith(web_server.url + "/")

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

    # and the lesson now answers with the offer to buy it, its video gone
    response = page.goto(web_server.url + tree.paid_lesson.url)
    assert response.status == 403
    locked = page.get_by_role("alert")
    expect(locked).to_contain_text("is for students of this course")
    expect(
        locked.get_by_role("link", name=re.compile(r"^Buy the course – €149"))
    ).to_have_attribute("href", f"/pay/buy/{tree.offer.slug}/")
    expect(page.locator("[data-video-player]")).to_have_count(0)
    # and the sequence did not start again, nor send anything more
    assert not smtp_sink.matching(lambda m: m["To"] == email and m["Subject"] == LAST_CALL_SUBJECT)
    assert list(
        Enrolment.objects.filter(subscriber=subscriber).values_list("status", flat=True)
    ) == [Enrolment.Status.EXITED]
