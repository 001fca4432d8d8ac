"""Leaving a sequence from outside: the email provider's bounce, complaint and inbound
webhooks (Postmark payloads through django-anymail), and a real purchase through the
Stripe stand-in."""

import base64
import json
import re
from urllib.parse import unquote

import pytest
from django.test import Client

from funnels import services as funnel_services
from funnels.models import DripDelivery, Enrolment, SequenceStep, Subscriber
from funnels.sequences import services
from funnels.sequences.selectors import step_figures
from tests.payments.conftest import (  # noqa: F401 (fixtures, by name)
    _tasks_publish_to_the_test_broker,
    buy,
    make_offer,
    sx,
    webhook,
)
from tests.stripe_standin.fixtures import stripe_standin  # noqa: F401

from .test_sequences_support import at, brand_install, confirmed, make_sequence, run_due, sent_to

pytestmark = pytest.mark.django_db

TRACKING = "/f/esp/postmark/tracking/"
INBOUND = "/f/esp/postmark/inbound/"
SECRET = "postmark:s3cret-webhook-pass"
SUBJECTS = ("Welcome, Leila", "The one mistake", "Doors are open")


@pytest.fixture(autouse=True)
def _site(landing_page, settings):
    settings.SITE_URL = "https://northwind.example"
    settings.DRIP_WARMUP_PER_HOUR = 0
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    brand_install()


def post(path, payload, *, auth=SECRET):
    extra = {}
    if auth:
        extra["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return Client().post(path, json.dumps(payload), content_type="application/json", **extra)


def bounce(email, kind="HardBounce", type_code=1):
    # Postmark's bounce webhook, as its documentation shows it.
    return {
        "RecordType": "Bounce",
        "MessageStream": "broadcast",
        "ID": 4323372036854775807,
        "Type": kind,
        "TypeCode": type_code,
        "Name": "Hard bounce" if kind == "HardBounce" else "Soft bounce",
        "Tag": "",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"delivery": "1"},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email,
        "From": "maya@northwind.example",
        "BouncedAt": "2026-03-02T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": kind == "HardBounce",
        "CanActivate": True,
        "Subject": "Welcome, Leila",
    }


def complaint(email):
    return {
        "RecordType": "SpamComplaint",
        "MessageStream": "broadcast",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "",
        "MessageID": "00000000-0000-0000-0000-000000000000",
        "Metadata": {},
        "ServerID": 1234,
        "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details",
        "Email": email,
        "From": "maya@northwind.example",
        "BouncedAt": "2026-03-02T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "Doors are open",
    }


def enrolled(email="leila@lodestone-mail.fi"):
    sequence = make_sequence()
    subscriber = confirmed(email)
    services.enrolment_start(
        sequence=sequence, subscriber=subscriber, source="admin", now=at("2026-03-02 10:00")
    )
    return sequence, subscriber


def test_a_hard_bounce_webhook_suppresses_the_address_and_ends_its_sequences():
    _sequence, leila = enrolled()

    response = post(TRACKING, bounce("Leila@Lodestone-Mail.fi"))

    assert response.status_code == 200
    leila.refresh_from_db()
    assert leila.status == Subscriber.Status.BOUNCED
    assert funnel_services.is_suppressed("leila@lodestone-mail.fi")
    enrolment = Enrolment.objects.get()
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "bounced")
    run_due(at("2026-03-02 10:00"))
    assert sent_to(leila.email) == []
    # Postmark retries webhooks: the same event again changes nothing and fails nothing.
    assert post(TRACKING, bounce("leila@lodestone-mail.fi")).status_code == 200


def test_a_spam_complaint_webhook_marks_the_subscriber_and_stops_all_mail():
    _sequence, leila = enrolled()

    assert post(TRACKING, complaint("leila@lodestone-mail.fi")).status_code == 200

    leila.refresh_from_db()
    assert leila.status == Subscriber.Status.COMPLAINED
    assert Enrolment.objects.get().exit_reason == "complained"


def test_a_soft_bounce_changes_nothing():
    _sequence, leila = enrolled()

    assert post(TRACKING, bounce("leila@lodestone-mail.fi", "SoftBounce", 4096)).status_code == 200

    leila.refresh_from_db()
    assert leila.status == Subscriber.Status.CONFIRMED
    assert Enrolment.objects.get().status == Enrolment.Status.ACTIVE


def test_webhooks_without_the_right_credentials_are_refused_before_anything_changes(settings):
    _sequence, leila = enrolled()

    assert post(TRACKING, complaint(leila.email), auth=None).status_code == 400
    assert post(TRACKING, complaint(leila.email), auth="postmark:wrong").status_code == 400
    settings.ANYMAIL = {}
    assert post(TRACKING, complaint(leila.email)).status_code == 403

    leila.refresh_from_db()
    assert leila.status == Subscriber.Status.CONFIRMED


