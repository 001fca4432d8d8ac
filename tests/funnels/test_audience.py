"""Mailchimp audience sync against the stand-in (tests/mailchimp_standin): the official
client talks HTTP to a real server on loopback.

Tasks run in-process with `task.apply()`. In that mode Celery runs a `self.retry` at once,
in the same call (no countdown, no broker), so injected failures followed by success play
out within one test.
"""

import functools
import hashlib
import io
import re
import socket

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.utils import timezone
from wagtail.models import Page

from config.celery_app import app as celery_app
from core.models import OutboundEmail
from funnels import audience, services
from funnels.models import ConsentRecord, LandingPage, LeadMagnet, Subscriber
from funnels.tasks import audience_forget, audience_sync_batch, audience_sync_subscriber
from tests.mailchimp_standin import subscriber_hash as standin_subscriber_hash

pytest_plugins = ["tests.mailchimp_standin.fixtures"]

SARA = "sara.ahmadi@lodestone-mail.fi"


@pytest.fixture
def list_id(mailchimp, settings) -> str:
    """Mailchimp switched on and pointed at the stand-in, with an empty audience."""
    list_id = mailchimp.create_audience("Lodestone", merge_fields=["FNAME", "LNAME"])
    for name, value in mailchimp.settings().items():
        setattr(settings, name, value)
    settings.MAILCHIMP_AUDIENCE_ID = list_id
    return list_id


def confirmed_subscriber(email: str = SARA, name: str = "سارا احمدی", tags=()) -> Subscriber:
    subscriber = Subscriber.objects.create(
        email=email,
        name=name,
        time_zone="Europe/Helsinki",
        status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now(),
    )
    if tags:
        subscriber.tags.add(*tags)
        subscriber.save()
    return subscriber


def run_queued(callbacks, task) -> list:
    """Run, in-process, each call to `task` that a transaction queued with delay_on_commit."""
    calls = [
        cb
        for cb in callbacks
        if isinstance(cb, functools.partial)
        and getattr(getattr(cb.func, "__self__", None), "name", None) == task.name
    ]
    # OutboxTask queues partial(_publish_or_log, args, kwargs): the task's own arguments.
    return [task.apply(args=cb.args[0], kwargs=cb.args[1]).get() for cb in calls]


# --- Addressing members ---------------------------------------------------------------------


def test_subscriber_hash_is_md5_of_the_lowercased_email():
    email = "Sara.Ahmadi@Lodestone-Mail.FI"

    assert (
        audience.subscriber_hash(email) == hashlib.md5(b"sara.ahmadi@lodestone-mail.fi").hexdigest()
    )
    assert audience.subscriber_hash(email) == audience.subscriber_hash(email.lower())
    assert audience.subscriber_hash(email) == standin_subscriber_hash(email)


@pytest.mark.django_db
def test_member_is_addressed_by_the_lowercased_hash_even_when_the_stored_email_has_capitals(
    mailchimp, list_id
):
    # Subscriber emails are normalised by the services; this row bypasses them on purpose.
    subscriber = confirmed_subscriber(email="Sara.Ahmadi@Lodestone-Mail.fi")

    result = audience_sync_subscriber.apply(args=[subscriber.pk]).get()

    assert result == "synced"
    [put] = mailchimp.requests_to("PUT", r"/members/")
    assert put.api_path == f"/lists/{list_id}/members/{hashlib.md5(SARA.encode()).hexdigest()}"
    assert mailchimp.member(list_id, SARA)["status"] == "subscribed"


# --- One subscriber at a time ----------------------------------------------------------------


