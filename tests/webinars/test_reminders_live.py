"""Acceptance with real processes: the Celery worker (a subprocess on Redis) sends the
reminders through the outbox to the SMTP sink. Time is moved, not waited for: the
reminder task gets an explicit ``now`` through the worker, as the drip scheduler's live
test does (tests/funnels/test_sequences_live.py)."""

import datetime
import uuid
import zoneinfo
from datetime import timedelta

import pytest

from core.models import OutboundEmail
from tests.funnels.test_sequences_support import brand_install
from tests.harness.wagtail_pages import home_page_install
from tests.harness.waiting import wait_until
from webinars.models import Reminder, WebinarSession
from webinars.tasks import webinar_reminders_send

from .conftest import at, make_webinar, occasions, register

pytestmark = pytest.mark.django_db(transaction=True)
TITLE = "Pricing your first course: live Q&A"


def tick(now: datetime.datetime) -> None:
    """One reminder pass at ``now``, run by the live worker; returns when every reminder
    that was due has left "pending" and its email has left the outbox."""
    due = list(
        Reminder.objects.filter(status=Reminder.Status.PENDING, due_at__lte=now).values_list(
            "pk", flat=True
        )
    )
    webinar_reminders_send.delay(now.isoformat())

    def settled():
        if Reminder.objects.filter(pk__in=due, status=Reminder.Status.PENDING).exists():
            return False
        emails = Reminder.objects.filter(pk__in=due, email__isnull=False).values("email")
        return (
            not OutboundEmail.objects.filter(pk__in=emails)
            .exclude(status=OutboundEmail.Status.SENT)
            .exists()
        )

    wait_until(settled, timeout=30, what=f"the worker to send the reminders due at {now}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@lodestone-mail.fi"


def test_the_live_worker_sends_the_24h_and_1h_reminders_once_each_at_their_moments(
    celery_worker, smtp_sink
):
    # given a session at 18:00 Helsinki time and registrants in Kathmandu and New York
    home = home_page_install(title="Northwind Academy")
    brand_install()
    webinar = make_webinar(
        home,
        title=TITLE,
        sessions=[
            WebinarSession(
                start_date=datetime.date(2026, 12, 10),
                start_time=datetime.time(18, 0),
                time_zone="Europe/Helsinki",
            )
        ],
    )
    [occasion] = occasions(webinar)
    start = at("2026-12-10 16:00")
    assert occasion.starts_at == start
    people = {
        "Asia/Kathmandu": unique("sita"),
        "America/New_York": unique("ada"),
    }
    for zone, email in people.items():
        register(webinar, occasion, email, time_zone=zone, now=at("2026-12-01 09:00"))
    for email in people.values():
        smtp_sink.wait_for(lambda m, to=email: m["To"] == to and "registered" in m["Subject"])

    def reminders_to(email, subject):
        return smtp_sink.matching(lambda m: m["To"] == email and m["Subject"] == subject)

    # when time moves through the day before: nothing until 24 hours before the start
    tick(start - timedelta(hours=25))
    assert not Reminder.objects.filter(status=Reminder.Status.SENT).exists()
    tick(start - timedelta(hours=24))
    tick(start - timedelta(hours=24) + timedelta(minutes=1))  # the next beat finds nothing new
    # then one hour before
    tick(start - timedelta(hours=2))
    tick(start - timedelta(hours=1))
    tick(start - timedelta(hours=1) + timedelta(minutes=1))

    # then each registrant got each reminder exactly once, in their own time zone
    for zone, email in people.items():
        day = smtp_sink.wait_for(
            lambda m, to=email: m["To"] == to and m["Subject"] == f"Tomorrow: {TITLE}"
        )
        hour = smtp_sink.wait_for(
            lambda m, to=email: m["To"] == to and m["Subject"] == f"In one hour: {TITLE}"
        )
        local = start.astimezone(zoneinfo.ZoneInfo(zone))
        for message in (day, hour):
            text = message.get_body(("plain",)).get_content()
            assert f"{local:%H:%M} ({zone})" in text
            assert "/webinar/join/" in text
        assert len(reminders_to(email, f"Tomorrow: {TITLE}")) == 1
        assert len(reminders_to(email, f"In one hour: {TITLE}")) == 1
        sent = dict(
            Reminder.objects.filter(registration__email=email, status="sent").values_list(
                "kind", "sent_at"
            )
        )
        assert sent == {"24h": start - timedelta(hours=24), "1h": start - timedelta(hours=1)}
    assert not smtp_sink.matching(
        lambda m: m["To"] in people.values() and m["Subject"].startswith("Starting now")
    )
