"""Acceptance with real processes: the Celery worker (a subprocess on Redis), the SMTP sink,
PostgreSQL. Time is moved, not waited for: the scheduler task gets an explicit ``now``
through the worker, and that clock travels on to the send tasks."""

import asyncio
import datetime
import os
import signal
import threading
import uuid
import zoneinfo
from email import message_from_bytes
from email.policy import default as default_policy
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from django.test import Client

from config.celery_app import app
from funnels.models import DripDelivery, Enrolment, Subscriber
from funnels.sequences import scheduler, services
from funnels.tasks_sequences import drip_schedule, drip_send_batch
from tests.harness.celery_worker import Broker, celery_worker_running
from tests.harness.concurrency import run_at_once
from tests.harness.ports import free_port
from tests.harness.waiting import wait_until
from tests.payments.conftest import buy, make_offer, sx, webhook  # noqa: F401 (fixtures)
from tests.stripe_standin.fixtures import stripe_standin  # noqa: F401

from .test_sequences_support import at, brand_install, confirmed, make_sequence

pytestmark = pytest.mark.django_db(transaction=True)
SUBJECTS = ("Welcome, Leila", "The one mistake", "Doors are open")


def tick(now: datetime.datetime) -> None:
    """One scheduler pass at ``now``, run by the live worker; returns when every enrolment
    that was due has been sent (or deferred, or has left)."""
    due = list(
        Enrolment.objects.filter(status=Enrolment.Status.ACTIVE, next_send_at__lte=now).values_list(
            "pk", flat=True
        )
    )
    drip_schedule.delay(now.isoformat())

    def settled():
        return (
            not Enrolment.objects.filter(pk__in=due, status=Enrolment.Status.ACTIVE)
            .exclude(claimed_at__isnull=True, next_send_at__gt=now)
            .exists()
        )

    wait_until(settled, timeout=30, what=f"the worker to finish the sends due at {now}")


