"""A visitor signs up on a landing page in Chromium, confirms by email and downloads the
magnet: gunicorn, the Celery worker and the SMTP sink are real processes."""

import hashlib
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.core.files.base import ContentFile
from playwright.sync_api import expect

from accounts.models import User
from funnels.models import (
    ConsentRecord,
    LandingPage,
    LeadMagnet,
    MagnetDelivery,
    PageVisitDay,
    Subscriber,
)
from media.models import DownloadDelivery
from media.stamping.samples import sample_pdf
from tests.harness.wagtail_pages import site_root_install
from tests.harness.waiting import wait_until

from .journey_world import bot_check_wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONSENT = "Send me the checklist and weekly tips. I can unsubscribe at any time."
MAGNET_PDF = sample_pdf(2)


def _landing_page_install(magnet: LeadMagnet) -> LandingPage:
    """A landing page with one opt-in form as the root of the only Site.

    Works on the database as a transactional test's flush leaves it (no pages, no locale),
    as the harness's home_page_install does.
    """
    return site_root_install(
        LandingPage(
            title="Launch checklist",
            slug="launch-checklist",
            body=[
                ("hero", {"headline": "Launch your first course without the overwhelm"}),
                (
                    "optin_form",
                    {
                        "heading": "Get your free copy",
                        "magnet": magnet,
                        "ask_name": True,
                        "button_label": "Send me the checklist",
                        "consent_text": CONSENT,
                        "double_opt_in": True,
                    },
                ),
            ],
        )
    )


def test_visitor_signs_up_confirms_by_email_and_downloads_the_magnet(
    web_server, celery_worker, smtp_sink, page, server_protected_storage
):
    # given a landing page offering a lead magnet
    magnet = LeadMagnet(title="The Launch Checklist", download_filename="launch-checklist.pdf")
    magnet.file.save("launch-checklist.pdf", ContentFile(MAGNET_PDF), save=False)
    magnet.save()
    landing = _landing_page_install(magnet)
    email = f"reader-{uuid.uuid4().hex[:10]}@example.com"

    # when a visitor from the newsletter fills in the form
    page.goto(f"{web_server.url}/?utm_source=newsletter&utm_campaign=spring")
    page.get_by_label("First name").fill("Leila")
    page.get_by_label("Email address").fill(email)
    page.get_by_label(CONSENT).check()
    # The server refuses a form sent sooner than a person could fill it in (a bot check).
    bot_check_wait(page.locator("form[data-optin-form]"))
    page.get_by_role("button", name="Send me the checklist").click()

    # then the answer appears in place of the form, without leaving the page
    expect(page.get_by_role("status").filter(has_text="check your inbox")).to_be_visible()
    expect(page.locator("form[data-optin-form]")).to_be_hidden()
    assert urlsplit(page.url).path == "/"

    # when they open the link in the confirmation email
    confirmation = smtp_sink.wait_for(lambda m: m["To"] == email)
    text = confirmation.get_body(("plain",)).get_content()
    confirm_url = re.search(r"https?://\S+/f/confirm/\S+/", text).group(0)
    assert confirm_url.startswith(web_server.url + "/")
    page.goto(confirm_url)

    # then the page confirms them by itself and offers the download
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you, Leila!")
    link = page.get_by_role("link", name="Download your copy")
    # A path on our own site: the page works on whatever host and port serves it.
    expect(link).to_have_attribute("href", re.compile(r"^/f/download/"))
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.failure() is None
    assert download.suggested_filename == "launch-checklist.pdf"
    # the file is stamped for them, and the ledger holds the hash of exactly what they got
    received = Path(download.path()).read_bytes()
    assert received != MAGNET_PDF
    ledger = DownloadDelivery.objects.get(subscriber_email=email)
    assert hashlib.sha256(received).hexdigest() == ledger.sent_sha256

    # and the delivery email follows
    delivery = smtp_sink.wait_for(
        lambda m: m["To"] == email and m["Subject"] == f"Here is your download: {magnet.title}"
    )
    assert "/f/download/" in delivery.get_body(("plain",)).get_content()

    # and the database holds the whole story
    subscriber = Subscriber.objects.get(email=email)
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert subscriber.name == "Leila"
    assert subscriber.time_zone == page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    consents = list(subscriber.consents.order_by("created_at"))
    assert [c.action for c in consents] == [
        ConsentRecord.Action.GRANTED,
        ConsentRecord.Action.CONFIRMED,
    ]
    assert consents[0].consent_text == CONSENT
    assert consents[0].landing_page_id == landing.pk
    touch = subscriber.touches.get()
    assert (touch.landing_page_id, touch.utm_source, touch.utm_campaign) == (
        landing.pk,
        "newsletter",
        "spring",
    )
    assert MagnetDelivery.objects.filter(subscriber=subscriber, magnet=magnet).count() == 1
    visits = wait_until(
        lambda: PageVisitDay.objects.filter(landing_page=landing).first(),
        timeout=5,
        what="the landing page's visit beacon to be counted",
    )
    assert visits.visits == 1

    # and the creator, logged into the admin, sees the conversion on the funnel report
    creator = User.objects.create_user(
        "maya@lodestone-creator.fi", "a long creator pass phrase", is_staff=True, is_superuser=True
    )
    EmailAddress.objects.create(user=creator, email=creator.email, verified=True, primary=True)
    page.goto(f"{web_server.url}/admin/")
    page.get_by_label("Email").fill(creator.email)
    page.get_by_label("Password").fill("a long creator pass phrase")
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()
    page.goto(f"{web_server.url}/admin/funnel-performance/")
    row = page.get_by_role("row").filter(has_text="Launch checklist")
    expect(row).to_contain_text("100.0%")  # one visit, one opt-in: all of them converted
    cells = [c.strip() for c in row.get_by_role("cell").all_inner_texts()]
    # visits, opt-ins, opt-in rate, confirmations, confirmation rate
    assert cells == ["1", "1", "100.0%", "1", "100.0%"]