@pytest.mark.django_db
def test_confirmed_subscriber_is_upserted_as_subscribed_with_names_and_tags(mailchimp, list_id):
    subscriber = confirmed_subscriber(name="سارا احمدی", tags=["launch", "checklist"])

    result = audience_sync_subscriber.apply(args=[subscriber.pk]).get()

    assert result == "synced"
    member = mailchimp.member(list_id, SARA)
    assert member["status"] == "subscribed"
    assert member["merge_fields"]["FNAME"] == "سارا"
    assert member["merge_fields"]["LNAME"] == "احمدی"
    assert sorted(tag["name"] for tag in member["tags"]) == ["checklist", "launch"]
    subscriber.refresh_from_db()
    assert subscriber.audience_synced_at is not None
    assert subscriber.audience_sync_error == ""


@pytest.mark.django_db
def test_unsubscribe_turns_the_mailchimp_member_unsubscribed(
    mailchimp, list_id, django_capture_on_commit_callbacks
):
    subscriber = confirmed_subscriber()
    mailchimp.add_member(list_id, SARA, status="subscribed")

    with django_capture_on_commit_callbacks() as callbacks:
        left = services.subscriber_unsubscribe(
            subscriber=subscriber, visitor=services.Visitor(), source="email link"
        )

    assert left is True
    assert run_queued(callbacks, audience_sync_subscriber) == ["synced"]
    assert mailchimp.member(list_id, SARA)["status"] == "unsubscribed"


@pytest.mark.django_db
def test_erasure_deletes_the_mailchimp_member_permanently(
    mailchimp, list_id, django_capture_on_commit_callbacks
):
    subscriber = confirmed_subscriber()
    mailchimp.add_member(list_id, SARA, status="subscribed")

    with django_capture_on_commit_callbacks() as callbacks:
        services.subscriber_erase(subscriber=subscriber)

    assert run_queued(callbacks, audience_forget) == ["forgotten"]
    assert mailchimp.requests_to("POST", r"/members/[0-9a-f]{32}/actions/delete-permanent$")
    assert mailchimp.was_permanently_deleted(list_id, SARA)


@pytest.mark.django_db
def test_forgetting_a_member_mailchimp_never_had_succeeds(mailchimp, list_id):
    assert audience_forget.apply(args=[SARA]).get() == "forgotten"


# --- Failures ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_server_error_then_rate_limit_are_retried_until_the_member_is_synced(mailchimp, list_id):
    subscriber = confirmed_subscriber()
    Subscriber.objects.filter(pk=subscriber.pk).update(audience_sync_error="Mailchimp 503: old")
    mailchimp.fail_next(500)
    mailchimp.fail_next(429)

    result = audience_sync_subscriber.apply(args=[subscriber.pk]).get()

    assert result == "synced"
    assert [r.status for r in mailchimp.requests_to("PUT", r"/members/")] == [500, 429, 200]
    assert mailchimp.member(list_id, SARA)["status"] == "subscribed"
    subscriber.refresh_from_db()
    assert subscriber.audience_synced_at is not None
    assert subscriber.audience_sync_error == ""


@pytest.mark.django_db
def test_permanent_refusal_is_not_retried_and_is_stored_for_the_creator(mailchimp, list_id):
    # Mailchimp refuses addresses it takes for fake with a 400; asking again cannot help.
    subscriber = confirmed_subscriber(email="someone@example.com", name="Some One")

    result = audience_sync_subscriber.apply(args=[subscriber.pk]).get()

    assert result == "failed"
    assert len(mailchimp.requests_to("PUT", r"/members/")) == 1
    subscriber.refresh_from_db()
    assert subscriber.audience_synced_at is None
    assert "400" in subscriber.audience_sync_error
    assert "looks fake or invalid" in subscriber.audience_sync_error


@pytest.mark.django_db
def test_injected_bad_request_is_not_retried(mailchimp, list_id):
    subscriber = confirmed_subscriber()
    mailchimp.fail_next(400, times=5)

    with pytest.raises(audience.AudienceError) as caught:
        audience.member_upsert(subscriber)

    assert caught.value.status == 400
    assert caught.value.retryable is False
    assert audience_sync_subscriber.apply(args=[subscriber.pk]).get() == "failed"
    assert len(mailchimp.requests_to("PUT", r"/members/")) == 2  # one each, no retry


