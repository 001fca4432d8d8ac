"""The drain processes a batch of sign-ups in one transaction, reading what they share
once and writing each kind of row in one statement; every per-sign-up rule still holds."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import OutboundEmail
from funnels import services
from funnels.models import ConsentRecord, LeadMagnet, SignUp, Subscriber, Touch
from funnels.tasks_signups import signup_drain_task, signup_process_task
from tests.harness.concurrency import run_at_once

from .conftest import make_landing_page

pytestmark = pytest.mark.django_db

# The per-sign-up path took ~31 queries a sign-up (measured before batching).
PER_SIGNUP_BEFORE = 31


def stored(spec, email, *, ip="203.0.113.9", agent="Firefox/140", source="", tz=""):
    return services.signup_receive(
        spec=spec,
        email=email,
        name="Leila Karimi",
        consent=True,
        visitor=services.Visitor(ip_address=ip, user_agent=agent, time_zone=tz),
        attribution=services.Attribution(utm_source=source, utm_campaign="launch"),
        queue=False,
    )


def spec_of(page):
    return next(iter(services.optin_form_specs_of(page).values()))


def drain_queries(spec, count: int, prefix: str) -> int:
    ids = [stored(spec, f"{prefix}{n}@lodestone-mail.fi").pk for n in range(count)]
    with CaptureQueriesContext(connection) as queries:
        services.signups_process_batch(signup_ids=ids)
    assert SignUp.objects.filter(pk__in=ids, status=SignUp.Status.PROCESSED).count() == count
    return len(queries)


def test_the_queries_of_a_batch_do_not_grow_per_signup_like_one_by_one(
    landing_page, form_id, django_assert_max_num_queries
):
    spec = services.optin_form_specs_of(landing_page)[form_id]
    stored(spec, "warm@lodestone-mail.fi")  # tags and brand settings exist from here on
    services.signups_process_batch(signup_ids=services.signups_waiting())

    small = drain_queries(spec, 5, "small")
    # 50 sign-ups: a fixed cost per batch plus the outbox row of each email (core's
    # email_enqueue: savepoint, insert, release), far below 50 x the old cost.
    ids = [stored(spec, f"large{n}@lodestone-mail.fi").pk for n in range(50)]
    with django_assert_max_num_queries(50 * 4):
        services.signups_process_batch(signup_ids=ids)
    large = drain_queries(spec, 50, "again")

    assert large < 50 * PER_SIGNUP_BEFORE / 5
    assert (large - small) / 45 <= 3.5, "per extra sign-up: only its email's outbox row"


def test_a_batch_keeps_every_signup_its_own_consent_source_and_one_email_per_address(magnet):
    page = make_landing_page(magnet, title="Batch page")
    spec = spec_of(page)
    first = stored(spec, "twice@lodestone-mail.fi", ip="203.0.113.1", agent="A", source="ig")
    second = stored(spec, "twice@lodestone-mail.fi", ip="203.0.113.2", agent="B", source="fb")
    other = stored(spec, "other@lodestone-mail.fi", tz="Asia/Tehran")

    results = services.signups_process_batch(signup_ids=[first.pk, second.pk, other.pk])

    assert results == {first.pk: "confirm", second.pk: "none", other.pk: "confirm"}
    twice = Subscriber.objects.get(email="twice@lodestone-mail.fi")
    assert Subscriber.objects.count() == 2
    consents = ConsentRecord.objects.filter(subscriber=twice).order_by("ip_address")
    assert [(c.ip_address, c.user_agent, c.created_at) for c in consents] == [
        ("203.0.113.1", "A", first.created_at),
        ("203.0.113.2", "B", second.created_at),
    ]
    touches = Touch.objects.filter(subscriber=twice).order_by("pk")
    assert [t.utm_source for t in touches] == ["ig", "fb"]
    assert (twice.first_touch_id, twice.last_touch_id) == (touches[0].pk, touches[1].pk)
    assert sorted(twice.tags.names()) == ["checklist", "launch"]
    assert Subscriber.objects.get(email="other@lodestone-mail.fi").time_zone == "Asia/Tehran"
    assert sorted(OutboundEmail.objects.values_list("to", flat=True)) == [
        "other@lodestone-mail.fi",
        "twice@lodestone-mail.fi",
    ]
    assert SignUp.objects.get(pk=second.pk).subscriber == twice


def test_a_batch_sends_a_confirmed_subscriber_one_delivery_and_confirms_single_opt_in(magnet):
    double = spec_of(make_landing_page(magnet, title="Double page"))
    single = spec_of(make_landing_page(magnet, title="Single page", double_opt_in=False))
    Subscriber.objects.create(
        email="known@lodestone-mail.fi", time_zone="UTC", status=Subscriber.Status.CONFIRMED
    )
    ids = [
        stored(double, "known@lodestone-mail.fi").pk,
        stored(double, "known@lodestone-mail.fi").pk,
        stored(single, "quick@lodestone-mail.fi").pk,
        stored(double, "quick@lodestone-mail.fi").pk,
    ]

    results = services.signups_process_batch(signup_ids=ids)

    assert [results[pk] for pk in ids] == ["delivery", "none", "delivery", "none"]
    quick = Subscriber.objects.get(email="quick@lodestone-mail.fi")
    assert quick.status == Subscriber.Status.CONFIRMED
    kinds = sorted(OutboundEmail.objects.values_list("to", "kind"))
    assert kinds == [
        ("known@lodestone-mail.fi", "funnels:delivery"),
        ("quick@lodestone-mail.fi", "funnels:delivery"),
    ]


def test_a_signup_whose_magnet_is_gone_fails_visibly_and_the_rest_of_the_batch_goes_through(
    protected_dir,
):
    kept = LeadMagnet.objects.create(title="Kept")
    gone = LeadMagnet.objects.create(title="Gone")
    lost = stored(spec_of(make_landing_page(gone, title="Lost page")), "lost@lodestone-mail.fi")
    fine = stored(spec_of(make_landing_page(kept, title="Kept page")), "fine@lodestone-mail.fi")
    gone.delete()

    results = services.signups_process_batch(signup_ids=[lost.pk, fine.pk])

    assert results == {lost.pk: "failed", fine.pk: "confirm"}
    lost.refresh_from_db()
    assert (lost.status, lost.attempts) == (SignUp.Status.FAILED, 1)
    assert "magnet of this form was deleted" in lost.last_error
    assert not Subscriber.objects.filter(email="lost@lodestone-mail.fi").exists()
    assert SignUp.objects.get(pk=fine.pk).status == SignUp.Status.PROCESSED


def test_a_signup_that_breaks_the_batch_goes_to_its_task_and_the_others_are_processed(
    landing_page, form_id, published, celery_broker, monkeypatch
):
    spec = services.optin_form_specs_of(landing_page)[form_id]
    ids = [stored(spec, f"{n}@lodestone-mail.fi").pk for n in ("ann", "bad", "cem")]
    real = services._confirmation_email

    def confirmation_email(subscriber, token, magnet):
        if subscriber.email.startswith("bad"):
            raise RuntimeError("template bug")
        real(subscriber, token, magnet)

    monkeypatch.setattr(services, "_confirmation_email", confirmation_email)

    assert signup_drain_task.apply().get() == 3

    statuses = dict(SignUp.objects.values_list("email", "status"))
    assert statuses == {
        "ann@lodestone-mail.fi": SignUp.Status.PROCESSED,
        "bad@lodestone-mail.fi": SignUp.Status.RECEIVED,
        "cem@lodestone-mail.fi": SignUp.Status.PROCESSED,
    }
    assert (signup_process_task.name, [ids[1]]) in published
    assert sorted(OutboundEmail.objects.values_list("to", flat=True)) == [
        "ann@lodestone-mail.fi",
        "cem@lodestone-mail.fi",
    ]


def test_a_batch_skips_rows_already_processed_or_busy(landing_page, form_id):
    spec = services.optin_form_specs_of(landing_page)[form_id]
    done = stored(spec, "done@lodestone-mail.fi")
    services.signup_process(signup_id=done.pk)

    assert services.signups_process_batch(signup_ids=[done.pk]) == {done.pk: "already processed"}
    assert OutboundEmail.objects.count() == 1


def test_a_repeat_signup_within_the_window_sends_no_second_confirmation(landing_page, form_id):
    spec = services.optin_form_specs_of(landing_page)[form_id]
    earlier = stored(spec, "again@lodestone-mail.fi")
    services.signup_process(signup_id=earlier.pk)
    later = stored(spec, "again@lodestone-mail.fi")
    SignUp.objects.filter(pk=later.pk).update(created_at=timezone.now() + timedelta(seconds=30))

    assert services.signups_process_batch(signup_ids=[later.pk]) == {later.pk: "none"}
    assert OutboundEmail.objects.count() == 1


# --- Races -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_batches_with_the_same_addresses_at_once_make_one_subscriber_and_email_each(magnet):
    spec = spec_of(make_landing_page(magnet, title="Overlap"))
    addresses = [f"both{n}@lodestone-mail.fi" for n in range(8)]
    # every address in both batches, in opposite orders of arrival
    one = [stored(spec, a).pk for a in addresses]
    two = [stored(spec, a).pk for a in reversed(addresses)]

    results = run_at_once(
        lambda: services.signups_process_batch(signup_ids=one),
        lambda: services.signups_process_batch(signup_ids=two),
    )

    assert len(results[0]) + len(results[1]) == 16
    assert Subscriber.objects.count() == 8
    emails = list(OutboundEmail.objects.values_list("to", flat=True))
    assert sorted(emails) == sorted(addresses), "one confirmation per address"
    assert ConsentRecord.objects.count() == 16
    assert not SignUp.objects.exclude(status=SignUp.Status.PROCESSED).exists()


@pytest.mark.django_db(transaction=True)
def test_a_drain_and_the_signups_own_task_at_once_process_it_once(magnet):
    spec = spec_of(make_landing_page(magnet, title="Drain and task"))
    ids = [stored(spec, f"mixed{n}@lodestone-mail.fi").pk for n in range(6)]
    twin = stored(spec, "mixed0@lodestone-mail.fi").pk  # the same address, its own task

    run_at_once(
        lambda: signup_drain_task.apply().get(),
        lambda: [services.signup_process(signup_id=pk) for pk in (ids[0], twin)],
    )

    assert SignUp.objects.filter(status=SignUp.Status.PROCESSED).count() == 7
    assert Subscriber.objects.count() == 6
    emails = list(OutboundEmail.objects.values_list("to", flat=True))
    assert len(emails) == len(set(emails)) == 6
