"""The opt-in request stores one sign-up row and queues a task; the task (or the sweep)
turns it into subscriber, touch, consent, tags, token and confirmation email, once."""

import threading
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.core import signing
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from core.models import OutboundEmail
from funnels import services
from funnels.forms import RENDERED_SALT
from funnels.models import ConsentRecord, LeadMagnet, SignUp, Subscriber, Touch
from funnels.tasks_signups import signup_process_task
from tests.harness.concurrency import run_at_once
from tests.harness.waiting import wait_until

from .conftest import make_landing_page, process_signups

pytestmark = pytest.mark.django_db

CONSENT = "Send me the checklist and weekly tips. Unsubscribe any time."


def form_body(email="leila@lodestone-mail.fi", rendered_at=None, **overrides) -> str:
    data = {
        "email": email,
        "name": "  Leila   Karimi ",
        "consent": "on",
        "time_zone": "Asia/Tehran",
        "rendered_at": rendered_at or signing.dumps(int(time.time()) - 30, salt=RENDERED_SALT),
        "utm_source": "instagram",
        "utm_campaign": "launch",
    }
    data.update(overrides)
    return urlencode(data)


def stored_signup(spec, email: str) -> SignUp:
    """A sign-up stored as the request stores it, with nothing queued (the broker down)."""
    return services.signup_receive(
        spec=spec,
        email=email,
        name="",
        consent=True,
        visitor=services.Visitor(),
        attribution=services.Attribution(),
        queue=False,
    )


def post(client, page, form_id, body, accept="application/json"):
    return client.post(
        reverse("funnels:subscribe", args=[page.pk, form_id]),
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT=accept,
        HTTP_USER_AGENT="Firefox/140",
        REMOTE_ADDR="203.0.113.9",
    )


def test_the_request_stores_the_signup_in_one_insert_and_queues_its_processing(
    client, landing_page, form_id, django_capture_on_commit_callbacks
):
    with (
        django_capture_on_commit_callbacks() as callbacks,
        CaptureQueriesContext(connection) as queries,
    ):
        response = post(client, landing_page, form_id, form_body(email=" Leila@Lodestone-Mail.FI "))

    assert response.status_code == 200
    assert response.json()["ok"] is True
    writes = [q["sql"] for q in queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) == 1 and writes[0].startswith('INSERT INTO "funnels_signup"')
    assert len(callbacks) == 1, "the processing task is queued once the row is committed"
    signup = SignUp.objects.get()
    assert signup.status == SignUp.Status.RECEIVED
    assert signup.email == "leila@lodestone-mail.fi"
    assert signup.name == "Leila Karimi"
    assert signup.consent_text == CONSENT
    assert signup.form_version == str(landing_page.live_revision_id)
    assert signup.magnet_id is not None
    assert (signup.utm_source, signup.utm_campaign) == ("instagram", "launch")
    assert (signup.ip_address, signup.user_agent) == ("203.0.113.9", "Firefox/140")
    assert not Subscriber.objects.exists(), "the worker creates the subscriber"


def test_processing_creates_subscriber_consent_tags_and_one_confirmation_once(
    client, landing_page, form_id
):
    post(client, landing_page, form_id, form_body())
    signup = SignUp.objects.get()

    assert process_signups() == ["confirm"]
    # a duplicate message (the sweep, a redelivery after a worker died) changes nothing
    assert signup_process_task.apply(args=[signup.pk]).get() == "already processed"

    subscriber = Subscriber.objects.get()
    assert (subscriber.email, subscriber.name, subscriber.time_zone) == (
        "leila@lodestone-mail.fi",
        "Leila Karimi",
        "Asia/Tehran",
    )
    assert sorted(subscriber.tags.names()) == ["checklist", "launch"]
    assert Touch.objects.get().utm_source == "instagram"
    consent = ConsentRecord.objects.get()
    assert consent.consent_text == CONSENT
    assert consent.created_at == signup.created_at, "consent dates from the visitor's post"
    assert OutboundEmail.objects.filter(kind="funnels:confirm").count() == 1
    signup.refresh_from_db()
    assert (signup.status, signup.subscriber, signup.outcome) == (
        SignUp.Status.PROCESSED,
        subscriber,
        "confirm",
    )


