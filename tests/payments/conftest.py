"""Payments fixtures: the Stripe stand-in (a real HTTP server driven through the official
client), offers to sell, and a webhook endpoint that posts into Django's test client.

The stand-in's fixtures are imported rather than listed in ``pytest_plugins``: pytest
refuses ``pytest_plugins`` in a conftest below the rootdir when the whole suite runs.
"""

import re
import socket
from urllib.parse import urlsplit

import pytest
from django.test import Client

from payments.models import Offer, Price, Product
from tests.stripe_standin.fixtures import stripe_client, stripe_standin  # noqa: F401

WEBHOOK_PATH = "/pay/stripe/webhook/"
WEBHOOK_SECRET = "whsec_lodestone_payments_tests_0000000000"
BUYER = "leila@lodestone-mail.fi"
SITE = "http://testserver"


@pytest.fixture
def client():
    # Browsers name the page's origin on every POST; the buy button, on edge-cached pages
    # without a CSRF token, is checked by it (core/csrf.py).
    return Client(headers={"Origin": SITE})


@pytest.fixture(autouse=True)
def _tasks_publish_to_the_test_broker(celery_broker):
    """Work queued after a commit (outbox sends) goes to this session's Redis queue."""


@pytest.fixture
def sx(settings, stripe_standin):
    """The session's stand-in, reset, with the app pointed at it. Webhooks go out only when a
    test says so."""
    stripe_standin.reset()
    settings.STRIPE_API_BASE = stripe_standin.url
    settings.STRIPE_SECRET_KEY = stripe_standin.api_key
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.SITE_URL = "http://testserver"
    stripe_standin.auto_deliver = False
    yield stripe_standin
    stripe_standin.reset()


def post_webhook(client: Client, body: bytes | str, signature: str | None):
    extra = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return client.post(WEBHOOK_PATH, data=body, content_type="application/json", **extra)


@pytest.fixture
def webhook(sx):
    """A webhook endpoint whose deliveries (``sx.deliver_pending()``) post to our view through
    Django's test client, in the calling thread."""
    client = Client()

    def transport(url, body, headers):
        response = post_webhook(client, body, headers["Stripe-Signature"])
        return response.status_code, response.content.decode()

    return sx.add_webhook_endpoint(WEBHOOK_PATH, secret=WEBHOOK_SECRET, transport=transport)


def make_product(slug: str, *, kind=Product.Kind.COURSE, title: str | None = None) -> Product:
    return Product.objects.create(
        kind=kind, slug=slug, title=title or slug.replace("-", " ").title()
    )


def make_offer(
    slug: str = "launch-course",
    *,
    amount: int = 4900,
    currency: str = "usd",
    kind: str = Price.Kind.ONE_TIME,
    interval: str = "",
    installments: int | None = None,
    products: list[Product] | None = None,
    published: bool = True,
    title: str | None = None,
) -> Offer:
    offer = Offer.objects.create(
        slug=slug, title=title or slug.replace("-", " ").title(), is_published=published
    )
    offer.products.set(products or [make_product(f"{slug}-product")])
    Price.objects.create(
        offer=offer,
        kind=kind,
        amount=amount,
        currency=currency,
        interval=interval,
        installments=installments,
    )
    return offer


def session_id_from(response) -> str:
    assert response.status_code == 303, response.content.decode()[:500]
    return urlsplit(response["Location"]).path.rsplit("/", 1)[-1]


def buy(client: Client, offer: Offer, **data) -> str:
    """Press the buy button; returns the Checkout Session id Stripe made. The browser names
    the page's origin, which the buy view checks instead of a CSRF token (core/csrf.py)."""
    return session_id_from(client.post(f"/pay/buy/{offer.slug}/", data, HTTP_ORIGIN=SITE))


def link_in(text: str, path: str) -> str:
    return re.search(rf"https?://[^\s]+{re.escape(path)}[^\s]+", text).group(0)


def closed_port_url() -> str:
    """An address where nothing listens: Stripe, unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
