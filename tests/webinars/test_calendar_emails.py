"""The webinar emails carry the calendar invitation itself, as received by the SMTP sink
from the live Celery worker: the confirmation a REQUEST, the "session moved" email the
updated REQUEST (same UID, SEQUENCE raised), the cancellation a CANCEL. The
add-to-calendar links stay beside it."""

import uuid
import zoneinfo
from datetime import timedelta
from email.message import EmailMessage

import icalendar
import pytest
from django.utils import timezone

from tests.funnels.test_sequences_support import brand_install
from tests.harness.wagtail_pages import home_page_install
from webinars import calendar
from webinars.models import WebinarSession

from .conftest import make_webinar, occasions, register, republish, session_at

pytestmark = pytest.mark.django_db(transaction=True)


def invite_of(message: EmailMessage) -> tuple[icalendar.Calendar, icalendar.Event]:
    """The invite.ics attached to ``message``, parsed, after checking that the body's
    calendar alternative (what Gmail and Outlook read) is the same file, same method."""
    [attached] = [p for p in message.iter_attachments() if p.get_filename() == "invite.ics"]
    ics = attached.get_content()
    parsed = icalendar.Calendar.from_ical(ics)
    [alternative] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert alternative.get_param("method") == str(parsed["METHOD"])
    assert alternative.get_content().replace("\r\n", "\n") == ics.decode().replace("\r\n", "\n")
    [event] = parsed.walk("VEVENT")
    return parsed, event


def test_confirmation_moved_and_cancelled_emails_carry_the_invite_update_and_cancel(
    celery_worker, smtp_sink
):
    # given a webinar three days ahead at a Helsinki time, and a registrant in Kathmandu
    home = home_page_install(title="Northwind Academy")
    brand_install()
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(days=3)
    webinar = make_webinar(home, sessions=[session_at(start, "Europe/Helsinki", capacity=20)])
    [occasion] = occasions(webinar)
    email = f"leila-{uuid.uuid4().hex[:8]}@lodestone-mail.fi"
    registration = register(webinar, occasion, email).registration

    # then the confirmation carries a REQUEST in the session's zone, sequence 0
    confirmation = smtp_sink.wait_for(
        lambda m: m["To"] == email and m["Subject"].startswith("You're registered")
    )
    invite, event = invite_of(confirmation)
    uid = calendar.event_uid(registration)
    assert str(invite["METHOD"]) == "REQUEST"
    assert (str(event["UID"]), int(event["SEQUENCE"])) == (uid, 0)
    assert str(event["STATUS"]) == "CONFIRMED"
    assert event.decoded("DTSTART") == occasion.starts_at
    assert str(event.decoded("DTSTART").tzinfo) == "Europe/Helsinki"
    assert [str(tz["TZID"]) for tz in invite.walk("VTIMEZONE")] == ["Europe/Helsinki"]
    assert str(event["ORGANIZER"]) == "mailto:maya@northwind.example"
    assert str(event["ATTENDEE"]) == f"mailto:{email}"
    assert "/webinar/join/" in str(event["LOCATION"])
    # with the add-to-calendar links still in the text
    text = confirmation.get_body(("plain",)).get_content()
    assert "/webinar/calendar/" in text
    assert "google.com/calendar" in text and "outlook.live.com" in text

    # when the creator moves the session two hours later and publishes
    new_start = occasion.starts_at + timedelta(hours=2)
    session = WebinarSession.objects.get(page=webinar)
    local = new_start.astimezone(zoneinfo.ZoneInfo(session.time_zone))
    session.start_date, session.start_time = local.date(), local.time()
    session.save()
    republish(webinar)

    # then the "moved" email carries the same event, updated: same UID, SEQUENCE 1
    moved = smtp_sink.wait_for(lambda m: m["To"] == email and m["Subject"].startswith("New time"))
    invite, event = invite_of(moved)
    assert str(invite["METHOD"]) == "REQUEST"
    assert (str(event["UID"]), int(event["SEQUENCE"])) == (uid, 1)
    assert event.decoded("DTSTART") == new_start
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(minutes=60)

    # when the creator cancels the session
    WebinarSession.objects.filter(page=webinar).update(is_cancelled=True)
    republish(webinar)

    # then the cancellation carries a CANCEL of that same event, SEQUENCE 2
    cancelled = smtp_sink.wait_for(
        lambda m: m["To"] == email and m["Subject"].startswith("Cancelled")
    )
    invite, event = invite_of(cancelled)
    assert str(invite["METHOD"]) == "CANCEL"
    assert (str(event["UID"]), int(event["SEQUENCE"])) == (uid, 2)
    assert str(event["STATUS"]) == "CANCELLED"
    # and offers no link that would add the cancelled session back to a calendar
    text = next(p for p in cancelled.walk() if p.get_content_type() == "text/plain")
    body = text.get_content()
    assert "Remove it from your calendar" in body
    assert "calendar.google.com" not in body and "outlook" not in body.lower()
    # and each email went out once
    for subject in ("You're registered", "New time", "Cancelled"):
        assert (
            len(smtp_sink.matching(lambda m, s=subject: m["To"] == email and s in m["Subject"]))
            == 1
        )


def test_a_waitlist_email_carries_no_invitation(celery_worker, smtp_sink):
    # given a one-seat session that is taken
    home = home_page_install(title="Northwind Academy")
    brand_install()
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(days=3)
    webinar = make_webinar(home, sessions=[session_at(start, "Europe/Helsinki", capacity=1)])
    [occasion] = occasions(webinar)
    first = f"first-{uuid.uuid4().hex[:8]}@lodestone-mail.fi"
    second = f"second-{uuid.uuid4().hex[:8]}@lodestone-mail.fi"
    register(webinar, occasion, first)

    # when a second person registers and goes on the waiting list
    register(webinar, occasion, second, waitlist=True)

    # then their email has no calendar in it: there is no seat to put in a calendar yet
    waiting = smtp_sink.wait_for(lambda m: m["To"] == second)
    assert waiting["Subject"].startswith("You're on the waiting list")
    assert not [
        p for p in waiting.walk() if p.get_content_type() in ("text/calendar", "application/ics")
    ]
