"""A tag that leaves a subscriber in Lodestone leaves the member in Mailchimp too: the sync
sends it inactive because Lodestone remembers sending it (``audience_tags_sent``). Tags a
creator set in Mailchimp itself were never sent, so they stay.
"""

import pytest
from django.utils import timezone

from funnels import audience
from funnels.models import Subscriber
from funnels.tasks import audience_sync_batch, audience_sync_subscriber
from tests.funnels.test_audience import list_id  # noqa: F401
from tests.mailchimp_standin import configured_client, subscriber_hash

pytest_plugins = ["tests.mailchimp_standin.fixtures"]

SARA = "sara.ahmadi@lodestone-mail.fi"
OTTO = "otto.lehto@lodestone-mail.fi"


def tagged_subscriber(email: str = SARA, *, tags=("launch", "vip")) -> Subscriber:
    subscriber = Subscriber.objects.create(
        email=email,
        name="Sara Ahmadi",
        time_zone="Europe/Helsinki",
        status=Subscriber.Status.CONFIRMED,
        confirmed_at=timezone.now(),
    )
    subscriber.tags.add(*tags)
    return subscriber


def member_tags(mailchimp, list_id: str, email: str = SARA) -> list[str]:
    return sorted(tag["name"] for tag in mailchimp.member(list_id, email)["tags"])


def tags_sent(subscriber: Subscriber) -> list[str]:
    subscriber.refresh_from_db()
    return sorted(subscriber.audience_tags_sent)


def tag_in_mailchimp(mailchimp, list_id: str, email: str, name: str) -> None:
    """The creator tags the member in Mailchimp's own interface."""
    configured_client(mailchimp).lists.update_list_member_tags(
        list_id, subscriber_hash(email), {"tags": [{"name": name, "status": "active"}]}
    )


# --- One subscriber (the tags endpoint) ---------------------------------------------------------


@pytest.mark.django_db
def test_tag_removed_in_lodestone_is_removed_from_the_mailchimp_member(mailchimp, list_id):
    # given a subscriber whose tags reached Mailchimp
    sara = tagged_subscriber()
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"
    assert member_tags(mailchimp, list_id) == ["launch", "vip"]
    assert tags_sent(sara) == ["launch", "vip"]

    # when the creator removes a tag and the subscriber syncs
    sara.tags.remove("vip")
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"

    # then Mailchimp loses it, and Lodestone remembers sending only what is left
    assert member_tags(mailchimp, list_id) == ["launch"]
    assert tags_sent(sara) == ["launch"]
    last_tags_call = mailchimp.requests_to("POST", r"/tags$")[-1]
    assert {"name": "vip", "status": "inactive"} in last_tags_call.json["tags"]


@pytest.mark.django_db
def test_removing_every_tag_still_sends_the_removals(mailchimp, list_id):
    sara = tagged_subscriber(tags=("vip",))
    audience_sync_subscriber.apply(args=[sara.pk]).get()

    sara.tags.clear()
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"

    assert member_tags(mailchimp, list_id) == []
    assert tags_sent(sara) == []


@pytest.mark.django_db
def test_tag_the_creator_added_in_mailchimp_is_left_alone(mailchimp, list_id):
    # given a synced subscriber the creator also tagged in Mailchimp itself
    sara = tagged_subscriber()
    audience_sync_subscriber.apply(args=[sara.pk]).get()
    tag_in_mailchimp(mailchimp, list_id, SARA, "webinar-2026")
    before = len(mailchimp.requests)

    # when a Lodestone tag is removed and the subscriber syncs
    sara.tags.remove("vip")
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"

    # then only the tag Lodestone sent goes; Mailchimp's own stays
    assert member_tags(mailchimp, list_id) == ["launch", "webinar-2026"]
    assert tags_sent(sara) == ["launch"]
    sent = [
        t["name"]
        for call in mailchimp.requests[before:]
        if call.api_path.endswith("/tags")
        for t in call.json["tags"]
    ]
    assert "webinar-2026" not in sent