def test_the_same_form_posted_twice_is_stored_once_and_answered_twice(
    client, landing_page, form_id
):
    body = form_body()

    answers = [post(client, landing_page, form_id, body).status_code for _ in range(2)]

    assert answers == [200, 200]
    assert SignUp.objects.count() == 1


def test_without_javascript_the_visitor_lands_on_the_thanks_page(client, landing_page, form_id):
    response = post(client, landing_page, form_id, form_body(), accept="text/html")

    assert response.status_code == 302
    assert response["Location"] == landing_page.url + landing_page.reverse_subpage("optin_thanks")
    assert SignUp.objects.count() == 1


def test_a_form_removed_from_the_page_is_refused_with_a_message(client, landing_page):
    response = post(client, landing_page, "00000000-0000-0000-0000-000000000000", form_body())

    assert response.status_code == 400
    assert "no longer exists" in response.json()["message"]
    assert not SignUp.objects.exists()


def test_a_new_revision_of_the_form_is_used_at_once(client, landing_page, form_id):
    post(client, landing_page, form_id, form_body(email="first@lodestone-mail.fi"))
    landing_page.body[1].value["consent_text"] = "New wording."
    landing_page.save_revision().publish()

    post(client, landing_page, form_id, form_body(email="second@lodestone-mail.fi"))

    texts = dict(SignUp.objects.values_list("email", "consent_text"))
    assert texts == {"first@lodestone-mail.fi": CONSENT, "second@lodestone-mail.fi": "New wording."}


def test_a_new_revision_reaches_the_opt_in_endpoint_once_the_trust_window_is_over(
    client, landing_page, form_id, settings
):
    # given a web process that trusts what it read of the page for a while
    settings.FUNNELS_FORM_SPEC_TRUST_SECONDS = 3600
    post(client, landing_page, form_id, form_body(email="first@lodestone-mail.fi"))
    landing_page.body[1].value["consent_text"] = "New wording."
    landing_page.save_revision().publish()

    # when a sign-up arrives within that window, and another after it
    post(client, landing_page, form_id, form_body(email="second@lodestone-mail.fi"))
    settings.FUNNELS_FORM_SPEC_TRUST_SECONDS = 0
    post(client, landing_page, form_id, form_body(email="third@lodestone-mail.fi"))

    # then the first two carry the wording the process knew, the third the new one
    texts = dict(SignUp.objects.values_list("email", "consent_text"))
    assert texts == {
        "first@lodestone-mail.fi": CONSENT,
        "second@lodestone-mail.fi": CONSENT,
        "third@lodestone-mail.fi": "New wording.",
    }


def test_a_signup_whose_magnet_is_gone_fails_visibly_in_the_admin(client, landing_page, form_id):
    post(client, landing_page, form_id, form_body())
    LeadMagnet.objects.all().delete()

    assert process_signups() == ["failed"]

    signup = SignUp.objects.get()
    assert signup.status == SignUp.Status.FAILED
    assert "magnet" in signup.last_error
    assert not Subscriber.objects.exists()
    creator = User.objects.create_superuser("creator@example.com", "a-long pass phrase")
    client.force_login(creator)
    page = client.get(reverse("signups:index") + "?status=failed").content.decode()
    assert "leila@lodestone-mail.fi" in page
    assert "Failed" in page
    assert "magnet of this form was deleted" in page


def test_erasure_removes_the_raw_signups_too(client, landing_page, form_id):
    post(client, landing_page, form_id, form_body())
    process_signups()

    services.subscriber_erase(subscriber=Subscriber.objects.get())

    assert not SignUp.objects.exists()


def test_the_sweep_requeues_only_signups_waiting_too_long(
    landing_page, form_id, published, celery_broker
):
    spec = services.optin_form_specs_of(landing_page)[form_id]
    old, _fresh = (
        stored_signup(spec, email) for email in ("old@lodestone-mail.fi", "fresh@lodestone-mail.fi")
    )
    SignUp.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    assert services.signup_requeue_stale() == 1
    assert published == [(signup_process_task.name, [old.pk])]


