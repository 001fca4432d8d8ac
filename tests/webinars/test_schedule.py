"""Calendar files, reminders, moved and cancelled sessions, and time zones (Kathmandu's
quarter hour, a DST change)."""

import datetime
import zoneinfo
from datetime import timedelta
from urllib.parse import urlsplit

import icalendar
import pytest
from django.utils import timezone

from tests.funnels.test_sequences_support import brand_install
from webinars import services
from webinars.models import Occasion, Registration, Reminder, WebinarSession
from webinars.tasks import webinar_reminders_send

from .conftest import at, link, make_webinar, occasions, outbox, register, republish, session_at

KATHMANDU = zoneinfo.ZoneInfo("Asia/Kathmandu")


@pytest.fixture
def webinar(home):
    brand_install()
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(days=3)
    return make_webinar(home, sessions=[session_at(start, "Europe/Helsinki", capacity=20)])


def ics_of(client, registration) -> icalendar.Calendar:
    url = link(
        outbox(registration.email, "webinars:confirmation")[-1].text_body, "/webinar/calendar/"
    )
    response = client.get(urlsplit(url).path)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/calendar; charset=utf-8"
    return icalendar.Calendar.from_ical(response.content)


def the_event(calendar: icalendar.Calendar) -> icalendar.Event:
    [event] = calendar.walk("VEVENT")
    return event