@pytest.mark.django_db
def test_sending_a_removal_again_is_harmless(mailchimp, list_id):
    # Mailchimp (and the stand-in) take an inactive tag the member lacks as a no-op.
    sara = tagged_subscriber()
    audience_sync_subscriber.apply(args=[sara.pk]).get()
    sara.tags.remove("vip")
    stale = Subscriber.objects.get(pk=sara.pk)  # still remembers sending "vip"

    audience.member_upsert(stale)
    audience.member_upsert(stale)

    assert member_tags(mailchimp, list_id) == ["launch"]
    assert all(call.status == 204 for call in mailchimp.requests_to("POST", r"/tags$"))


# --- Many subscribers (the batch operation) -----------------------------------------------------


@pytest.mark.django_db
def test_batch_sync_removes_tags_removed_in_lodestone_and_leaves_mailchimps_own(mailchimp, list_id):
    # given two subscribers synced by batch, one also tagged in Mailchimp itself
    sara, otto = tagged_subscriber(SARA), tagged_subscriber(OTTO, tags=("vip",))
    assert audience_sync_batch.apply(args=[[sara.pk, otto.pk]]).get() != "failed"
    assert tags_sent(sara) == ["launch", "vip"]
    assert tags_sent(otto) == ["vip"]
    tag_in_mailchimp(mailchimp, list_id, OTTO, "webinar-2026")

    # when tags are removed in Lodestone and the batch runs again
    sara.tags.remove("launch")
    otto.tags.clear()
    batch_id = audience_sync_batch.apply(args=[[sara.pk, otto.pk]]).get()

    # then each member loses exactly the removed Lodestone tags
    assert member_tags(mailchimp, list_id, SARA) == ["vip"]
    assert member_tags(mailchimp, list_id, OTTO) == ["webinar-2026"]
    assert tags_sent(sara) == ["vip"]
    assert tags_sent(otto) == []
    assert all(r["status_code"] < 400 for r in mailchimp.batch(batch_id)["results"])


# --- Failures -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_failed_sync_keeps_the_remembered_tags_and_a_later_sync_removes_the_tag(mailchimp, list_id):
    sara = tagged_subscriber()
    audience_sync_subscriber.apply(args=[sara.pk]).get()
    sara.tags.remove("vip")
    # the member upsert goes through; the tags call is refused
    mailchimp.fail_next(400, method="POST", path=r"/tags$")

    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "failed"

    assert tags_sent(sara) == ["launch", "vip"]
    assert member_tags(mailchimp, list_id) == ["launch", "vip"]
    # the next sync still knows "vip" was Lodestone's
    assert audience_sync_subscriber.apply(args=[sara.pk]).get() == "synced"
    assert member_tags(mailchimp, list_id) == ["launch"]
    assert tags_sent(sara) == ["launch"]


@pytest.mark.django_db
def test_failed_batch_keeps_the_remembered_tags(mailchimp, list_id):
    sara = tagged_subscriber()
    audience_sync_batch.apply(args=[[sara.pk]]).get()
    sara.tags.remove("vip")
    mailchimp.fail_next(400, path=r"/batches$")

    assert audience_sync_batch.apply(args=[[sara.pk]]).get() == "failed"

    assert tags_sent(sara) == ["launch", "vip"]
    assert member_tags(mailchimp, list_id) == ["launch", "vip"]


@pytest.mark.django_db
def test_sync_superseded_by_an_edit_adds_what_it_sent_to_the_remembered_tags(list_id):
    # A sync whose row was edited on its way is not stamped, but Mailchimp did get its
    # tags: should the edit have removed one, the next sync must still send it inactive.
    sara = tagged_subscriber(tags=("launch",))
    Subscriber.objects.filter(pk=sara.pk).update(audience_tags_sent=["launch"])
    as_read = Subscriber.objects.get(pk=sara.pk)
    audience.subscribers_mark_changed(subscriber_ids=[sara.pk])  # the edit, meanwhile

    stamped = audience.subscribers_mark_synced(
        subscribers=[as_read], tags_sent={sara.pk: ["launch", "vip"]}
    )

    assert stamped == 0
    sara.refresh_from_db()
    assert sara.audience_changed_at is not None, "the edit stays due"
    assert sorted(sara.audience_tags_sent) == ["launch", "vip"]
