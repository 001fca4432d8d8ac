"""Fixtures the browser tests share: the Stripe stand-in they pay through."""

import pytest

from tests.harness.plugin import SERVER_STRIPE_WEBHOOK_SECRET

STRIPE_WEBHOOK_PATH = "/pay/stripe/webhook/"


@pytest.fixture
def stripe_servers(web_server, celery_worker, server_stripe, settings):
    """The servers' Stripe stand-in, reset, posting its webhooks to gunicorn; this test
    process talks to the same stand-in (the official client, and offer syncs made here)."""
    server_stripe.reset()
    server_stripe.auto_deliver = True
    server_stripe.add_webhook_endpoint(
        web_server.url + STRIPE_WEBHOOK_PATH, secret=SERVER_STRIPE_WEBHOOK_SECRET
    )
    settings.STRIPE_API_BASE = server_stripe.url
    settings.STRIPE_SECRET_KEY = server_stripe.api_key
    settings.STRIPE_WEBHOOK_SECRET = SERVER_STRIPE_WEBHOOK_SECRET
    yield server_stripe
    server_stripe.reset()
