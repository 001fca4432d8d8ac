"""Fixtures of the security suite: the world every attack is tried against."""

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client, override_settings

from tests.security.world import World, world_build
from tests.stripe_standin.fixtures import stripe_standin  # noqa: F401


@pytest.fixture(scope="module")
def _module_world(django_db_setup, django_db_blocker, tmp_path_factory):
    """One world per test module, built in a transaction that is rolled back at the end;
    each test runs in a savepoint inside it (pytest-django's `db`). Building it takes a
    few seconds, so the suite builds it a handful of times, not once per test."""
    from django.contrib.auth import get_user_model

    location = tmp_path_factory.mktemp("protected")
    storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(location), "base_url": None},
    }
    overrides = override_settings(
        STORAGES={**settings.STORAGES, "protected": storage}, PROTECTED_SERVE_METHOD="django"
    )
    overrides.enable()
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            built = world_build(get_user_model())
        except BaseException:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
            overrides.disable()
            raise
    try:
        yield built
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
        overrides.disable()


@pytest.fixture
def world(_module_world, db) -> World:
    # Rows made on first use by a test (tests/webinars/authz.py) die with its savepoint.
    for made_lazily in ("_webinar", "_webinar_registrations"):
        _module_world.__dict__.pop(made_lazily, None)
    return _module_world


def client_for(world: World, role: str, **kwargs) -> Client:
    client = Client(**kwargs)
    user = {"other_buyer": world.other_buyer, "buyer": world.buyer, "staff": world.staff}.get(role)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def stripe_configured(settings, stripe_standin):
    """The app talks to the Stripe stand-in (receipts, billing portal)."""
    stripe_standin.reset()
    settings.STRIPE_API_BASE = stripe_standin.url
    settings.STRIPE_SECRET_KEY = stripe_standin.api_key
    settings.STRIPE_WEBHOOK_SECRET = "whsec_lodestone_security_suite_000000"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    yield stripe_standin
    stripe_standin.reset()