def next_due() -> datetime.datetime | None:
    return (
        Enrolment.objects.filter(status=Enrolment.Status.ACTIVE)
        .order_by("next_send_at")
        .values_list("next_send_at", flat=True)
        .first()
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@lodestone-mail.fi"


def test_a_three_step_sequence_over_simulated_days_in_three_time_zones(
    celery_worker, smtp_sink, landing_page, sx, webhook, django_server_env
):
    # given a three-step sequence selling a course, and five subscribers
    brand_install()
    offer = make_offer("launch-course")
    sequence = make_sequence()
    sequence.target_products.set(offer.products.all())
    zones = {"tehran": "Asia/Tehran", "kathmandu": "Asia/Kathmandu", "newyork": "America/New_York"}
    readers = {key: confirmed(unique(key), time_zone=zone) for key, zone in zones.items()}
    buyer = confirmed(unique("buyer"), time_zone="Europe/Helsinki")
    leaver = confirmed(unique("leaver"), time_zone="Asia/Tehran")
    start = at("2026-03-06 21:10")  # a Friday night in Helsinki; New York changes clocks on Sunday
    for person in [*readers.values(), buyer, leaver]:
        services.enrolment_start(sequence=sequence, subscriber=person, source="optin", now=start)

    # when time moves forward through the worker, from one due moment to the next
    purchased = unsubscribed = False
    for _ in range(40):
        now = next_due()
        if now is None:
            break
        tick(now)
        if (
            not purchased
            and DripDelivery.objects.filter(
                subscriber=buyer, status=DripDelivery.Status.SENT
            ).exists()
        ):
            # the buyer pays after the first email
            smtp_sink.wait_for(lambda m, to=buyer.email: m["To"] == to)
            sx.complete_checkout(buy(Client(), offer), email=buyer.email, name="Buyer")
            sx.deliver_pending()
            purchased = True
        if (
            not unsubscribed
            and DripDelivery.objects.filter(
                subscriber=leaver, status=DripDelivery.Status.SENT
            ).count()
            == 2
        ):
            # the leaver presses the one-click unsubscribe of the second email
            second = smtp_sink.wait_for(
                lambda m, to=leaver.email: m["To"] == to and m["Subject"] == "The one mistake"
            )
            link = second["List-Unsubscribe"].split(",")[0].strip(" <>")
            response = Client().post(urlsplit(link).path, {"List-Unsubscribe": "One-Click"})
            assert response.status_code == 200
            unsubscribed = True
    assert next_due() is None, "every enrolment finished or left"

    # then each reader got each step once, in order, inside their own window
    for key, person in readers.items():
        messages = [
            smtp_sink.wait_for(
                lambda m, to=person.email, s=subject: m["To"] == to and m["Subject"] == s
            )
            for subject in SUBJECTS
        ]
        assert len(smtp_sink.matching(lambda m, to=person.email: m["To"] == to)) == 3
        assert all(m.get_content_type() == "multipart/alternative" for m in messages)
        assert messages[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        zone = zoneinfo.ZoneInfo(zones[key])
        sends = list(
            DripDelivery.objects.filter(subscriber=person)
            .order_by("sent_at")
            .select_related("step")
        )
        assert [d.subject for d in sends] == ["Welcome, Leila", "The one mistake", "Doors are open"]
        for delivery in sends:
            assert datetime.time(6) <= delivery.sent_at.astimezone(zone).time() < datetime.time(22)

    # and the purchase and the unsubscribe each stopped their sequence (the buyer's other
    # email is the shop's order welcome)
    def sequence_mail(to):
        return smtp_sink.matching(lambda m: m["To"] == to and m["Subject"] in SUBJECTS)

    assert [m["Subject"] for m in sequence_mail(buyer.email)] == ["Welcome, Leila"]
    assert Enrolment.objects.get(subscriber=buyer).exit_reason == "purchased"
    assert len(sequence_mail(leaver.email)) == 2
    assert Enrolment.objects.get(subscriber=leaver).exit_reason == "unsubscribed"
    assert Subscriber.objects.get(pk=leaver.pk).status == Subscriber.Status.UNSUBSCRIBED


@pytest.fixture
def second_worker(celery_broker, django_server_env, harness_log_dir):
    """Another `celery worker` subprocess on the session's queue: two consumers race."""
    with celery_worker_running(
        app=app,
        broker=Broker(url=celery_broker.url, queue=celery_broker.queue),
        env={**django_server_env},
        log_path=harness_log_dir / f"celery-worker-2-{uuid.uuid4().hex[:6]}.log",
    ) as worker:
        yield worker


def test_two_schedulers_and_two_workers_racing_send_each_email_exactly_once(
    celery_worker, second_worker, smtp_sink, landing_page
):
    brand_install()
    sequence = make_sequence(steps=[("content", 0, 0, "Race day", "Hi {{ first_name }}")])
    people = [confirmed(unique(f"race{i}"), time_zone="Europe/Helsinki") for i in range(120)]
    now = at("2026-03-02 10:00")
    for person in people:
        services.enrolment_start(sequence=sequence, subscriber=person, source="admin", now=now)

    def schedule():
        return scheduler.drip_schedule_due(now=now, batch_size=25, dispatch=False)

    first, second = run_at_once(schedule, schedule)

    assert first.claimed + second.claimed == len(people)
    claimed = [e for r in (first, second) for batch in r.batches for e, _step in batch.enrolments]
    assert len(claimed) == len(set(claimed)) == len(people)
    # Every batch is published twice, as a broker redelivery would: both workers get copies,
    # and both try to write the batch's delivery rows.
    for batch in first.batches + second.batches:
        for _copy in range(2):
            drip_send_batch.delay([], batch.token, now.isoformat(), enrolments=batch.enrolments)
    wait_until(
        lambda: DripDelivery.objects.filter(status=DripDelivery.Status.SENT).count() == len(people),
        timeout=60,
        what="every race email to be sent",
    )
    for person in people:
        smtp_sink.wait_for(lambda m, to=person.email: m["To"] == to)
    received = [m["To"] for m in smtp_sink.messages if m["Subject"] == "Race day"]
    assert sorted(received) == sorted(p.email for p in people)
    assert DripDelivery.objects.count() == len(people)


class StallingSmtp:
    """Accepts mail, but holds its reply to RCPT for one address until told to go on."""

    def __init__(self, stall: str):
        self.stall = stall
        self.holding = threading.Event()
        self.release = threading.Event()
        self.received: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.stall:
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
            return "421 4.3.2 Going away"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(message_from_bytes(envelope.content, policy=default_policy)["To"])
        return "250 Message accepted"


def test_a_worker_killed_mid_send_leaves_its_claim_to_be_taken_over_after_the_timeout(
    celery_worker, celery_broker, smtp_sink, landing_page, django_server_env, harness_log_dir
):
    brand_install()
    sequence = make_sequence(steps=[("content", 0, 0, "Killed mid-send", "Hi")])
    people = [confirmed(unique(f"kill{i}"), time_zone="Europe/Helsinki") for i in range(6)]
    now = at("2026-03-02 10:00")
    for person in people:
        services.enrolment_start(sequence=sequence, subscriber=person, source="admin", now=now)
    stalling = StallingSmtp(stall=people[2].email)
    sink = Controller(stalling, hostname="127.0.0.1", port=free_port())
    sink.start()
    queue = f"{celery_broker.queue}-doomed"
    try:
        with celery_worker_running(
            app=app,
            broker=Broker(url=celery_broker.url, queue=queue),
            env={
                **django_server_env,
                "CELERY_TASK_DEFAULT_QUEUE": queue,
                "EMAIL_URL": f"smtp://127.0.0.1:{sink.port}",
            },
            log_path=harness_log_dir / "celery-worker-doomed.log",
        ) as doomed:
            result = scheduler.drip_schedule_due(now=now, dispatch=False)
            [batch] = result.batches
            drip_send_batch.apply_async(
                ([], batch.token, now.isoformat()),
                {"enrolments": batch.enrolments},
                queue=queue,
            )
            assert stalling.holding.wait(30), "the doomed worker reached the third email"

            os.killpg(doomed.server.proc.pid, signal.SIGKILL)
            doomed.server.proc.wait(10)
    finally:
        stalling.release.set()
        sink.stop()

    states = dict(DripDelivery.objects.values_list("subscriber__email", "status"))
    # The doomed worker took its batch ("sending"), sent two, and died on the third.
    assert [states[p.email] for p in people[:2]] == ["sent", "sent"]
    assert {states[p.email] for p in people[2:]} == {"sending"}

    # Before the claim timeout nothing is taken over; after it, the session worker is.
    tick_at = now + scheduler.CLAIM_TIMEOUT - datetime.timedelta(minutes=1)
    assert scheduler.drip_schedule_due(now=tick_at, dispatch=False).deliveries == 0
    later = now + scheduler.CLAIM_TIMEOUT + datetime.timedelta(minutes=1)
    drip_schedule.delay(later.isoformat())
    wait_until(
        lambda: DripDelivery.objects.filter(status=DripDelivery.Status.SENT).count() == 6,
        timeout=30,
        what="the abandoned emails to be sent by the live worker",
    )
    for person in people[2:]:
        smtp_sink.wait_for(lambda m, to=person.email: m["To"] == to)
    everywhere = stalling.received + [
        m["To"] for m in smtp_sink.messages if m["Subject"] == "Killed mid-send"
    ]
    assert sorted(everywhere) == sorted(p.email for p in people), "each exactly once"
