"""A visitor in Kathmandu registers for a free webinar in Chromium, gets the confirmation
with a valid calendar invite attached through the outbox and the SMTP sink, and opens the
personal join link before the start (a countdown) and at the start (the room). A second
registrant's link does not admit the first. gunicorn, the Celery worker and the SMTP sink
are real processes; the session is moved by publishing, not waited for."""

import datetime
import re
import time
import uuid
import zoneinfo
from datetime import timedelta
from urllib.parse import urlsplit

import icalendar
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from funnels.forms import MIN_SECONDS_TO_SUBMIT
from funnels.models import ConsentRecord, Subscriber
from payments.services import buyer_get_or_create
from tests.harness.wagtail_pages import home_page_install
from tests.webinars.conftest import register
from webinars.models import JoinOpen, Registration, WebinarPage, WebinarSession

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ZONE = "Asia/Kathmandu"
PASSWORD = "a long registrant pass phrase"


@pytest.fixture
def kathmandu_page(browser):
    context = browser.new_context(locale="en-US", timezone_id=ZONE)
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def _webinar(room: str) -> WebinarPage:
    home = home_page_install(title="Northwind Academy")
    start = (timezone.now() + timedelta(days=2)).astimezone(zoneinfo.ZoneInfo("Europe/Helsinki"))
    page = WebinarPage(
        title="Pricing your first course: live Q&A",
        slug="pricing-qa",
        host_name="Maya Virtanen",
        join_url=room,
    )
    page.sessions.add(
        WebinarSession(
            start_date=start.date(),
            start_time=datetime.time(18, 0),
            time_zone="Europe/Helsinki",
            capacity=30,
        )
    )
    home.add_child(instance=page)
    page.save_revision().publish()
    return WebinarPage.objects.get(pk=page.pk)


def _move_session_to(webinar: WebinarPage, starts_at: datetime.datetime) -> None:
    """What the creator does in the editor: change the start and publish."""
    session = WebinarSession.objects.get(page=webinar)
    local = starts_at.astimezone(zoneinfo.ZoneInfo(session.time_zone))
    session.start_date, session.start_time = local.date(), local.time().replace(microsecond=0)
    session.save()
    WebinarPage.objects.get(pk=webinar.pk).save_revision().publish()


