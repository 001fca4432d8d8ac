"""Offers reach Stripe as one Product with its Prices, however often the sync runs."""

import pytest

from payments import services
from payments.models import Offer, Price
from payments.tasks import offer_sync

from .conftest import make_offer

pytestmark = pytest.mark.django_db


@pytest.fixture
def offer(db):
    offer = make_offer("launch-course", amount=4900)
    Price.objects.create(
        offer=offer, kind=Price.Kind.SUBSCRIPTION, amount=1500, currency="usd", interval="month"
    )
    return offer


def stripe_ids(offer):
    offer.refresh_from_db()
    return offer.stripe_product_id, sorted(offer.prices.values_list("stripe_price_id", flat=True))


def test_offer_sync_task_creates_the_stripe_product_and_prices_once(sx, stripe_client, offer):
    offer_sync.apply(args=[offer.pk]).get()
    first = stripe_ids(offer)
    offer_sync.apply(args=[offer.pk]).get()

    assert stripe_ids(offer) == first
    assert [p.id for p in stripe_client.v1.products.list().data] == [first[0]]
    prices = stripe_client.v1.prices.list(params={"product": first[0]}).data
    assert sorted(p.id for p in prices) == first[1]
    by_amount = {p.unit_amount: p for p in prices}
    assert by_amount[1500].recurring.interval == "month"
    assert by_amount[4900].type == "one_time"
    assert Offer.objects.get().sync_status == "synced"


def test_sync_whose_database_write_was_lost_gets_the_same_stripe_objects_back(
    sx, stripe_client, offer
):
    services.offer_sync_to_stripe(offer_id=offer.pk)
    first = stripe_ids(offer)
    # As if the process died after Stripe answered and before our rows were saved.
    Offer.objects.update(stripe_product_id="")
    Price.objects.update(stripe_price_id="", stripe_fingerprint="")

    services.offer_sync_to_stripe(offer_id=offer.pk)

    assert stripe_ids(offer) == first, "the idempotency keys replayed the first answers"
    assert len(stripe_client.v1.products.list().data) == 1
    assert len(stripe_client.v1.prices.list(params={"limit": 100}).data) == 2


def test_changed_amount_makes_a_new_stripe_price_and_archives_the_old(sx, stripe_client, offer):
    services.offer_sync_to_stripe(offer_id=offer.pk)
    price = offer.prices.get(kind=Price.Kind.ONE_TIME)
    old_id = Price.objects.get(pk=price.pk).stripe_price_id
    Price.objects.filter(pk=price.pk).update(amount=5900)

    services.offer_sync_to_stripe(offer_id=offer.pk)

    new_id = Price.objects.get(pk=price.pk).stripe_price_id
    assert new_id != old_id
    assert stripe_client.v1.prices.retrieve(new_id).unit_amount == 5900
    assert stripe_client.v1.prices.retrieve(old_id).active is False


def test_sync_refused_by_stripe_is_recorded_on_the_offer_and_not_retried(sx, offer):
    Offer.objects.filter(pk=offer.pk).update(stripe_product_id="prod_deleted_in_dashboard")

    result = offer_sync.apply(args=[offer.pk]).get()

    assert result == "failed"
    offer.refresh_from_db()
    assert offer.sync_status == "failed"
    assert "InvalidRequestError" in offer.sync_error
    assert "prod_deleted_in_dashboard" in offer.sync_error


def test_sync_with_stripe_unreachable_is_retried_by_the_task(sx, settings, offer):
    from celery.exceptions import Retry

    from .conftest import closed_port_url

    settings.STRIPE_API_BASE = closed_port_url()

    with pytest.raises(Retry):
        offer_sync.apply(args=[offer.pk], throw=True).get()
    assert Offer.objects.get().sync_status == "failed"