@pytest.mark.django_db(transaction=True)
def test_one_address_posted_from_two_tabs_at_once_gets_one_subscriber_and_one_email(magnet):
    page = make_landing_page(magnet, title="Race page")
    form_id = next(iter(page.optin_forms()))
    spec = services.optin_form_specs_of(page)[form_id]
    for _tab in range(2):  # two renders of the page: two distinct submissions
        stored_signup(spec, "racer@lodestone-mail.fi")
    assert SignUp.objects.count() == 2
    ids = list(SignUp.objects.values_list("pk", flat=True))
    barrier = threading.Barrier(2)
    results, errors = [], []

    def process(pk):
        try:
            barrier.wait(timeout=10)
            results.append(services.signup_process(signup_id=pk))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=process, args=(pk,)) for pk in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(results) == ["confirm", "none"]
    assert Subscriber.objects.filter(email="racer@lodestone-mail.fi").count() == 1
    assert ConsentRecord.objects.count() == 2, "both submissions are on the ledger"
    assert OutboundEmail.objects.filter(kind="funnels:confirm").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_live_worker_processes_a_posted_signup_and_a_stranded_one_after_the_sweep(
    magnet, celery_worker, smtp_sink
):
    # given a landing page, and a sign-up stored while the broker was down (never queued)
    page = make_landing_page(magnet, title="Live page")
    form_id = next(iter(page.optin_forms()))
    spec = services.optin_form_specs_of(page)[form_id]
    stranded = stored_signup(spec, "stranded@lodestone-mail.fi")
    # when a visitor posts the form
    response = post(Client(headers={"Origin": "http://testserver"}), page, form_id, form_body())
    assert response.status_code == 200

    # then the worker turns it into a subscriber and sends the confirmation
    wait_until(
        lambda: Subscriber.objects.filter(email="leila@lodestone-mail.fi").exists(),
        timeout=30,
        what="the worker to process the sign-up",
    )
    smtp_sink.wait_for(lambda m: m["To"] == "leila@lodestone-mail.fi")

    # and the stranded one is processed once the sweep finds it (as of 3 minutes later)
    assert services.signup_requeue_stale(now=timezone.now() + timedelta(minutes=3)) == 1
    wait_until(
        lambda: SignUp.objects.get(pk=stranded.pk).status == SignUp.Status.PROCESSED,
        timeout=30,
        what="the worker to process the stranded sign-up",
    )
    smtp_sink.wait_for(lambda m: m["To"] == "stranded@lodestone-mail.fi")


# --- On a shared cache (Redis, as in production): one drain per burst --------------------


@pytest.fixture
def redis_cache(settings):
    """The default cache on the test Redis, as production has it (keys of this test only)."""
    import uuid

    from tests.harness.preflight import TEST_REDIS_URL

    settings.CACHES = {
        "default": {
            "BACKEND": "core.cache.FailOpenRedisCache",
            "LOCATION": TEST_REDIS_URL,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
        }
    }
    from django.core.cache import cache

    yield cache
    cache.delete(services.SIGNUP_WAKE_KEY)


DRAIN = "funnels.tasks_signups.signup_drain_task"


def test_a_burst_of_signups_wakes_one_drain_and_the_drain_processes_them_all(
    client,
    landing_page,
    form_id,
    redis_cache,
    published,
    celery_broker,
    django_capture_on_commit_callbacks,
):
    from funnels.tasks_signups import signup_drain_task

    # given three sign-ups in a row on a site with a shared cache
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(3):
            post(client, landing_page, form_id, form_body(email=f"burst{n}@lodestone-mail.fi"))

    # then one drain went to the broker, not a message per sign-up
    assert published == [(DRAIN, [])]

    # when a worker runs it, every sign-up is processed once
    assert signup_drain_task.apply().get() == 3
    assert set(SignUp.objects.values_list("status", flat=True)) == {SignUp.Status.PROCESSED}
    assert OutboundEmail.objects.count() == 3

    # and a sign-up after the drain started wakes the next one
    with django_capture_on_commit_callbacks(execute=True):
        post(client, landing_page, form_id, form_body(email="later@lodestone-mail.fi"))
    assert published == [(DRAIN, [])] * 2