@pytest.mark.django_db
def test_mailchimp_hanging_past_the_client_timeout_is_a_retryable_error(
    mailchimp, list_id, settings
):
    # audience.client() hard-codes a 15 s timeout; this setting is for when it honours one.
    settings.MAILCHIMP_TIMEOUT = 1
    timeout = audience.client().api_client.timeout
    subscriber = confirmed_subscriber()
    mailchimp.hang_next(timeout + 1, method="PUT")

    try:
        with pytest.raises(audience.AudienceError) as caught:
            audience.member_upsert(subscriber)
    finally:
        # Let the held request finish before the stand-in is reset for the next test.
        mailchimp.wait_for_requests(1, method="PUT", timeout=timeout + 5)

    assert caught.value.status is None
    assert caught.value.retryable is True
    assert "unreachable" in str(caught.value)


@pytest.mark.django_db
def test_unreachable_mailchimp_is_a_retryable_error(list_id, settings):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.MAILCHIMP_API_HOST = f"http://127.0.0.1:{port}/3.0"
    subscriber = confirmed_subscriber()

    with pytest.raises(audience.AudienceError) as caught:
        audience.member_upsert(subscriber)

    assert caught.value.status is None
    assert caught.value.retryable is True
    assert "unreachable" in str(caught.value)


@pytest.mark.django_db
def test_sync_is_disabled_when_mailchimp_is_not_configured(mailchimp, settings):
    settings.MAILCHIMP_API_HOST = mailchimp.url  # any request would reach the stand-in's log
    settings.MAILCHIMP_API_KEY = ""
    settings.MAILCHIMP_AUDIENCE_ID = ""
    subscriber = confirmed_subscriber()

    assert audience_sync_subscriber.apply(args=[subscriber.pk]).get() == "disabled"
    assert audience_forget.apply(args=[SARA]).get() == "disabled"
    assert audience_sync_batch.apply(args=[[subscriber.pk]]).get() == "disabled"
    assert mailchimp.requests == []


# --- Sign-up never waits for Mailchimp -------------------------------------------------------


@pytest.fixture
def protected_storage(settings, tmp_path, monkeypatch):
    settings.STORAGES = {
        **settings.STORAGES,
        "protected": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "protected"), "base_url": None},
        },
    }
    storage = storages["protected"]
    # FileField calls its storage callable once, when the model class is built, so the
    # override above alone would still write the magnet under var/protected.
    monkeypatch.setattr(LeadMagnet._meta.get_field("file"), "storage", storage)
    return storage


@pytest.fixture
def signup_page(protected_storage) -> LandingPage:
    magnet = LeadMagnet(title="Launch Checklist", download_filename="launch-checklist.pdf")
    magnet.file.save("launch-checklist.pdf", ContentFile(b"%PDF-1.4\n%%EOF\n"), save=False)
    magnet.save()
    page = LandingPage(
        title="Free launch checklist",
        slug="free-launch-checklist",
        body=[
            (
                "optin_form",
                {
                    "heading": "Get the checklist",
                    "magnet": magnet,
                    "consent_text": "Send me the checklist and occasional emails.",
                    "double_opt_in": True,
                    "tags": "checklist",
                },
            )
        ],
    )
    Page.get_first_root_node().add_child(instance=page)
    page.save_revision().publish()
    return LandingPage.objects.get(pk=page.pk)