def test_register_get_the_calendar_invite_and_join_at_the_start(
    web_server, celery_worker, smtp_sink, kathmandu_page, settings
):
    page = kathmandu_page
    # Mail written by this process (the creator's publish, the second registrant) links
    # to the server the browser uses, as the server's own mail does.
    settings.SITE_URL = web_server.url
    room = f"{web_server.url}/healthz?room=pricing-qa"
    webinar = _webinar(room)
    email = f"sita-{uuid.uuid4().hex[:8]}@example.com"

    # when a visitor fills in the form on the webinar's page
    page.goto(f"{web_server.url}/pricing-qa/")
    loaded_at = time.monotonic()
    expect(page.get_by_role("heading", level=1)).to_have_text(webinar.title)
    # the session is shown in the visitor's own time zone (18:00 Helsinki = 21:45 Kathmandu)
    expect(page.locator(".webinar__choice time").first).to_contain_text("9:45")
    assert "healthz" not in page.content()  # the room is never on the public page
    page.get_by_label("First name").fill("Sita")
    page.get_by_label("Email address").fill(email)
    page.get_by_label(webinar.consent_text).check()
    page.wait_for_timeout((MIN_SECONDS_TO_SUBMIT + 0.3 - (time.monotonic() - loaded_at)) * 1000)
    page.get_by_role("button", name="Register").click()

    # then they are registered at once, in their time zone
    expect(page.get_by_role("status").filter(has_text="You're registered")).to_be_visible()
    registration = Registration.objects.get(email=email)
    assert registration.status == Registration.Status.REGISTERED
    assert registration.time_zone == ZONE
    subscriber = Subscriber.objects.get(email=email)
    assert ConsentRecord.objects.get(subscriber=subscriber).consent_text == webinar.consent_text

    # and the confirmation reaches the SMTP sink with the calendar invite attached
    confirmation = smtp_sink.wait_for(
        lambda m: m["To"] == email and m["Subject"].startswith("You're registered")
    )
    text = confirmation.get_body(("plain",)).get_content()
    assert "21:45 (Asia/Kathmandu)" in text
    join_url = re.search(r"https?://\S+/webinar/join/\S+/", text).group(0)
    [attached] = [p for p in confirmation.iter_attachments() if p.get_filename() == "invite.ics"]
    calendar = icalendar.Calendar.from_ical(attached.get_content())
    assert str(calendar["METHOD"]) == "REQUEST"
    [event] = calendar.walk("VEVENT")
    assert str(event["SUMMARY"]) == webinar.title
    assert int(event["SEQUENCE"]) == 0
    assert event.decoded("DTSTART") == registration.occasion.starts_at
    assert str(event.decoded("DTSTART").tzinfo) == "Europe/Helsinki"
    assert [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")] == ["Europe/Helsinki"]
    assert str(event["LOCATION"]) == join_url
    # as an invitation mail clients recognise: the body's calendar alternative, method=REQUEST
    [invitation] = [p for p in confirmation.walk() if p.get_content_type() == "text/calendar"]
    assert invitation.get_param("method") == "REQUEST"
    # and the add-to-calendar links are still there; the .ics link serves the same event
    assert "google.com/calendar" in text and "outlook.live.com" in text
    ics_url = re.search(r"https?://\S+/webinar/calendar/\S+/", text).group(0)
    assert ics_url.startswith(web_server.url + "/")
    ics = page.request.get(ics_url)
    assert ics.ok and ics.headers["content-type"].startswith("text/calendar")
    [served] = icalendar.Calendar.from_ical(ics.body()).walk("VEVENT")
    assert str(served["UID"]) == str(event["UID"])

    # when they open their personal link two days early: a countdown in their time
    page.goto(join_url)
    countdown = page.locator("[data-countdown]")
    expect(countdown.get_by_role("heading", level=1)).to_have_text(webinar.title)
    expect(page.locator("[data-countdown-when]")).to_contain_text("(Asia/Kathmandu)")
    expect(page.locator("[data-countdown-left]")).to_have_text(
        re.compile(r"Starts in \d+d \d\d:\d\d:\d\d")
    )
    assert urlsplit(page.url).path.startswith("/webinar/join/")

    # when the creator moves the session to start now, and they open the link again
    _move_session_to(webinar, timezone.now() - timedelta(minutes=1))
    moved = smtp_sink.wait_for(lambda m: m["To"] == email and m["Subject"].startswith("New time"))
    # whose attached invite updates the same calendar event
    [attached] = [p for p in moved.iter_attachments() if p.get_filename() == "invite.ics"]
    [update] = icalendar.Calendar.from_ical(attached.get_content()).walk("VEVENT")
    assert (str(update["UID"]), int(update["SEQUENCE"])) == (str(event["UID"]), 1)
    page.goto(join_url)

    # then the link takes them into the room, and their attendance is recorded
    expect(page).to_have_url(room)
    assert JoinOpen.objects.filter(registration=registration, outcome="admitted").count() == 1

    # and a second registrant's link does not admit the first, signed in
    omar = register(webinar, registration.occasion, f"omar-{uuid.uuid4().hex[:6]}@example.com")
    omar_mail = smtp_sink.wait_for(lambda m: m["To"] == omar.registration.email)
    omar_join = re.search(
        r"https?://\S+/webinar/join/\S+/", omar_mail.get_body(("plain",)).get_content()
    ).group(0)
    user, _created = buyer_get_or_create(email=email)
    user.set_password(PASSWORD)
    user.save()
    page.goto(f"{web_server.url}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()
    expect(page.get_by_role("button", name="Sign Out")).to_be_visible()
    response = page.goto(omar_join)
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("This is not your link")
    assert not JoinOpen.objects.filter(registration=omar.registration).exists()
    # while their own link still admits them
    page.goto(join_url)
    expect(page).to_have_url(room)
