"""Demo: the flagship course on sale, and a buy button for it on the launch-checklist landing
page. ``standin_connect`` readies the Stripe stand-in the demo pays with (see
infra/Procfile.demo): it runs after the stand-in starts, which is after load_demo.

The courses demo (run first) may already have made the offer, its product and price; this
loader completes whatever is missing and never makes a second one.
"""

import json
import sys
import time
import urllib.error
import urllib.request

import stripe
from django.conf import settings
from django.db import transaction
from django.urls import reverse

from funnels.models import LandingPage

from . import services, webhooks
from .models import Offer, Price, Product, StripeCustomer, SyncStatus

OFFER_SLUG = "launch-your-first-course"
PRODUCT_SLUG = "launch-your-first-course"
LANDING_PAGE_SLUG = "launch-checklist"
DEMO_PRICE = (14900, "usd")


def _offer() -> Offer:
    offer, _created = Offer.objects.get_or_create(
        slug=OFFER_SLUG,
        defaults={
            "title": "Launch Your First Course",
            "description": (
                "Six weeks from idea to first sale: plan, record, price and launch an online "
                "course, with the Launch Checklist built in."
            ),
            "is_published": True,
        },
    )
    if not offer.is_published:
        offer.is_published = True
        offer.save(update_fields=["is_published", "updated_at"])
    if not offer.products.exists():
        product, _created = Product.objects.get_or_create(
            slug=PRODUCT_SLUG,
            defaults={"kind": Product.Kind.COURSE, "title": "Launch Your First Course"},
        )
        offer.products.add(product)
    if not offer.prices.filter(is_active=True).exists():
        amount, currency = DEMO_PRICE
        Price.objects.create(offer=offer, amount=amount, currency=currency)
    return offer


def _buy_button_block(offer: Offer) -> tuple:
    return (
        "buy_button",
        {
            "offer": offer,
            "headline": "Ready to launch for real?",
            "text": (
                "The checklist tells you what to do. Launch Your First Course walks you "
                "through every step of it, with templates, scripts and a live Q&A each week."
            ),
            "button_label": "Get the course",
        },
    )


def _add_buy_button(offer: Offer) -> LandingPage | None:
    page = LandingPage.objects.filter(slug=LANDING_PAGE_SLUG).first()
    if page is None:
        return None
    body = page.body
    if any(
        block.block_type == "buy_button"
        and block.value.get("offer") is not None
        and block.value["offer"].pk == offer.pk
        for block in body
    ):
        return page
    # After the countdown (the launch bonus), else before the questions, else at the end.
    types = [block.block_type for block in body]
    if "countdown" in types:
        index = types.index("countdown") + 1
    elif "faq" in types:
        index = types.index("faq")
    else:
        index = len(types)
    body.insert(index, _buy_button_block(offer))
    page.body = body
    page.save_revision().publish()
    return page


@transaction.atomic
def load(*, stdout) -> dict:
    offer = _offer()
    page = _add_buy_button(offer)
    buy_url = reverse("payments:buy", args=[offer.slug])
    for price in offer.prices.filter(is_active=True):
        stdout.write(f"  offer: {offer.title}, {price.display} — {buy_url}")
    if page is not None:
        stdout.write(f"  buy button on: {page.url}")
    if settings.STRIPE_API_BASE:
        stdout.write(
            f"  payments: TEST checkout on the Stripe stand-in at {settings.STRIPE_API_BASE} "
            "(no real money; press Pay on its page)"
        )
    return {"offer_url": buy_url}


# --- The Stripe stand-in -------------------------------------------------------------------


def _control(method: str, path: str, data: dict | None = None, *, timeout: float = 5) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    # The stand-in's own address from the settings, never user input.
    request = urllib.request.Request(  # noqa: S310
        settings.STRIPE_API_BASE.rstrip("/") + "/_control/" + path.lstrip("/"),
        data=body,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def _known_to_standin(object_id: str) -> bool:
    try:
        _control("GET", f"objects/{object_id}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def _wait_for_standin(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bool(_control("GET", "health", timeout=2).get("ok"))
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)


def _forget_stale_stripe_ids() -> int:
    """The stand-in keeps nothing across restarts: Stripe ids from an earlier run name
    objects it never heard of, and would make checkout fail. Forget them, so they are made
    again (demo only: on real Stripe an id does not vanish)."""
    forgotten = 0
    for offer in Offer.objects.exclude(stripe_product_id=""):
        if _known_to_standin(offer.stripe_product_id):
            continue
        with transaction.atomic():
            Offer.objects.filter(pk=offer.pk).update(
                stripe_product_id="", sync_status=SyncStatus.PENDING, sync_error="", synced_at=None
            )
            Price.objects.filter(offer=offer).update(
                stripe_price_id="",
                stripe_fingerprint="",
                sync_status=SyncStatus.PENDING,
                sync_error="",
                synced_at=None,
            )
        forgotten += 1
    for customer in StripeCustomer.objects.all():
        if not _known_to_standin(customer.stripe_customer_id):
            customer.delete()
    return forgotten


def standin_connect(*, stdout=sys.stdout, timeout: float = 30) -> bool:
    """Ready a freshly started stand-in for the demo: send webhooks to this site with the
    secret the settings expect, and put the offers in it. True when it is ready.

    Does nothing when the settings point at Stripe itself (STRIPE_SECRET_KEY given).
    """
    if not settings.STRIPE_API_BASE:
        stdout.write("Stripe: using your STRIPE_SECRET_KEY; the demo's stand-in is idle.\n")
        return False
    if not _wait_for_standin(timeout):
        stdout.write(f"Stripe stand-in: no answer at {settings.STRIPE_API_BASE}.\n")
        return False
    webhook_url = settings.SITE_URL + reverse("payments:stripe_webhook")
    endpoints = _control("GET", "webhook_endpoints")
    if not any(e["url"] == webhook_url for e in endpoints):
        _control(
            "POST",
            "webhook_endpoints",
            {
                "url": webhook_url,
                "secret": settings.STRIPE_WEBHOOK_SECRET,
                # What Lodestone handles: the events the README asks a real endpoint for.
                "enabled_events": sorted(webhooks.HANDLERS),
            },
        )
    _forget_stale_stripe_ids()
    for offer in Offer.objects.filter(is_published=True).order_by("pk"):
        try:
            services.offer_sync_to_stripe(offer_id=offer.pk)
        except stripe.StripeError as exc:
            stdout.write(f"Stripe stand-in: {offer.slug} did not sync: {exc}\n")
    stdout.write(
        f"Stripe stand-in ready at {settings.STRIPE_API_BASE}: TEST checkout, no real money. "
        f"Webhooks go to {webhook_url}.\n"
    )
    return True