def test_a_drain_hands_the_next_batch_to_another_worker(
    landing_page, form_id, published, celery_broker, monkeypatch
):
    from funnels.tasks_signups import signup_drain_task

    spec = services.optin_form_specs_of(landing_page)[form_id]
    ids = [stored_signup(spec, f"batch{n}@lodestone-mail.fi").pk for n in range(5)]
    monkeypatch.setattr(services, "SIGNUP_DRAIN_BATCH", 2)

    # when a drain runs: it takes a batch of two and queues the drain of the next batch
    assert signup_drain_task.apply().get() == 2
    assert published == [(DRAIN, [ids[1]])]
    # and that one the next, until a batch is not full
    assert signup_drain_task.apply(args=[ids[1]]).get() == 2
    assert signup_drain_task.apply(args=[ids[3]]).get() == 1
    assert published[-1] == (DRAIN, [ids[3]])

    # then every sign-up was processed exactly once
    assert SignUp.objects.filter(status=SignUp.Status.PROCESSED).count() == 5
    assert OutboundEmail.objects.count() == 5


def test_with_a_shared_cache_the_sweep_queues_one_drain_for_a_whole_backlog(
    landing_page, form_id, redis_cache, published, celery_broker
):
    # given a backlog of sign-ups nothing woke (Redis was down when they were stored)
    spec = services.optin_form_specs_of(landing_page)[form_id]
    for n in range(3):
        stored_signup(spec, f"backlog{n}@lodestone-mail.fi")
    SignUp.objects.update(created_at=timezone.now() - timedelta(minutes=5))

    # when the sweep runs
    covered = services.signup_requeue_stale()

    # then one drain went to the broker for all three, not a task per sign-up
    assert covered == 3
    assert published == [(DRAIN, [0])]


@pytest.mark.django_db(transaction=True)
def test_two_drains_at_once_process_each_signup_once(magnet):
    from funnels.tasks_signups import signup_drain_task

    page = make_landing_page(magnet, title="Two drains")
    form_id = next(iter(page.optin_forms()))
    spec = services.optin_form_specs_of(page)[form_id]
    for n in range(12):
        stored_signup(spec, f"twice{n}@lodestone-mail.fi")
    # when two workers run a drain at the same moment
    counts = run_at_once(*[lambda: signup_drain_task.apply().get()] * 2)

    # then each sign-up was processed once, with one email, whichever drain took it
    assert sum(counts) >= 12
    assert SignUp.objects.filter(status=SignUp.Status.PROCESSED).count() == 12
    emails = list(OutboundEmail.objects.values_list("to", flat=True))
    assert len(emails) == len(set(emails)) == 12


@pytest.mark.django_db(transaction=True)
def test_the_live_worker_drains_a_posted_signup_through_the_wake(
    magnet, celery_worker, smtp_sink, redis_cache
):
    # given a site with a shared cache: the opt-in wakes a drain instead of a task per sign-up
    page = make_landing_page(magnet, title="Wake page")
    form_id = next(iter(page.optin_forms()))

    # when a visitor posts the form
    response = post(
        Client(headers={"Origin": "http://testserver"}),
        page,
        form_id,
        form_body(email="woken@lodestone-mail.fi"),
    )
    assert response.status_code == 200
    assert redis_cache.get(services.SIGNUP_WAKE_KEY) is not None

    # then the worker's drain turns it into a subscriber and sends the confirmation
    wait_until(
        lambda: Subscriber.objects.filter(email="woken@lodestone-mail.fi").exists(),
        timeout=30,
        what="the worker's drain to process the sign-up",
    )
    smtp_sink.wait_for(lambda m: m["To"] == "woken@lodestone-mail.fi")
    assert SignUp.objects.get().status == SignUp.Status.PROCESSED
