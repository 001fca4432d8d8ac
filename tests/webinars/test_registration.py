"""Free registration through the webinar page's form: subscriber and consent, a seat at
once, the confirmation, full sessions and the waiting list."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from funnels.models import ConsentRecord, Enrolment, Subscriber
from tests.funnels.test_sequences_support import make_sequence
from webinars import services
from webinars.exceptions import SessionFull
from webinars.models import Registration, Reminder

from .conftest import form, link, make_webinar, occasions, outbox, register, session_at

ORIGIN = {"HTTP_ORIGIN": "http://testserver"}


@pytest.fixture
def webinar(home):
    soon = timezone.now().replace(microsecond=0) + timedelta(days=3)
    return make_webinar(
        home,
        sessions=[
            session_at(soon, capacity=2),
            session_at(soon + timedelta(days=7), capacity=50),
        ],
    )


def test_the_page_lists_sessions_with_seats_and_never_the_room_url(client, webinar):
    response = client.get(webinar.url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Pricing your first course" in html
    assert "2 seats left" in html
    assert "50 seats left" in html
    assert "meet.example.org" not in html


def test_registering_records_consent_and_gives_a_seat_before_any_confirmation(client, webinar):
    first = occasions(webinar)[0]

    response = client.post(
        f"/webinar/register/{webinar.pk}/", form("Leila@Example.com", first), **ORIGIN
    )

    assert response.status_code == 303
    assert urlsplit(response["Location"]).path == webinar.url
    registration = Registration.objects.get()
    assert (registration.email, registration.status, registration.occasion) == (
        "leila@example.com",
        Registration.Status.REGISTERED,
        first,
    )
    assert registration.time_zone == "Asia/Kathmandu"
    # the subscriber exists, with the consent they ticked, but is not confirmed for marketing
    subscriber = Subscriber.objects.get(email="leila@example.com")
    assert subscriber.status == Subscriber.Status.PENDING
    consent = ConsentRecord.objects.get(subscriber=subscriber)
    assert consent.action == ConsentRecord.Action.GRANTED
    assert consent.consent_text == webinar.consent_text
    assert consent.form_id == f"webinar-{webinar.pk}"
    # three reminders wait, timed from the start
    reminders = {r.kind: r.due_at for r in Reminder.objects.filter(registration=registration)}
    assert reminders == {
        "24h": first.starts_at - timedelta(hours=24),
        "1h": first.starts_at - timedelta(hours=1),
        "start": first.starts_at,
    }
    # and the confirmation is in the outbox with every link
    [confirmation] = outbox("leila@example.com", "webinars:confirmation")
    text = confirmation.text_body
    assert "You are registered" in text
    assert link(text, "/webinar/join/")
    assert link(text, "/webinar/calendar/")
    assert "calendar.google.com/calendar/render" in text
    assert "outlook.live.com/calendar" in text
    assert link(text, "/webinar/confirm/")  # the double opt-in, for marketing only
    assert "meet.example.org" not in text  # the room itself only through the join link


def test_a_confirmed_subscriber_enters_the_webinar_sequence_and_a_pending_one_after_confirming(
    client, webinar
):
    sequence = make_sequence(name="After the webinar")
    sequence.enrol_products.add(webinar.product)
    Subscriber.objects.create(
        email="known@example.com", time_zone="UTC", status=Subscriber.Status.CONFIRMED
    )
    first = occasions(webinar)[0]

    register(webinar, first, "known@example.com")
    register(webinar, first, "new@example.com")

    assert Enrolment.objects.filter(subscriber__email="known@example.com").count() == 1
    assert not Enrolment.objects.filter(subscriber__email="new@example.com").exists()

    # when the new registrant confirms from their registration email
    confirm_url = link(outbox("new@example.com")[0].text_body, "/webinar/confirm/")
    path = urlsplit(confirm_url).path
    assert client.get(path).status_code == 200
    assert client.post(path).status_code == 200
    assert Subscriber.objects.get(email="new@example.com").status == Subscriber.Status.CONFIRMED
    assert Enrolment.objects.filter(subscriber__email="new@example.com").count() == 1


def test_registering_again_for_the_same_seat_resends_the_confirmation_without_a_second_row(
    webinar,
):
    first = occasions(webinar)[0]
    register(webinar, first, "leila@example.com")
    again = register(webinar, first, "LEILA@example.com")
    assert not again.changed
    assert Registration.objects.count() == 1
    assert len(outbox("leila@example.com", "webinars:confirmation")) == 2


def test_a_full_session_offers_the_next_one_and_a_waiting_list(client, webinar):
    first, second = occasions(webinar)
    register(webinar, first, "a@example.com")
    register(webinar, first, "b@example.com")

    response = client.post(
        f"/webinar/register/{webinar.pk}/", form("c@example.com", first), **ORIGIN
    )

    assert response.status_code == 409
    html = response.content.decode()
    assert "Sorry, this session is full." in html
    assert "The next session with free seats" in html
    assert f'value="{second.pk}"' in html
    assert "Put me on the waiting list" in html
    assert not Registration.objects.filter(email="c@example.com").exists()

    # when they ask for the waiting list
    response = client.post(
        f"/webinar/register/{webinar.pk}/",
        form("c@example.com", first, waitlist="1"),
        **ORIGIN,
    )
    assert response.status_code == 303
    waiting = Registration.objects.get(email="c@example.com")
    assert waiting.status == Registration.Status.WAITLISTED
    assert outbox("c@example.com", "webinars:waitlisted")
    assert not Reminder.objects.filter(
        registration=waiting, status=Reminder.Status.PENDING
    ).exists()


def test_a_seat_given_back_goes_to_the_first_on_the_waiting_list(
    webinar, django_capture_on_commit_callbacks
):
    first = occasions(webinar)[0]
    a = register(webinar, first, "a@example.com").registration
    register(webinar, first, "b@example.com")
    register(webinar, first, "c@example.com", waitlist=True)
    register(webinar, first, "d@example.com", waitlist=True)

    with django_capture_on_commit_callbacks(execute=True):
        services.registration_cancel(registration=a)

    statuses = dict(Registration.objects.values_list("email", "status"))
    assert statuses == {
        "a@example.com": "cancelled",
        "b@example.com": "registered",
        "c@example.com": "registered",
        "d@example.com": "waitlisted",
    }
    assert outbox("c@example.com", "webinars:confirmation")
    assert (
        Reminder.objects.filter(
            registration__email="a@example.com", status=Reminder.Status.PENDING
        ).count()
        == 0
    )


def test_without_the_waiting_list_a_full_session_raises_with_the_alternative(webinar):
    first, second = occasions(webinar)
    register(webinar, first, "a@example.com")
    register(webinar, first, "b@example.com")
    with pytest.raises(SessionFull) as raised:
        register(webinar, first, "c@example.com")
    assert raised.value.alternative == second


def test_switching_sessions_frees_the_seat_and_retimes_the_reminders(
    webinar, django_capture_on_commit_callbacks
):
    first, second = occasions(webinar)
    register(webinar, first, "a@example.com")
    register(webinar, first, "b@example.com")
    register(webinar, first, "c@example.com", waitlist=True)

    with django_capture_on_commit_callbacks(execute=True):
        moved = register(webinar, second, "a@example.com").registration

    assert moved.occasion == second
    assert Reminder.objects.get(registration=moved, kind="1h").due_at == (
        second.starts_at - timedelta(hours=1)
    )
    assert Registration.objects.get(email="c@example.com").status == "registered"


@pytest.mark.parametrize(
    ("data", "message", "status"),
    [
        ({"email": "not-an-address"}, "valid email address", 400),
        ({"consent": ""}, "Please tick the box", 400),
        ({"occasion": "999999"}, "no longer open for registration", 409),
        ({"occasion": "x"}, "Please choose a session", 409),
        ({"rendered_at": ""}, "quicker than we expected", 400),
    ],
)
def test_bad_input_gets_a_clear_message_and_stores_nothing(client, webinar, data, message, status):
    first = occasions(webinar)[0]
    response = client.post(
        f"/webinar/register/{webinar.pk}/", {**form("z@example.com", first), **data}, **ORIGIN
    )
    assert response.status_code == status
    assert message in response.content.decode()
    assert not Registration.objects.exists()
    assert not Subscriber.objects.exists()


def test_a_post_from_another_site_is_refused(client, webinar):
    first = occasions(webinar)[0]
    response = client.post(
        f"/webinar/register/{webinar.pk}/",
        form("z@example.com", first),
        HTTP_ORIGIN="https://evil.example",
    )
    assert response.status_code == 403
    assert not Registration.objects.exists()


def test_the_honeypot_is_answered_like_a_person_and_stores_nothing(client, webinar):
    first = occasions(webinar)[0]
    response = client.post(
        f"/webinar/register/{webinar.pk}/",
        form("bot@example.com", first, website="http://spam.example"),
        **ORIGIN,
    )
    assert response.status_code == 302
    assert not Registration.objects.exists()


def test_a_session_that_is_over_takes_no_registration(webinar):
    first = occasions(webinar)[0]
    with pytest.raises(services.exceptions.SessionUnavailable):
        register(webinar, first, "late@example.com", now=first.ends_at + timedelta(minutes=1))


@pytest.mark.parametrize(
    ("reported", "stored"),
    [
        ("Asia/Katmandu", "Asia/Kathmandu"),  # what Chromium reports in Kathmandu
        ("Asia/Calcutta", "Asia/Kolkata"),
        ("Mars/Olympus_Mons", "UTC"),  # unknown: the site's zone
        ("", "UTC"),
    ],
)
def test_the_browsers_time_zone_is_stored_under_its_current_name(webinar, reported, stored):
    registration = register(
        webinar, occasions(webinar)[0], "tz@example.com", time_zone=reported
    ).registration
    assert registration.time_zone == stored
