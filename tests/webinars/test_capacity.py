"""Seats under concurrency: real threads, each with its own PostgreSQL connection,
register for the last seats at once."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from webinars.exceptions import SessionFull
from webinars.models import Registration, Reminder

from .conftest import make_webinar, occasions, register, session_at

pytestmark = pytest.mark.django_db(transaction=True)


def test_fifty_concurrent_registrations_for_ten_seats_seat_exactly_ten(home):
    # given a session with ten seats
    webinar = make_webinar(
        home, sessions=[session_at(timezone.now() + timedelta(days=2), capacity=10)]
    )
    [occasion] = occasions(webinar)
    start = threading.Barrier(50)
    outcomes: dict[int, str] = {}

    def attempt(number: int) -> None:
        try:
            start.wait(timeout=30)
            register(webinar, occasion, f"person{number}@example.com")
            outcomes[number] = "seated"
        except SessionFull as error:
            outcomes[number] = str(error.message)
        except Exception as error:
            outcomes[number] = f"error: {error!r}"
        finally:
            connection.close()

    # when fifty people press "Register" at the same moment
    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # then exactly ten are seated and forty got the clear "full" message
    values = list(outcomes.values())
    assert len(values) == 50
    assert values.count("seated") == 10, values
    assert values.count("Sorry, this session is full.") == 40, values
    assert (
        Registration.objects.filter(
            occasion=occasion, status=Registration.Status.REGISTERED
        ).count()
        == 10
    )
    assert Registration.objects.count() == 10
    assert Reminder.objects.filter(status=Reminder.Status.PENDING).count() == 30


def test_the_same_address_registering_twice_at_once_gets_one_row(home):
    webinar = make_webinar(
        home, sessions=[session_at(timezone.now() + timedelta(days=2), capacity=10)]
    )
    [occasion] = occasions(webinar)
    start = threading.Barrier(8)
    errors = []

    def attempt() -> None:
        try:
            start.wait(timeout=30)
            register(webinar, occasion, "twice@example.com")
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert Registration.objects.filter(email="twice@example.com").count() == 1
    # the occasion lock serialises them: the later ones find the seat already theirs
    assert errors == []
