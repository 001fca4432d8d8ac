"""A Stripe API stand-in for Lodestone's tests (see README.md).

``start_stripe_standin()`` runs Stripe's v1 API for products, prices, customers, coupons,
promotion codes, Checkout, payments, refunds, subscriptions, invoices, the billing portal,
events and signed webhooks on a local port, for the official ``stripe`` client.
"""

from ._core import StripeError
from ._webhooks import DEFAULT_RETRY_SCHEDULE, Attempt, Delivery, Endpoint
from .handle import DEFAULT_API_KEY, StripeStandin, start_stripe_standin, stripe_standin_running

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_RETRY_SCHEDULE",
    "Attempt",
    "Delivery",
    "Endpoint",
    "StripeError",
    "StripeStandin",
    "start_stripe_standin",
    "stripe_standin_running",
]