def test_the_ics_parses_with_the_session_zone_and_a_stable_uid(client, webinar):
    [occasion] = occasions(webinar)
    registration = register(webinar, occasion, "leila@example.com").registration

    calendar = ics_of(client, registration)

    assert str(calendar["METHOD"]) == "REQUEST"
    event = the_event(calendar)
    start = event.decoded("DTSTART")
    assert str(start.tzinfo) == "Europe/Helsinki"  # TZID, with its VTIMEZONE
    assert [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")] == ["Europe/Helsinki"]
    assert start == occasion.starts_at
    assert event.decoded("DTEND") - start == timedelta(minutes=60)
    assert int(event["SEQUENCE"]) == 0
    assert str(event["SUMMARY"]) == webinar.title
    assert "/webinar/join/" in str(event["LOCATION"])
    assert str(event["ATTENDEE"]) == "mailto:leila@example.com"
    assert str(event["ORGANIZER"]) == "mailto:maya@northwind.example"
    assert str(event["UID"]).startswith(str(occasion.uid))


def test_moving_the_session_after_reminders_were_queued_reschedules_them_and_updates_the_ics(
    client, webinar
):
    [occasion] = occasions(webinar)
    registration = register(webinar, occasion, "leila@example.com").registration
    uid_before = str(the_event(ics_of(client, registration))["UID"])
    old_start = occasion.starts_at

    # when the creator moves the session two hours later and publishes
    session = WebinarSession.objects.get(page=webinar)
    new_start = old_start + timedelta(hours=2)
    local = new_start.astimezone(zoneinfo.ZoneInfo(session.time_zone))
    session.start_date, session.start_time = local.date(), local.time()
    session.save()
    republish(webinar)

    # then the occasion moved with a higher SEQUENCE and the same calendar UID
    occasion.refresh_from_db()
    assert (occasion.starts_at, occasion.sequence) == (new_start, 1)
    event = the_event(ics_of(client, registration))
    assert str(event["UID"]) == uid_before
    assert int(event["SEQUENCE"]) == 1
    assert event.decoded("DTSTART") == new_start
    # and the registrant was told
    [moved] = outbox("leila@example.com", "webinars:moved")
    assert "The session has moved" in moved.html_body
    # and the reminders follow the new time: nothing at the old moments, each once at the new
    due = dict(Reminder.objects.filter(registration=registration).values_list("kind", "due_at"))
    assert due["1h"] == new_start - timedelta(hours=1)
    # (time only moves forward: the old moments interleave with the new ones)
    assert services.reminders_send_due(now=old_start - timedelta(hours=24)).sent == 0
    assert services.reminders_send_due(now=new_start - timedelta(hours=24)).sent == 1
    assert services.reminders_send_due(now=old_start - timedelta(hours=1)).sent == 0
    assert services.reminders_send_due(now=old_start).sent == 0
    assert services.reminders_send_due(now=new_start - timedelta(hours=1)).sent == 1
    assert services.reminders_send_due(now=new_start - timedelta(hours=1)).sent == 0
    assert services.reminders_send_due(now=new_start).sent == 1
    kinds = [e.kind for e in outbox("leila@example.com") if e.kind.startswith("webinars:reminder")]
    assert kinds == ["webinars:reminder-24h", "webinars:reminder-1h", "webinars:reminder-start"]


def test_publishing_again_without_changes_moves_nothing(webinar):
    [occasion] = occasions(webinar)
    register(webinar, occasion, "leila@example.com")
    republish(webinar)
    occasion.refresh_from_db()
    assert occasion.sequence == 0
    assert outbox("leila@example.com", "webinars:moved") == []


def test_a_cancelled_session_sends_a_cancel_and_no_reminder_ever(client, webinar):
    [occasion] = occasions(webinar)
    registration = register(webinar, occasion, "leila@example.com").registration
    WebinarSession.objects.filter(page=webinar).update(is_cancelled=True)
    republish(webinar)

    occasion.refresh_from_db()
    assert occasion.status == Occasion.Status.CANCELLED
    assert occasion.sequence == 1
    [cancelled] = outbox("leila@example.com", "webinars:cancelled")
    assert "/webinar/join/" not in cancelled.text_body
    calendar = icalendar.Calendar.from_ical(
        client.get(urlsplit(link(cancelled.text_body, "/webinar/calendar/")).path).content
    )
    assert str(calendar["METHOD"]) == "CANCEL"
    event = the_event(calendar)
    assert str(event["STATUS"]) == "CANCELLED"
    assert int(event["SEQUENCE"]) == 1
    # no reminder at any of the old moments
    for moment in (occasion.starts_at - timedelta(hours=24), occasion.starts_at):
        assert services.reminders_send_due(now=moment).sent == 0
    assert set(
        Reminder.objects.filter(registration=registration).values_list("status", flat=True)
    ) == {Reminder.Status.CANCELLED}
    # and the page no longer offers it
    assert "No sessions are scheduled right now" in client.get(webinar.url).content.decode()


def test_a_session_removed_from_the_page_is_cancelled_for_its_registrants(webinar):
    [occasion] = occasions(webinar)
    register(webinar, occasion, "leila@example.com")
    WebinarSession.objects.filter(page=webinar).delete()
    republish(webinar)
    occasion.refresh_from_db()
    assert occasion.status == Occasion.Status.CANCELLED
    assert Registration.objects.get().status == Registration.Status.CANCELLED
    assert outbox("leila@example.com", "webinars:cancelled")


def test_each_reminder_goes_out_once_even_when_the_task_runs_twice(webinar):
    [occasion] = occasions(webinar)
    register(webinar, occasion, "leila@example.com")
    moment = occasion.starts_at - timedelta(hours=24)
    webinar_reminders_send(moment.isoformat())
    webinar_reminders_send(moment.isoformat())
    assert len(outbox("leila@example.com", "webinars:reminder-24h")) == 1


def test_a_reminder_found_too_late_is_not_sent(webinar):
    [occasion] = occasions(webinar)
    registration = register(webinar, occasion, "leila@example.com").registration
    run = services.reminders_send_due(now=occasion.starts_at + timedelta(minutes=20))
    # the 24h and 1h reminders are hours late, the start one 20 minutes: all skipped
    assert (run.sent, run.skipped) == (0, 3)
    assert outbox("leila@example.com", "webinars:reminder-start") == []
    assert set(
        Reminder.objects.filter(registration=registration).values_list("status", flat=True)
    ) == {Reminder.Status.SKIPPED}


def test_registering_an_hour_before_skips_the_day_before_reminder(webinar):
    [occasion] = occasions(webinar)
    registration = register(
        webinar, occasion, "late@example.com", now=occasion.starts_at - timedelta(minutes=50)
    ).registration
    statuses = dict(
        Reminder.objects.filter(registration=registration).values_list("kind", "status")
    )
    assert statuses == {"24h": "skipped", "1h": "skipped", "start": "pending"}


def test_a_registrant_in_kathmandu_reads_the_time_in_their_zone(home):
    brand_install()
    # 18:00 in Helsinki (EET, +02:00) is 21:45 in Kathmandu (+05:45)
    start = at("2026-12-10 16:00")
    webinar = make_webinar(
        home,
        sessions=[
            WebinarSession(
                start_date=datetime.date(2026, 12, 10),
                start_time=datetime.time(18, 0),
                time_zone="Europe/Helsinki",
            )
        ],
    )
    [occasion] = occasions(webinar)
    assert occasion.starts_at == start
    registration = register(
        webinar,
        occasion,
        "sita@example.com",
        time_zone="Asia/Kathmandu",
        now=at("2026-12-01 09:00"),
    ).registration

    text = outbox("sita@example.com", "webinars:confirmation")[0].text_body
    assert "Thursday 10 December 2026, 21:45 (Asia/Kathmandu)" in text
    assert "Thursday 10 December 2026, 18:00 (Europe/Helsinki)" in text
    services.reminders_send_due(now=start - timedelta(hours=1))
    reminder = outbox("sita@example.com", "webinars:reminder-1h")[0]
    assert "21:45 (Asia/Kathmandu)" in reminder.text_body
    assert registration.zone.utcoffset(start) == timedelta(hours=5, minutes=45)


def test_a_session_across_the_dst_change_keeps_its_wall_time_and_reminders_count_real_hours(
    client, home
):
    # Helsinki moves to summer time (EEST, +03:00) on Sunday 28 March 2027 at 03:00.
    webinar = make_webinar(
        home,
        sessions=[
            WebinarSession(
                start_date=datetime.date(2027, 3, 28),
                start_time=datetime.time(18, 0),
                time_zone="Europe/Helsinki",
            )
        ],
    )
    [occasion] = occasions(webinar)
    assert occasion.starts_at == at("2027-03-28 15:00")  # 18:00 EEST
    registration = register(
        webinar, occasion, "leila@example.com", time_zone="Europe/Helsinki"
    ).registration
    day_before = Reminder.objects.get(registration=registration, kind="24h")
    # 24 real hours before: 17:00 on the Saturday by the winter clock
    assert day_before.due_at == at("2027-03-27 15:00")
    assert day_before.due_at.astimezone(zoneinfo.ZoneInfo("Europe/Helsinki")).hour == 17

    calendar = ics_of(client, registration)
    event = the_event(calendar)
    assert event.decoded("DTSTART").hour == 18
    assert event.decoded("DTSTART").utcoffset() == timedelta(hours=3)
    assert b"TZOFFSETTO:+0300" in calendar.to_ical()


def test_a_wall_time_skipped_by_the_dst_change_lands_on_a_real_instant():
    # 03:30 on 28 March 2027 does not exist in Helsinki; read as the same time after it.
    session = WebinarSession(
        start_date=datetime.date(2027, 3, 28),
        start_time=datetime.time(3, 30),
        time_zone="Europe/Helsinki",
    )
    assert session.starts_at == at("2027-03-28 01:30")
