"""Mailchimp syncs committed while the broker (Redis) is down: the confirmation or
unsubscription is stored and the visitor answered; the publish of the sync is only logged.
The beat sweep (funnels.tasks.audience_requeue_stale) finds what Mailchimp never heard of
and queues it once the broker is back; a real worker then syncs each member once.
"""

import logging
import uuid
from datetime import timedelta

import pytest
from django.db.models import F, Q
from django.utils import timezone

from config.celery_app import app
from funnels import services
from funnels.models import Subscriber
from funnels.tasks import audience_requeue_stale
from tests.harness.celery_worker import (
    Broker,
    app_publishing_to,
    broker_unreachable,
    celery_worker_running,
)
from tests.harness.waiting import wait_until
from tests.mailchimp_standin import subscriber_hash

pytest_plugins = ["tests.mailchimp_standin.fixtures"]

pytestmark = pytest.mark.django_db(transaction=True)

SARA = "sara.ahmadi@lodestone-mail.fi"
OTTO = "otto.lehto@lodestone-mail.fi"


@pytest.fixture
def list_id(mailchimp, settings) -> str:
    list_id = mailchimp.create_audience("Lodestone", merge_fields=["FNAME", "LNAME"])
    for name, value in mailchimp.settings().items():
        setattr(settings, name, value)
    settings.MAILCHIMP_AUDIENCE_ID = list_id
    return list_id


@pytest.fixture
def mailchimp_worker(celery_broker, django_server_env, harness_log_dir, mailchimp, list_id):
    """A worker on a queue of its own whose Mailchimp settings point at the stand-in; the
    in-process app publishes to that queue while the fixture lasts."""
    broker = Broker(url=celery_broker.url, queue=f"audience-{uuid.uuid4().hex[:10]}")
    env = {**django_server_env, **mailchimp.settings(), "MAILCHIMP_AUDIENCE_ID": list_id}
    with (
        celery_worker_running(
            app=app,
            broker=broker,
            env={**env, "CELERY_TASK_DEFAULT_QUEUE": broker.queue},
            log_path=harness_log_dir / f"celery-audience-{broker.queue}.log",
        ) as worker,
        app_publishing_to(app, broker),
    ):
        yield worker


def subscriber(email: str, status=Subscriber.Status.PENDING, **fields) -> Subscriber:
    return Subscriber.objects.create(
        email=email, name="Test Person", time_zone="Europe/Helsinki", status=status, **fields
    )


def the_outage_was_minutes_ago():
    """As if the sweep ran a few minutes after the outage (the changes are that old)."""
    ago = timedelta(minutes=3)
    Subscriber.objects.filter(confirmed_at__isnull=False).update(
        confirmed_at=F("confirmed_at") - ago
    )
    Subscriber.objects.filter(unsubscribed_at__isnull=False).update(
        unsubscribed_at=F("unsubscribed_at") - ago
    )


def test_changes_committed_while_the_broker_is_down_reach_mailchimp_once_through_the_sweep(
    mailchimp, list_id, mailchimp_worker, caplog
):
    # given a confirmation and an unsubscription committed while Redis is down
    sara = subscriber(SARA)
    token = services.confirm_token_issue(subscriber=sara, landing_page=None, magnet=None)
    otto = subscriber(
        OTTO,
        status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now() - timedelta(days=1),
        audience_synced_at=timezone.now() - timedelta(days=1),
    )
    with broker_unreachable(app), caplog.at_level(logging.WARNING, logger="core.celery_task"):
        services.subscriber_confirm(token=token, visitor=services.Visitor())
        services.subscriber_unsubscribe(
            subscriber=otto, visitor=services.Visitor(), source="email link"
        )
    assert caplog.text.count("Could not queue funnels.tasks.audience_sync_subscriber") == 2
    assert mailchimp.requests == []
    # a sweep right away leaves them to the on-commit task (it may still be on its way)
    assert audience_requeue_stale.apply().get() == 0

    # when the sweep runs with the broker back
    the_outage_was_minutes_ago()
    queued = audience_requeue_stale.apply().get()

    # then the worker syncs each member, once
    assert queued == 2
    synced = Q(email=SARA, audience_synced_at__gt=F("confirmed_at")) | Q(
        email=OTTO, audience_synced_at__gt=F("unsubscribed_at")
    )
    wait_until(
        lambda: Subscriber.objects.filter(synced).count() == 2,
        timeout=30,
        what="the worker to sync both subscribers",
    )
    assert mailchimp.member(list_id, SARA)["status"] == "subscribed"
    assert mailchimp.member(list_id, OTTO)["status"] == "unsubscribed"
    for email in (SARA, OTTO):
        assert len(mailchimp.requests_to("PUT", subscriber_hash(email))) == 1
    assert audience_requeue_stale.apply().get() == 0, "nothing is due twice"


def test_the_sweep_leaves_failed_old_and_pending_subscribers_alone(mailchimp, list_id):
    long_ago = timezone.now() - timedelta(days=10)
    subscriber("pending@lodestone-mail.fi")
    subscriber(
        "failed@lodestone-mail.fi",
        status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now() - timedelta(hours=1),
        audience_sync_error="Mailchimp 400: Invalid Resource",
    )
    subscriber(
        "backfill@lodestone-mail.fi", status=Subscriber.Status.CONFIRMED, confirmed_at=long_ago
    )
    subscriber(
        "synced@lodestone-mail.fi",
        status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now() - timedelta(hours=1),
        audience_synced_at=timezone.now() - timedelta(minutes=30),
    )

    assert audience_requeue_stale.apply().get() == 0


def test_the_sweep_does_nothing_while_mailchimp_is_switched_off(settings):
    settings.MAILCHIMP_API_KEY = ""
    subscriber(
        SARA, status=Subscriber.Status.CONFIRMED, confirmed_at=timezone.now() - timedelta(hours=1)
    )

    assert audience_requeue_stale.apply().get() == 0
