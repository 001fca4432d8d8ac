"""The one place a Stripe client is made: the official library, aimed at STRIPE_API_BASE when
set (the test stand-in, a self-hosted mock), otherwise at Stripe."""

import contextlib
import functools

import stripe
from django.conf import settings

from . import exceptions

# Failures worth trying again later; anything else is Stripe refusing what we asked.
TRANSIENT_ERRORS = (stripe.APIConnectionError, stripe.RateLimitError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, stripe.APIError) and (exc.http_status or 500) >= 500


def stripe_client() -> stripe.StripeClient:
    key = settings.STRIPE_SECRET_KEY
    if not key:
        raise exceptions.PaymentsNotConfigured()
    return _client(
        key,
        settings.STRIPE_API_BASE,
        getattr(settings, "STRIPE_MAX_NETWORK_RETRIES", 2),
        getattr(settings, "STRIPE_TIMEOUT", 20),
    )


@functools.lru_cache(maxsize=8)
def _client(key: str, api_base: str, retries: int, timeout: float) -> stripe.StripeClient:
    # One client per configuration, shared by threads: its HTTP sessions are per thread.
    options: dict = {"max_network_retries": retries}
    if api_base:
        options["base_addresses"] = {"api": api_base}
    # A buyer waits on these calls: fail in seconds, not the library's 80. Without
    # `requests` installed the library's own urllib client is used.
    with contextlib.suppress(ImportError):
        options["http_client"] = stripe.RequestsClient(timeout=timeout)
    return stripe.StripeClient(key, **options)


def as_dict(obj) -> dict:
    """A StripeObject as plain JSON-able data, as it would arrive in a webhook."""
    if isinstance(obj, dict):
        return obj
    return obj.to_dict(recursive=True, for_json=True)