def test_a_reply_to_the_list_unsubscribe_mailto_unsubscribes_through_the_inbound_webhook():
    _sequence, leila = enrolled()
    run_due(at("2026-03-02 10:00"))
    [message] = sent_to(leila.email)
    mailto = re.search(r"<(mailto:[^>]+)>", message.extra_headers["List-Unsubscribe"]).group(1)
    address, query = mailto.removeprefix("mailto:").split("?", 1)
    subject = unquote(query.removeprefix("subject="))
    payload = {
        "FromName": "Leila Ahmadi",
        "MessageStream": "inbound",
        "From": leila.email,
        "FromFull": {"Email": leila.email, "Name": "Leila Ahmadi", "MailboxHash": ""},
        "To": address,
        "ToFull": [{"Email": address, "Name": "", "MailboxHash": ""}],
        "Cc": "",
        "CcFull": [],
        "Bcc": "",
        "BccFull": [],
        "OriginalRecipient": address,
        "Subject": subject,
        "MessageID": "73e6d360-66eb-11e1-8e72-a8904824019b",
        "ReplyTo": "",
        "MailboxHash": "",
        "Date": "Mon, 2 Mar 2026 12:00:00 +0200",
        "TextBody": "",
        "HtmlBody": "",
        "StrippedTextReply": "",
        "Tag": "",
        "Headers": [{"Name": "X-Spam-Status", "Value": "No"}],
        "Attachments": [],
    }

    assert post(INBOUND, payload).status_code == 200

    leila.refresh_from_db()
    assert leila.status == Subscriber.Status.UNSUBSCRIBED
    assert Enrolment.objects.get().exit_reason == "unsubscribed"
    forged = {**payload, "Subject": "unsubscribe not-a-real-token"}
    other = confirmed("other@lodestone-mail.fi")
    assert post(INBOUND, forged).status_code == 200
    other.refresh_from_db()
    assert other.status == Subscriber.Status.CONFIRMED


def test_buying_the_target_product_mid_sequence_stops_it_and_counts_a_conversion(
    sx, webhook, django_capture_on_commit_callbacks
):
    offer = make_offer("launch-course")
    sequence, leila = enrolled()
    sequence.target_products.set(offer.products.all())
    run_due(at("2026-03-02 10:00"))  # the first email goes out

    client = Client()
    sx.complete_checkout(buy(client, offer), email=leila.email, name="Leila Ahmadi")
    with django_capture_on_commit_callbacks(execute=True):
        sx.deliver_pending()

    enrolment = Enrolment.objects.get()
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "purchased")
    for day in range(2, 8):
        run_due(at(f"2026-03-0{day} 12:00"))
    assert [m.subject for m in sent_to(leila.email)] == ["Welcome, Leila"]
    first = step_figures(sequence)[0]
    assert (first.sent, first.converted) == (1, 1)
    # Owning the product keeps them out of the sequence for good.
    assert services.enrolment_start(sequence=sequence, subscriber=leila, source="admin") is None


def test_a_buyer_whose_purchase_signal_was_missed_is_still_not_sold_to(
    sx, webhook, django_capture_on_commit_callbacks
):
    offer = make_offer("launch-course")
    sequence, leila = enrolled()
    sequence.target_products.set(offer.products.all())
    sx.complete_checkout(buy(Client(), offer), email=leila.email)
    sx.deliver_pending()  # the after-commit signal never runs here

    run_due(at("2026-03-02 10:00"))

    assert sent_to(leila.email) == []
    delivery = DripDelivery.objects.get()
    assert delivery.status == DripDelivery.Status.CANCELLED
    assert Enrolment.objects.get().exit_reason == "purchased"


def test_buying_a_product_enrols_the_buyer_in_the_sequence_that_follows_it(
    sx, webhook, django_capture_on_commit_callbacks
):
    offer = make_offer("launch-course")
    onboarding = make_sequence("Onboarding", steps=[("content", 0, 0, "Start here", "Hi")])
    onboarding.enrol_products.set(offer.products.all())
    leila = confirmed("leila@lodestone-mail.fi")

    sx.complete_checkout(buy(Client(), offer), email=leila.email, name="Leila Ahmadi")
    with django_capture_on_commit_callbacks(execute=True):
        sx.deliver_pending()

    enrolment = Enrolment.objects.get(subscriber=leila)
    assert (enrolment.sequence, enrolment.source) == (onboarding, "purchase")
    run_due(at("2099-03-02 10:00"))
    assert [m.subject for m in sent_to(leila.email) if m.subject == "Start here"] == ["Start here"]


def test_a_step_for_owners_of_a_product_is_skipped_and_the_sequence_goes_on(
    sx, webhook, django_capture_on_commit_callbacks
):
    bump = make_offer("checklist-bump")
    sequence, leila = enrolled()
    SequenceStep.objects.filter(sequence=sequence, subject="The one mistake").update(
        skip_if_owns=bump.products.get()
    )
    sx.complete_checkout(buy(Client(), bump), email=leila.email, name="Leila Ahmadi")
    with django_capture_on_commit_callbacks(execute=True):
        sx.deliver_pending()

    for day in range(2, 8):
        run_due(at(f"2026-03-0{day} 12:00"))

    sequence_mail = [m.subject for m in sent_to(leila.email) if m.subject in SUBJECTS]
    assert sequence_mail == ["Welcome, Leila", "Doors are open"]
    skipped = DripDelivery.objects.get(status=DripDelivery.Status.SKIPPED)
    assert (skipped.step.subject, skipped.note) == (
        "The one mistake",
        "Owns the product this step skips for.",
    )
    assert Enrolment.objects.get().status == Enrolment.Status.COMPLETED


def test_the_app_config_connects_the_receivers_purchases_tags_and_webhooks_reach():
    from anymail.signals import inbound, tracking
    from django.apps import apps
    from django.db.models.signals import m2m_changed

    from funnels.models import SubscriberTag
    from payments.signals import purchase_completed

    receivers = [
        (purchase_completed, None, "funnels.sequences.purchase_completed"),
        (m2m_changed, SubscriberTag, "funnels.sequences.subscriber_tags"),
        (tracking, None, "funnels.sequences.esp_tracking"),
        (inbound, None, "funnels.sequences.esp_inbound"),
    ]
    # Connected at start-up: each one is there to take away...
    for signal, sender, uid in receivers:
        assert signal.disconnect(sender=sender, dispatch_uid=uid), uid

    apps.get_app_config("funnels").ready()

    # ...and FunnelsConfig.ready() is what puts them back.
    for signal, sender, uid in receivers:
        assert signal.disconnect(sender=sender, dispatch_uid=uid), uid
    apps.get_app_config("funnels").ready()
