"""A creator's admin edit of a subscriber (name, tags) reaches Mailchimp even when the broker
is down as it commits: the edit marks the row (``audience_changed_at``) in its own
transaction, the beat sweep queues the sync of marked rows, and only the sync that sent the
row as it stood with that mark clears it.
"""

import logging
import threading
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from config.celery_app import app
from funnels import audience
from funnels.models import Subscriber
from funnels.tasks import audience_requeue_stale, audience_sync_batch, audience_sync_subscriber
from tests.funnels.test_audience_sweep import list_id, mailchimp_worker  # noqa: F401
from tests.harness.celery_worker import broker_unreachable
from tests.harness.waiting import wait_until
from tests.mailchimp_standin import subscriber_hash

pytest_plugins = ["tests.mailchimp_standin.fixtures"]

SARA = "sara.ahmadi@lodestone-mail.fi"
OTTO = "otto.lehto@lodestone-mail.fi"
NOT_QUEUED = "Could not queue funnels.tasks.audience_sync_subscriber"


@pytest.fixture
def creator_client(client):
    creator = User.objects.create_superuser("creator@example.com", "a-long pass phrase")
    client.force_login(creator)
    return client


def synced_subscriber(email: str = SARA, *, status=Subscriber.Status.CONFIRMED) -> Subscriber:
    """A subscriber Mailchimp heard of yesterday."""
    yesterday = timezone.now() - timedelta(days=1)
    return Subscriber.objects.create(
        email=email,
        name="Sara Ahmadi",
        time_zone="Europe/Helsinki",
        status=status,
        confirmed_at=yesterday if status != Subscriber.Status.PENDING else None,
        audience_synced_at=yesterday,
    )


def admin_edit(creator_client, subscriber: Subscriber, *, name: str, tags: str = ""):
    response = creator_client.post(
        reverse("subscribers:edit", args=[subscriber.pk]),
        {"name": name, "time_zone": subscriber.time_zone, "tags": tags},
    )
    assert response.status_code == 302, response.content[:500]


def sweep_time() -> datetime:
    """When the sweep looks again: the edit's own task has had its chance by then."""
    return timezone.now() + audience.SYNC_STALE_AFTER + timedelta(seconds=1)


# --- Through the beat sweep and a real worker --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_admin_edit_committed_while_the_broker_is_down_reaches_mailchimp_once_through_the_sweep(
    mailchimp, list_id, mailchimp_worker, creator_client, caplog
):
    # given a synced subscriber, edited in the admin while Redis is down
    sara = synced_subscriber()
    mailchimp.add_member(list_id, SARA, merge_fields={"FNAME": "Sara", "LNAME": "Ahmadi"})
    with broker_unreachable(app), caplog.at_level(logging.WARNING, logger="core.celery_task"):
        admin_edit(creator_client, sara, name="Sara Virtanen", tags="vip, launch")
    assert caplog.text.count(NOT_QUEUED) == 1
    assert mailchimp.requests == []
    # a sweep right away leaves it to the on-commit task (it may still be on its way)
    assert audience_requeue_stale.apply().get() == 0

    # when the sweep runs a few minutes later, with the broker back
    Subscriber.objects.filter(pk=sara.pk).update(
        audience_changed_at=F("audience_changed_at") - timedelta(minutes=3)
    )
    queued = audience_requeue_stale.apply().get()

    # then the worker sends the edit, once, and the row is no longer due
    assert queued == 1
    wait_until(
        lambda: Subscriber.objects.filter(pk=sara.pk, audience_changed_at__isnull=True).exists(),
        timeout=30,
        what="the worker to sync the edited subscriber",
    )
    member = mailchimp.member(list_id, SARA)
    assert member["merge_fields"]["FNAME"] == "Sara"
    assert member["merge_fields"]["LNAME"] == "Virtanen"
    assert sorted(tag["name"] for tag in member["tags"]) == ["launch", "vip"]
    assert len(mailchimp.requests_to("PUT", subscriber_hash(SARA))) == 1
    sara.refresh_from_db()
    assert sara.audience_synced_at > timezone.now() - timedelta(minutes=1)
    assert audience_requeue_stale.apply().get() == 0, "nothing is due twice"


# --- A sync racing an edit ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_on_its_way_while_an_edit_commits_leaves_the_row_due(
    mailchimp, list_id, creator_client
):
    # given a sync whose upsert Mailchimp holds while the creator edits the subscriber
    sara = synced_subscriber()
    synced_before = sara.audience_synced_at
    mailchimp.hang_next(3, method="PUT")
    results = []

    def sync():
        try:
            results.append(audience_sync_subscriber.apply(args=[sara.pk]).get())
        finally:
            connection.close()

    worker = threading.Thread(target=sync)
    worker.start()
    mailchimp.wait_for_requests(1, method="PUT", answered=False)

    # when the edit commits (its own publish failing) before the sync finishes
    with broker_unreachable(app):
        admin_edit(creator_client, sara, name="Sara Virtanen")
    worker.join(timeout=30)

    # then the sync sent the old name and does not take the edit for sent
    assert results == ["superseded"]
    assert mailchimp.member(list_id, SARA)["merge_fields"]["LNAME"] == "Ahmadi"
    sara.refresh_from_db()
    assert sara.audience_changed_at is not None
    assert sara.audience_synced_at == synced_before
    assert audience.subscribers_sync_due(now=sweep_time()) == [sara.pk]
    # and the sync the sweep queues sends the edit
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"
    assert mailchimp.member(list_id, SARA)["merge_fields"]["LNAME"] == "Virtanen"
    assert audience.subscribers_sync_due(now=sweep_time()) == []