@pytest.mark.django_db
def test_signup_and_confirmation_succeed_while_mailchimp_fails_every_request(
    mailchimp, list_id, signup_page, django_capture_on_commit_callbacks
):
    mailchimp.fail_next(500, times=1000)
    form_id = next(iter(signup_page.optin_forms()))

    with django_capture_on_commit_callbacks() as signup_callbacks:
        outcome = services.optin_submit(
            landing_page=signup_page,
            form_id=form_id,
            email="Sara.Ahmadi@Lodestone-Mail.fi",
            name="سارا احمدی",
            consent=True,
            visitor=services.Visitor(ip_address="198.51.100.7", time_zone="Asia/Tehran"),
            attribution=services.Attribution(utm_source="newsletter"),
        )
    confirm_email = OutboundEmail.objects.get(to=SARA, kind="funnels:confirm")
    token = re.search(r"/confirm/([^/\s\"']+)/", confirm_email.text_body).group(1)
    with django_capture_on_commit_callbacks() as confirm_callbacks:
        confirmation = services.subscriber_confirm(token=token, visitor=services.Visitor())

    assert outcome.emails == ["confirm"]
    assert confirmation.subscriber.status == Subscriber.Status.CONFIRMED
    assert mailchimp.requests == []  # nothing in the visitor's request talks to Mailchimp
    assert run_queued(signup_callbacks, audience_sync_subscriber) == []
    assert run_queued(confirm_callbacks, audience_sync_subscriber) == ["failed"]
    subscriber = Subscriber.objects.get(email=SARA)
    assert subscriber.status == Subscriber.Status.CONFIRMED
    assert set(subscriber.consents.values_list("action", flat=True)) == {
        ConsentRecord.Action.GRANTED,
        ConsentRecord.Action.CONFIRMED,
    }
    assert subscriber.audience_synced_at is None
    assert subscriber.audience_sync_error.startswith("Mailchimp 500")
    # Retried up to the task's cap, then given up on.
    attempts = mailchimp.requests_to("PUT", r"/members/")
    assert len(attempts) == audience_sync_subscriber.max_retries + 1
    assert {r.status for r in attempts} == {500}


@pytest.mark.django_db
def test_batch_sync_reads_tags_without_a_query_per_subscriber(
    mailchimp, list_id, django_assert_num_queries
):
    confirmed = subscribers_in_every_status()
    for subscriber in confirmed:
        subscriber.tags.add("reader")
        subscriber.save()

    # The subscribers, their tag links and the tags (prefetched), then one UPDATE.
    with django_assert_num_queries(4):
        batch_id = audience_sync_batch.apply(args=[[s.pk for s in confirmed]]).get()

    assert mailchimp.batch(batch_id)["errored_operations"] == 0
    assert len(mailchimp.members(list_id)) == 5


# --- manage.py audience_sync ----------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def subscribers_in_every_status() -> list[Subscriber]:
    confirmed = [
        confirmed_subscriber(email=f"reader{n}@lodestone-mail.fi", name=f"Reader {n}")
        for n in range(5)
    ]
    confirmed[0].tags.add("launch")
    confirmed[0].save()
    Subscriber.objects.create(
        email="waiting@lodestone-mail.fi", time_zone="UTC", status=Subscriber.Status.PENDING
    )
    Subscriber.objects.create(
        email="gone@lodestone-mail.fi", time_zone="UTC", status=Subscriber.Status.UNSUBSCRIBED
    )
    return confirmed


@pytest.mark.django_db
def test_audience_sync_sends_one_batch_per_chunk(mailchimp, list_id):
    confirmed = subscribers_in_every_status()
    out, err = io.StringIO(), io.StringIO()

    call_command("audience_sync", "--batch-size", "2", stdout=out, stderr=err)

    batches = mailchimp.requests_to("POST", r"/batches$")
    assert len(batches) == 3
    assert [len({op["path"].split("/")[4] for op in b.json["operations"]}) for b in batches] == [
        2,
        2,
        1,
    ]
    members = {m["email_address"]: m for m in mailchimp.members(list_id)}
    assert set(members) == {s.email for s in confirmed}
    assert {m["status"] for m in members.values()} == {"subscribed"}
    assert members["reader0@lodestone-mail.fi"]["merge_fields"]["LNAME"] == "0"
    assert [t["name"] for t in members["reader0@lodestone-mail.fi"]["tags"]] == ["launch"]
    assert "Sent 5 confirmed subscriber(s) to Mailchimp in 3 batch(es)." in out.getvalue()
    for batch in batches:
        assert batch.response["id"] in out.getvalue()
    assert "5/5 (100%)" in err.getvalue()
    assert not Subscriber.objects.filter(
        status=Subscriber.Status.CONFIRMED, audience_synced_at=None
    ).exists()


