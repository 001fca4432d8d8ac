"""Scheduling and sending in this process, at explicit times: order, windows, headers,
tracking, conditions, limits, and what happens when something goes wrong."""

import asyncio
import datetime
import re
import threading
import zoneinfo
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller
from django.core import mail
from django.core.mail import get_connection
from django.test import Client

from core.models import OutboundEmail
from funnels import services as funnel_services
from funnels.models import (
    Broadcast,
    DripDelivery,
    Enrolment,
    SequenceStep,
    Subscriber,
)
from funnels.sequences import scheduler, sending, services, tracking
from tests.harness.ports import free_port

from .test_sequences_support import at, brand_install, confirmed, make_sequence, run_due, sent_to

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _site(landing_page, settings):
    settings.SITE_URL = "https://northwind.example"
    settings.DRIP_WARMUP_PER_HOUR = 0
    brand_install()


def hours(start: datetime.datetime, count: int):
    return [start + datetime.timedelta(hours=h) for h in range(count)]


def body_of(message, subtype="plain") -> str:
    if subtype == "plain":
        return message.body
    return next(content for content, mime in message.alternatives if mime == "text/html")


# --- The happy path -------------------------------------------------------------------------


def test_each_step_goes_out_once_in_order_and_inside_the_local_window():
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi", time_zone="Asia/Tehran")
    start = at("2026-03-02 20:00")  # 23:30 in Tehran: outside the window
    services.enrolment_start(sequence=sequence, subscriber=leila, source="admin", now=start)

    for now in hours(start, 24 * 5):
        run_due(now)
        run_due(now)  # a second scheduler pass at the same moment sends nothing more

    subjects = [m.subject for m in sent_to(leila.email)]
    assert subjects == ["Welcome, Leila", "The one mistake", "Doors are open"]
    deliveries = list(DripDelivery.objects.filter(subscriber=leila).order_by("sent_at"))
    tehran = zoneinfo.ZoneInfo("Asia/Tehran")
    for delivery in deliveries:
        assert delivery.status == DripDelivery.Status.SENT
        assert datetime.time(6) <= delivery.sent_at.astimezone(tehran).time() < datetime.time(22)
    # Due at 23:30 local, held until the window opens at 06:00; the hourly pass sends it then.
    assert deliveries[0].sent_at.astimezone(tehran).strftime("%H:%M") == "06:30"
    assert deliveries[1].sent_at - deliveries[0].sent_at >= datetime.timedelta(days=1)
    enrolment = Enrolment.objects.get(subscriber=leila)
    assert enrolment.status == Enrolment.Status.COMPLETED
    assert enrolment.steps_done == 3


def test_a_sequence_email_is_multipart_with_one_click_unsubscribe_and_the_postal_address():
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )

    run_due(at("2026-03-02 10:00"))

    [message] = sent_to(leila.email)
    text, html = body_of(message), body_of(message, "html")
    unsubscribe = funnel_services.unsubscribe_url(leila)
    assert message.from_email == "Maya <maya@northwind.example>"
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = re.findall(r"<([^>]+)>", message.extra_headers["List-Unsubscribe"])
    assert https == unsubscribe and https.startswith("https://northwind.example/f/unsubscribe/")
    assert mailto.startswith("mailto:unsubscribe@northwind.example?subject=unsubscribe%20")
    assert re.fullmatch(r"<drip\.\d+\.\w+@northwind\.example>", message.extra_headers["Message-ID"])
    assert "Hi Leila," in text and "Hi Leila," in html
    assert "Kauppakatu 1" in text and "Kauppakatu 1" in html
    assert unsubscribe in text and unsubscribe in html
    assert "https://northwind.example/plan" not in text, "links go through click tracking"
    assert "/f/c/" in text and "/f/c/" in html
    assert "/f/o/" not in html, "no open pixel unless the creator switches it on"

    # The one-click POST a mail provider makes stops the sequence.
    response = Client().post(unsubscribe, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    enrolment = Enrolment.objects.get(subscriber=leila)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "unsubscribed")
    assert enrolment.last_step.subject.startswith("Welcome")