@pytest.mark.django_db
def test_batch_sync_clears_the_marks_it_sent_and_keeps_an_edit_made_meanwhile(mailchimp, list_id):
    sara, otto = synced_subscriber(SARA), synced_subscriber(OTTO)
    audience.subscribers_mark_changed(subscriber_ids=[sara.pk, otto.pk])
    sent = list(Subscriber.objects.filter(pk__in=[sara.pk, otto.pk]))
    # Otto is edited again after the batch read him
    audience.subscribers_mark_changed(subscriber_ids=[otto.pk])

    assert audience.subscribers_mark_synced(subscribers=sent) == 1

    assert audience.subscribers_sync_due(now=sweep_time()) == [otto.pk]
    # the batch task reads its rows afresh: it clears both
    assert audience_sync_batch.apply(args=[[sara.pk, otto.pk]]).get() != "failed"
    assert audience.subscribers_sync_due(now=sweep_time()) == []


# --- What the sweep picks up, and what it leaves ------------------------------------------------


@pytest.mark.django_db
def test_edit_synced_by_its_own_task_is_not_due_for_the_sweep(
    mailchimp, list_id, creator_client, django_capture_on_commit_callbacks
):
    sara = synced_subscriber()

    with django_capture_on_commit_callbacks(execute=False):
        admin_edit(creator_client, sara, name="Sara Virtanen")
    assert audience.subscribers_sync_due(now=sweep_time()) == [sara.pk]
    # the task queued on commit runs (here in-process)
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"

    assert audience.subscribers_sync_due(now=sweep_time()) == []
    assert len(mailchimp.requests_to("PUT", subscriber_hash(SARA))) == 1


@pytest.mark.django_db
def test_edit_after_a_failed_sync_clears_the_error_and_is_due_again(creator_client, list_id):
    sara = synced_subscriber()
    Subscriber.objects.filter(pk=sara.pk).update(audience_sync_error="Mailchimp 400: Bad name")
    assert audience.subscribers_sync_due(now=sweep_time()) == []

    admin_edit(creator_client, sara, name="Sara Virtanen")

    sara.refresh_from_db()
    assert sara.audience_sync_error == ""
    assert audience.subscribers_sync_due(now=sweep_time()) == [sara.pk]


@pytest.mark.django_db
def test_sweep_leaves_edits_of_pending_and_long_ago_and_failing_subscribers_alone(
    creator_client, list_id
):
    pending = synced_subscriber("pending@lodestone-mail.fi", status=Subscriber.Status.PENDING)
    old = synced_subscriber("old@lodestone-mail.fi")
    failing = synced_subscriber("failing@lodestone-mail.fi")
    for subscriber in (pending, old, failing):
        admin_edit(creator_client, subscriber, name="Someone Else")
    Subscriber.objects.filter(pk=old.pk).update(
        audience_changed_at=timezone.now() - audience.SYNC_SWEEP_WINDOW - timedelta(hours=1)
    )
    # its sync failed for good after the edit: the error is for the creator, not retried
    Subscriber.objects.filter(pk=failing.pk).update(audience_sync_error="Mailchimp 400: no")

    assert audience.subscribers_sync_due(now=sweep_time()) == []


@pytest.mark.django_db
def test_admin_edit_of_a_pending_subscriber_waits_for_the_confirmation_to_reach_mailchimp(
    mailchimp, list_id, creator_client, django_capture_on_commit_callbacks
):
    # Upserted as "pending", Mailchimp would send its own confirmation email beside ours.
    sara = synced_subscriber(status=Subscriber.Status.PENDING)

    with django_capture_on_commit_callbacks(execute=True):
        admin_edit(creator_client, sara, name="Sara Virtanen", tags="vip")

    assert mailchimp.requests == []
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "pending"
    assert audience_sync_batch.apply(args=[[sara.pk]]).get() == "empty"
    assert mailchimp.requests == []
    # confirmed, the subscriber goes over with the edit
    Subscriber.objects.filter(pk=sara.pk).update(
        status=Subscriber.Status.CONFIRMED, confirmed_at=timezone.now()
    )
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"
    member = mailchimp.member(list_id, SARA)
    assert member["status"] == "subscribed"
    assert member["merge_fields"]["FNAME"] == "Sara"
    assert member["merge_fields"]["LNAME"] == "Virtanen"
