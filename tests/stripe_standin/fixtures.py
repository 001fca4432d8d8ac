"""pytest fixtures for the Stripe stand-in.

Register them from ``tests/conftest.py`` with either::

    pytest_plugins = ["tests.stripe_standin.fixtures"]
    # or
    from tests.stripe_standin.fixtures import stripe_standin, stripe_standin_fresh  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .handle import StripeStandin, start_stripe_standin


@pytest.fixture(scope="session")
def stripe_standin() -> Iterator[StripeStandin]:
    """One stand-in for the whole test session (state is shared; see ``stripe_standin_fresh``)."""
    standin = start_stripe_standin()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def stripe_standin_fresh(stripe_standin: StripeStandin) -> Iterator[StripeStandin]:
    """The session stand-in, reset before the test (no objects, endpoints or events)."""
    stripe_standin.reset()
    yield stripe_standin
    stripe_standin.reset()


@pytest.fixture
def stripe_client(stripe_standin: StripeStandin):
    """An official ``stripe.StripeClient`` aimed at the stand-in (no network retries)."""
    return stripe_standin.client()