@pytest.mark.django_db
def test_audience_sync_draws_a_carriage_return_progress_bar_on_a_terminal(mailchimp, list_id):
    subscribers_in_every_status()
    err = Terminal()

    call_command("audience_sync", "--batch-size", "2", stdout=io.StringIO(), stderr=err)

    assert err.getvalue().count("\r") == 4  # 0, 2, 4 and 5 of 5
    assert "] 5/5 (100%)\n" in err.getvalue()


@pytest.mark.django_db
def test_audience_sync_sends_the_chosen_status(mailchimp, list_id):
    subscribers_in_every_status()

    call_command(
        "audience_sync", "--status", "unsubscribed", stdout=io.StringIO(), stderr=io.StringIO()
    )

    [member] = mailchimp.members(list_id)
    assert member["email_address"] == "gone@lodestone-mail.fi"
    assert member["status"] == "unsubscribed"


def test_audience_sync_never_sends_pending_subscribers():
    with pytest.raises(CommandError, match="invalid choice: 'pending'"):
        call_command("audience_sync", "--status", "pending")


@pytest.mark.django_db
def test_audience_sync_dry_run_counts_and_sends_nothing(mailchimp, list_id):
    subscribers_in_every_status()
    out = io.StringIO()

    call_command("audience_sync", "--dry-run", "--batch-size", "2", stdout=out)

    assert "5 confirmed subscriber(s) would go to Mailchimp in 3 batch(es)" in out.getvalue()
    assert mailchimp.requests == []


@pytest.mark.django_db
def test_audience_sync_explains_that_mailchimp_is_not_configured(mailchimp, settings):
    settings.MAILCHIMP_API_HOST = mailchimp.url
    settings.MAILCHIMP_API_KEY = ""
    subscribers_in_every_status()

    with pytest.raises(CommandError, match="Mailchimp is not configured"):
        call_command("audience_sync", stdout=io.StringIO(), stderr=io.StringIO())
    assert mailchimp.requests == []


@pytest.mark.django_db
def test_audience_sync_stops_at_a_refused_batch_and_says_how_far_it_got(mailchimp, list_id):
    confirmed = subscribers_in_every_status()
    mailchimp.fail_next(503, path=r"/batches$")

    with pytest.raises(CommandError, match=r"(?s)Stopped after 0 of 5 .*Mailchimp 503.*temporary"):
        call_command(
            "audience_sync", "--batch-size", "2", stdout=io.StringIO(), stderr=io.StringIO()
        )

    assert len(mailchimp.requests_to("POST", r"/batches$")) == 1
    first_chunk = Subscriber.objects.filter(pk__in=[s.pk for s in confirmed[:2]])
    assert all(s.audience_sync_error.startswith("Mailchimp 503") for s in first_chunk)


@pytest.mark.django_db
def test_audience_sync_queue_hands_each_chunk_to_the_batch_task(mailchimp, list_id, monkeypatch):
    subscribers_in_every_status()
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)  # the "worker" is us
    out = io.StringIO()

    call_command("audience_sync", "--queue", "--batch-size", "2", stdout=out, stderr=io.StringIO())

    assert "Queued 5 confirmed subscriber(s) in 3 batch task(s)." in out.getvalue()
    assert len(mailchimp.requests_to("POST", r"/batches$")) == 3
    assert len(mailchimp.members(list_id)) == 5