def test_a_batch_costs_one_statement_per_email_whatever_its_size(settings, monkeypatch):
    """Everything but the per-email "sent" record is loaded and written per batch: the
    rows, their steps, suppressions, purchases, tags, the delivery rows themselves."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.DRIP_WARMUP_PER_HOUR = 0
    sequence = make_sequence()
    people = [confirmed(f"r{i}@d{i % 3}.lodestone-mail.fi", name=f"R{i}") for i in range(30)]
    for person in people:
        services.enrolment_start(
            sequence=sequence, subscriber=person, source="admin", now=at("2026-03-02 10:00")
        )
    claim = scheduler.drip_schedule_due(now=at("2026-03-02 10:00"), dispatch=False)
    [batch] = claim.batches
    records = []
    record = sending._SentRecorder.send
    monkeypatch.setattr(
        sending._SentRecorder,
        "send",
        lambda self, sql, params: records.append(params["id"]) or record(self, sql, params),
    )

    def send(pairs) -> int:
        with CaptureQueriesContext(connection) as queries:
            result = sending.deliveries_send(
                enrolments=pairs, token=batch.token, now=at("2026-03-02 10:00")
            )
        assert result.sent == len(pairs)
        return len(queries)

    small, large = send(batch.enrolments[:5]), send(batch.enrolments[5:])

    # The "sent" records go to PostgreSQL past Django's cursor (sending._SentRecorder);
    # every other statement is per batch.
    assert large == small
    assert len(records) == len(set(records)) == 30
    assert DripDelivery.objects.filter(status=DripDelivery.Status.SENT).count() == 30


def test_a_sent_record_the_database_refuses_is_raised_and_the_connection_goes_on():
    from django.db import DatabaseError, transaction

    recorder = sending._SentRecorder()
    with (
        pytest.raises(DatabaseError, match="Recording a sent email failed"),
        transaction.atomic(),
    ):
        recorder.send(
            "UPDATE funnels_dripdelivery SET attempts = %(n)s WHERE id = %(id)s",
            {"n": "many", "id": 1},
        )
        recorder.collect()

    assert DripDelivery.objects.count() == 0  # the connection answers again


# --- Tracking ------------------------------------------------------------------------------


def test_a_click_is_counted_and_redirects_only_to_the_signed_destination(client):
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )
    run_due(at("2026-03-02 10:00"))
    [message] = sent_to(leila.email)
    link = re.search(r"https://northwind\.example(/f/c/[^\s/]+/)", body_of(message)).group(1)

    response = client.get(link)

    assert response.status_code == 302
    assert response["Location"] == "https://northwind.example/plan"
    delivery = DripDelivery.objects.get(subscriber=leila)
    assert delivery.clicked_at is not None and delivery.clicks == 1

    token = link.split("/")[3]
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert client.get(f"/f/c/{tampered}/").status_code == 400
    from django.core import signing

    forged = signing.dumps(
        {"d": delivery.pk, "u": "https://evil.example/"}, salt="other", compress=True
    )
    response = client.get(f"/f/c/{forged}/")
    assert response.status_code == 400
    assert "Location" not in response
    javascript = signing.dumps(
        {"d": delivery.pk, "u": "javascript:alert(1)"}, salt=tracking.CLICK_SALT, compress=True
    )
    assert client.get(f"/f/c/{javascript}/").status_code == 400


def test_email_links_are_signed_exactly_as_django_signs_them_with_the_current_secret(settings):
    from django.core import signing

    payload = {"d": 7, "u": "https://northwind.example/plan"}
    token = tracking.dumps(payload, salt=tracking.CLICK_SALT, compress=True)
    assert signing.loads(token, salt=tracking.CLICK_SALT) == payload
    assert token.split(":")[-1] == signing.TimestampSigner(salt=tracking.CLICK_SALT).signature(
        token.rsplit(":", 1)[0]
    )
    with pytest.raises(signing.BadSignature):
        signing.loads(token, salt=tracking.OPEN_SALT)

    settings.SECRET_KEY = "another-secret-" + "x" * 40
    with pytest.raises(signing.BadSignature):
        signing.loads(token, salt=tracking.CLICK_SALT)
    fresh = tracking.dumps(payload, salt=tracking.CLICK_SALT, compress=True)
    assert signing.loads(fresh, salt=tracking.CLICK_SALT) == payload


def test_the_open_pixel_appears_only_when_switched_on_and_records_the_first_open(client):
    sequence = make_sequence(track_opens=True)
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )
    run_due(at("2026-03-02 10:00"))
    [message] = sent_to(leila.email)
    pixel = re.search(r'src="https://northwind\.example(/f/o/[^"]+)"', body_of(message, "html"))

    response = client.get(pixel.group(1))

    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert DripDelivery.objects.get(subscriber=leila).opened_at is not None


def test_figures_per_step_count_sent_clicked_unsubscribed_and_bought(client):
    sequence = make_sequence()
    people = [confirmed(f"reader{i}@lodestone-mail.fi") for i in range(4)]
    for person in people:
        services.enrolment_start(
            sequence=sequence, subscriber=person, source="admin", now=at("2026-03-02 10:00")
        )
    run_due(at("2026-03-02 10:00"))
    link = re.search(r"/f/c/[^\s/]+/", body_of(sent_to(people[0].email)[0])).group(0)
    client.get(link)
    funnel_services.subscriber_unsubscribe(
        subscriber=people[1], visitor=funnel_services.Visitor(), source="link"
    )
    from funnels.sequences.selectors import step_figures

    first, second, third = step_figures(sequence)

    assert (first.sent, first.clicked, first.unsubscribed) == (4, 1, 1)
    assert (second.sent, third.sent) == (0, 0)


# --- Conditions, exits, re-entry ------------------------------------------------------------


def test_a_step_is_skipped_for_subscribers_with_a_skip_tag_and_the_next_one_follows():
    sequence = make_sequence()
    SequenceStep.objects.filter(sequence=sequence, subject="The one mistake").update(
        skip_if_tags="veteran, bought:launch-course"
    )
    veteran = confirmed("veteran@lodestone-mail.fi")
    veteran.tags.add("Veteran")
    services.enrolment_start(
        sequence=sequence, subscriber=veteran, source="admin", now=at("2026-03-02 10:00")
    )

    for now in hours(at("2026-03-02 10:00"), 24 * 5):
        run_due(now)

    assert [m.subject for m in sent_to(veteran.email)] == ["Welcome, Leila", "Doors are open"]
    skipped = DripDelivery.objects.get(subscriber=veteran, status=DripDelivery.Status.SKIPPED)
    assert skipped.step.subject == "The one mistake"


def test_reentry_once_ever_refuses_a_second_enrolment_and_again_after_finishing_allows_it():
    once = make_sequence("Once", steps=[("content", 0, 0, "Hello", "Hi")])
    again = make_sequence("Again", steps=[("content", 0, 0, "Hello", "Hi")], reentry="after_finish")
    leila = confirmed("leila@lodestone-mail.fi")
    for sequence in (once, again):
        assert services.enrolment_start(sequence=sequence, subscriber=leila, source="admin")
        assert services.enrolment_start(sequence=sequence, subscriber=leila, source="admin") is None
    run_due(at("2099-03-02 10:00"))  # both finish

    assert services.enrolment_start(sequence=once, subscriber=leila, source="admin") is None
    assert services.enrolment_start(sequence=again, subscriber=leila, source="admin")


def test_pending_subscribers_are_enrolled_when_they_confirm_not_before(landing_page, form_id):
    sequence = make_sequence()
    page = landing_page
    page.body[1].value["sequence"] = sequence
    page.save_revision().publish()
    page.refresh_from_db()
    outcome = funnel_services.optin_submit(
        landing_page=page,
        form_id=form_id,
        email="new@lodestone-mail.fi",
        name="Aino",
        consent=True,
        visitor=funnel_services.Visitor(time_zone="Asia/Kathmandu"),
        attribution=funnel_services.Attribution(),
    )
    assert outcome.subscriber.status == Subscriber.Status.PENDING
    assert not Enrolment.objects.exists(), "pending: not enrolled yet"
    confirmation = OutboundEmail.objects.get(kind="funnels:confirm", to="new@lodestone-mail.fi")
    raw_token = re.search(r"/f/confirm/([^/\s]+)/", confirmation.text_body).group(1)

    funnel_services.subscriber_confirm(token=raw_token, visitor=funnel_services.Visitor())

    enrolment = Enrolment.objects.get()
    assert (enrolment.sequence, enrolment.source) == (sequence, "optin")
    kathmandu = zoneinfo.ZoneInfo("Asia/Kathmandu")
    local = enrolment.next_send_at.astimezone(kathmandu).time()
    assert datetime.time(6) <= local < datetime.time(22)


def test_a_confirmed_subscriber_signing_up_on_another_form_joins_that_forms_sequence(
    landing_page, form_id
):
    sequence = make_sequence()
    landing_page.body[1].value["sequence"] = sequence
    landing_page.save_revision().publish()
    landing_page.refresh_from_db()
    leila = confirmed("leila@lodestone-mail.fi")
    assert not Enrolment.objects.filter(subscriber=leila).exists()

    funnel_services.optin_submit(
        landing_page=landing_page,
        form_id=form_id,
        email="leila@lodestone-mail.fi",
        name="Leila",
        consent=True,
        visitor=funnel_services.Visitor(),
        attribution=funnel_services.Attribution(),
    )

    enrolment = Enrolment.objects.get(subscriber=leila)
    assert (enrolment.sequence, enrolment.source) == (sequence, "optin")


def test_a_tag_added_to_a_confirmed_subscriber_enrols_them_in_that_tags_sequence():
    sequence = make_sequence(enrol_tag="webinar-lead")
    leila = confirmed("leila@lodestone-mail.fi")
    pending = Subscriber.objects.create(email="p@lodestone-mail.fi", time_zone="UTC")

    leila.tags.add("Webinar-Lead")
    pending.tags.add("webinar-lead")

    assert list(Enrolment.objects.values_list("subscriber__email", "source")) == [
        ("leila@lodestone-mail.fi", "tag")
    ]
    assert sequence.enrolments.count() == 1


def test_webinar_registration_enrols_through_the_service_the_webinar_app_calls():
    from tests.payments.conftest import make_product

    webinar = make_product("spring-webinar", kind="webinar")
    sequence = make_sequence()
    sequence.enrol_products.add(webinar)
    confirmed("leila@lodestone-mail.fi")

    enrolments = services.enrol_webinar_registrant(email="Leila@Lodestone-Mail.fi", product=webinar)

    assert [e.source for e in enrolments] == ["webinar"]


def test_a_bounce_or_complaint_ends_the_sequence_and_suppresses_the_address():
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(sequence=sequence, subscriber=leila, source="admin")

    services.address_suppress(email="LEILA@lodestone-mail.fi", reason="complained")

    leila.refresh_from_db()
    assert leila.status == Subscriber.Status.COMPLAINED
    assert funnel_services.is_suppressed("leila@lodestone-mail.fi")
    enrolment = Enrolment.objects.get()
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "complained")


# --- Bad input and failure -----------------------------------------------------------------


def test_a_subscriber_who_unsubscribes_while_their_step_is_queued_is_not_sent_it():
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )
    claim = scheduler.drip_schedule_due(now=at("2026-03-02 10:00"), dispatch=False)
    [batch] = claim.batches

    funnel_services.subscriber_unsubscribe(
        subscriber=leila, visitor=funnel_services.Visitor(), source="link"
    )
    result = sending.deliveries_send(
        enrolments=batch.enrolments, token=batch.token, now=at("2026-03-02 10:00")
    )

    assert result.sent == 0
    assert sent_to(leila.email) == []
    assert DripDelivery.objects.get().status == DripDelivery.Status.CANCELLED


def test_a_subscriber_erased_after_the_claim_is_neither_sent_nor_an_error():
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    aino = confirmed("aino@lodestone-mail.fi", name="Aino")
    for person in (leila, aino):
        services.enrolment_start(
            sequence=sequence, subscriber=person, source="admin", now=at("2026-03-02 10:00")
        )
    claim = scheduler.drip_schedule_due(now=at("2026-03-02 10:00"), dispatch=False)
    [batch] = claim.batches

    funnel_services.subscriber_erase(subscriber=leila)
    result = sending.deliveries_send(
        enrolments=batch.enrolments, token=batch.token, now=at("2026-03-02 10:00")
    )

    assert (result.sent, result.errors) == (1, [])
    assert [a for m in mail.outbox for a in m.to] == ["aino@lodestone-mail.fi"]
    assert DripDelivery.objects.count() == 1


def test_a_repeated_send_task_sends_nothing_more():
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )
    claim = scheduler.drip_schedule_due(now=at("2026-03-02 10:00"), dispatch=False)
    [batch] = claim.batches

    def send():
        return sending.deliveries_send(
            enrolments=batch.enrolments, token=batch.token, now=at("2026-03-02 10:00")
        )

    first, again = send(), send()

    assert (first.sent, again.sent) == (1, 0)
    assert len(sent_to(leila.email)) == 1


def test_a_template_error_holds_that_step_shows_the_creator_and_other_sequences_keep_going():
    broken = make_sequence("Broken")
    SequenceStep.objects.filter(sequence=broken, sort_order=0).update(
        body="Hi {% if first_name %}{{ first_name }}"
    )
    healthy = make_sequence("Healthy")
    leila = confirmed("leila@lodestone-mail.fi")
    aino = confirmed("aino@lodestone-mail.fi", name="Aino")
    services.enrolment_start(
        sequence=broken, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )
    services.enrolment_start(
        sequence=healthy, subscriber=aino, source="admin", now=at("2026-03-02 10:00")
    )

    [result] = run_due(at("2026-03-02 10:00"))

    assert [m.subject for m in sent_to(aino.email)] == ["Welcome, Aino"]
    assert sent_to(leila.email) == []
    assert result.errors and "if" in result.errors[0]
    step = SequenceStep.objects.get(sequence=broken, sort_order=0)
    assert "Unclosed tag" in step.render_error
    held = DripDelivery.objects.get(subscriber=leila)
    assert held.status == DripDelivery.Status.QUEUED
    assert held.note.startswith("Template error")
    from funnels.sequences.selectors import sequence_warnings

    assert any("could not be sent" in w.message for w in sequence_warnings(broken))

    # The creator fixes it; the held email goes at the next pass after its retry time.
    SequenceStep.objects.filter(pk=step.pk).update(body="Hi {{ first_name }}")
    run_due(at("2026-03-02 11:01"))
    assert [m.subject for m in sent_to(leila.email)] == ["Welcome, Leila"]
    step.refresh_from_db()
    assert step.render_error == ""


def test_an_unknown_time_zone_uses_the_brand_default_zone():
    brand_install(default_time_zone="Asia/Kathmandu")
    sequence = make_sequence()
    odd = Subscriber.objects.create(
        email="odd@lodestone-mail.fi",
        name="Odd",
        time_zone="Mars/Olympus_Mons",
        status=Subscriber.Status.CONFIRMED,
    )
    # 23:00 in Kathmandu: the send waits for 06:00 there.
    enrolment = services.enrolment_start(
        sequence=sequence, subscriber=odd, source="admin", now=at("2026-03-02 17:15")
    )

    assert enrolment.next_send_at == at("2026-03-03 00:15")
    run_due(at("2026-03-03 00:15"))
    assert [m.subject for m in sent_to(odd.email)] == ["Welcome, Odd"]


def test_paused_sequences_send_nothing_and_resume_where_they_stopped():
    sequence = make_sequence()
    leila = confirmed("leila@lodestone-mail.fi")
    services.enrolment_start(
        sequence=sequence, subscriber=leila, source="admin", now=at("2026-03-02 10:00")
    )
    services.sequence_pause(sequence=sequence)

    run_due(at("2026-03-02 10:00"))
    assert sent_to(leila.email) == []

    services.sequence_resume(sequence=sequence, now=at("2026-03-02 12:00"))
    run_due(at("2026-03-02 12:00"))
    assert [m.subject for m in sent_to(leila.email)] == ["Welcome, Leila"]


def test_rate_limits_hold_back_a_busy_domain_and_release_it_the_next_minute(settings):
    settings.DRIP_DOMAIN_RATE_PER_MINUTE = 2
    sequence = make_sequence(steps=[("content", 0, 0, "Hello", "Hi")])
    people = [confirmed(f"r{i}@gmail.example") for i in range(5)] + [
        confirmed("solo@lodestone-mail.fi")
    ]
    for person in people:
        services.enrolment_start(
            sequence=sequence, subscriber=person, source="admin", now=at("2026-03-02 10:00")
        )

    run_due(at("2026-03-02 10:00"))
    assert len(mail.outbox) == 3  # two gmail.example and the other domain
    run_due(at("2026-03-02 10:01:30"))
    assert len(mail.outbox) == 5
    run_due(at("2026-03-02 10:02:30"))
    assert sorted(a for m in mail.outbox for a in m.to) == sorted(p.email for p in people)


def test_warm_up_caps_a_new_sender_per_hour_and_the_cap_grows_day_by_day(settings):
    from funnels.sequences import limits

    settings.DRIP_WARMUP_PER_HOUR = 3
    settings.DRIP_WARMUP_FACTOR = 2
    limits.forget_first_send()
    sequence = make_sequence(steps=[("content", 0, 0, "Hello", "Hi")])
    for i in range(10):
        services.enrolment_start(
            sequence=sequence,
            subscriber=confirmed(f"r{i}@lodestone-mail.fi"),
            source="admin",
            now=at("2026-03-02 10:00"),
        )

    run_due(at("2026-03-02 10:00"))
    run_due(at("2026-03-02 10:30"))
    assert len(mail.outbox) == 3
    limits.forget_first_send()
    run_due(at("2026-03-03 12:00"))  # the second day allows 6 an hour
    assert len(mail.outbox) == 9
    limits.forget_first_send()


# --- SMTP trouble, against a real SMTP server on loopback -----------------------------------


class FlakySmtp:
    """Refuses (451) or stalls on the recipients it is told to, the first time only."""

    def __init__(self, *, refuse=(), stall=()):
        self.refuse, self.stall = set(refuse), set(stall)
        self.received: list = []
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            self.refuse.discard(address)
            return "451 4.3.0 Try again later"
        if address in self.stall:
            self.stall.discard(address)
            # Hold the reply until the test lets go (after the client has timed out).
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=default_policy)
        self.received.append(message["To"])
        return "250 Message accepted"


@pytest.fixture
def flaky_smtp():
    servers = []

    def start(**kwargs):
        handler = FlakySmtp(**kwargs)
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        servers.append((controller, handler))
        connection = get_connection(
            "django.core.mail.backends.smtp.EmailBackend",
            host="127.0.0.1",
            port=controller.port,
            timeout=1,
            fail_silently=False,
        )
        return handler, connection

    yield start
    for controller, handler in servers:
        handler.release.set()
        controller.stop()


def _enrol_many(count, domain="lodestone-mail.fi"):
    sequence = make_sequence(steps=[("content", 0, 0, "Hello {{ first_name }}", "Hi")])
    people = [confirmed(f"r{i}@{domain}", name=f"R{i}") for i in range(count)]
    for person in people:
        services.enrolment_start(
            sequence=sequence, subscriber=person, source="admin", now=at("2026-03-02 10:00")
        )
    return people


def test_smtp_refusing_mid_batch_is_retried_later_and_never_duplicated(flaky_smtp):
    people = _enrol_many(5)
    handler, connection = flaky_smtp(refuse={"r2@lodestone-mail.fi"})

    [first] = run_due(at("2026-03-02 10:00"), connection=connection)

    assert (first.sent, first.deferred) == (4, 1)
    refused = DripDelivery.objects.get(subscriber__email="r2@lodestone-mail.fi")
    assert refused.status == DripDelivery.Status.QUEUED and "451" in refused.note
    run_due(at("2026-03-02 10:00:30"), connection=connection)  # before the retry time
    assert len(handler.received) == 4
    run_due(at("2026-03-02 10:02"), connection=connection)
    assert sorted(handler.received) == sorted(p.email for p in people)
    assert DripDelivery.objects.filter(status=DripDelivery.Status.SENT).count() == 5


def test_smtp_timing_out_mid_batch_gives_the_rest_back_and_sends_each_once(flaky_smtp):
    people = _enrol_many(5)
    handler, connection = flaky_smtp(stall={"r2@lodestone-mail.fi"})

    [first] = run_due(at("2026-03-02 10:00"), connection=connection)
    handler.release.set()

    assert first.sent == 2
    assert first.deferred == 3
    assert all(
        d.status == DripDelivery.Status.QUEUED
        for d in DripDelivery.objects.exclude(
            subscriber__email__in=["r0@lodestone-mail.fi", "r1@lodestone-mail.fi"]
        )
    )
    run_due(at("2026-03-02 10:05"), connection=connection)
    assert sorted(handler.received) == sorted(p.email for p in people)


def test_smtp_server_down_defers_the_whole_batch(flaky_smtp):
    people = _enrol_many(3)
    closed = get_connection(
        "django.core.mail.backends.smtp.EmailBackend",
        host="127.0.0.1",
        port=free_port(),
        timeout=1,
        fail_silently=False,
    )

    [result] = run_due(at("2026-03-02 10:00"), connection=closed)

    assert (result.sent, result.deferred) == (0, 3)
    handler, connection = flaky_smtp()
    run_due(at("2026-03-02 10:02"), connection=connection)
    assert sorted(handler.received) == sorted(p.email for p in people)


# --- Broadcasts ------------------------------------------------------------------------------


def test_a_broadcast_reaches_its_segment_once_each_inside_their_own_window():
    from tests.payments.conftest import make_product

    product = make_product("launch-course")
    in_tehran = confirmed("tehran@lodestone-mail.fi", time_zone="Asia/Tehran")
    in_helsinki = confirmed("helsinki@lodestone-mail.fi", time_zone="Europe/Helsinki")
    untagged = confirmed("other@lodestone-mail.fi")
    excluded = confirmed("vip@lodestone-mail.fi")
    unsubscribed = confirmed("gone@lodestone-mail.fi")
    for person in (in_tehran, in_helsinki, excluded, unsubscribed):
        person.tags.add("launch")
    excluded.tags.add("vip")
    Subscriber.objects.filter(pk=unsubscribed.pk).update(status=Subscriber.Status.UNSUBSCRIBED)
    broadcast = Broadcast.objects.create(
        name="Spring news",
        subject="News for {{ first_name }}",
        body="Spring is here.",
        tags="launch",
        exclude_tags="vip",
        product=product,
        bought=Broadcast.Bought.NOT_BOUGHT,
    )
    services.broadcast_schedule(broadcast=broadcast, send_at=at("2026-06-10 01:00"))

    for now in hours(at("2026-06-10 01:00"), 24):
        run_due(now)

    assert sorted(a for m in mail.outbox for a in m.to) == [
        "helsinki@lodestone-mail.fi",
        "tehran@lodestone-mail.fi",
    ]
    tehran = DripDelivery.objects.get(subscriber=in_tehran)
    assert tehran.sent_at.astimezone(zoneinfo.ZoneInfo("Asia/Tehran")).time() >= datetime.time(6)
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.recipients) == (Broadcast.Status.SENT, 2)
    assert untagged.drip_deliveries.count() == 0


def test_a_broadcast_to_a_source_reaches_only_those_who_first_came_from_it(landing_page):
    from funnels.models import LandingPage

    webinar_page = landing_page
    checklist_page = LandingPage(title="Checklist page", slug="checklist", body=landing_page.body)
    webinar_page.add_child(instance=checklist_page)
    checklist_page.save_revision().publish()

    def sign_up(page, email, utm_source=""):
        funnel_services.optin_submit(
            landing_page=page,
            form_id=next(iter(page.optin_forms())),
            email=email,
            name="Reader",
            consent=True,
            visitor=funnel_services.Visitor(time_zone="Europe/Helsinki"),
            attribution=funnel_services.Attribution(utm_source=utm_source),
        )

    sign_up(webinar_page, "webinar@lodestone-mail.fi", utm_source="podcast")
    sign_up(checklist_page, "checklist@lodestone-mail.fi", utm_source="podcast")
    sign_up(checklist_page, "newsletter@lodestone-mail.fi", utm_source="newsletter")
    # a later sign-up elsewhere does not change where someone first came from
    sign_up(webinar_page, "checklist@lodestone-mail.fi")
    Subscriber.objects.update(status=Subscriber.Status.CONFIRMED)  # as if each confirmed
    by_page = Broadcast.objects.create(
        name="Page", subject="For the webinar crowd", body="Hi", landing_page=webinar_page
    )
    by_utm = Broadcast.objects.create(
        name="Podcast", subject="For podcast listeners", body="Hi", utm_source="podcast"
    )
    for broadcast in (by_page, by_utm):
        services.broadcast_schedule(broadcast=broadcast, send_at=at("2026-06-10 09:00"))

    run_due(at("2026-06-10 09:00"))

    def recipients(subject):
        return sorted(a for m in mail.outbox if m.subject == subject for a in m.to)

    assert recipients("For the webinar crowd") == ["webinar@lodestone-mail.fi"]
    assert recipients("For podcast listeners") == [
        "checklist@lodestone-mail.fi",
        "webinar@lodestone-mail.fi",
    ]
