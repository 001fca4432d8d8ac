"""has_access and entitlements_for: the checks every protected view makes."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError
from django.utils import timezone

from payments import selectors, services
from payments.models import Entitlement

from .conftest import make_product

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user(email="member@lodestone-mail.fi")


def test_nobody_has_access_without_an_entitlement(user):
    course = make_product("course")

    assert not selectors.has_access(user, course)
    assert not selectors.has_access(AnonymousUser(), course)
    assert not selectors.has_access(None, course)
    assert list(selectors.entitlements_for(AnonymousUser())) == []


def test_manual_grant_opens_access_and_revoke_closes_it(user):
    course, other = make_product("course"), make_product("other")

    services.entitlement_grant(user=user, product=course)

    assert selectors.has_access(user, course)
    assert selectors.has_access(user, course.pk)
    assert not selectors.has_access(user, other)
    assert [e.product for e in selectors.entitlements_for(user)] == [course]
    assert list(selectors.products_for(user)) == [course]

    assert services.entitlement_revoke(user=user, product=course, reason="chargeback by hand")

    assert not selectors.has_access(user, course)
    assert list(selectors.entitlements_for(user)) == []
    assert [e.revoke_reason for e in selectors.entitlements_for(user, include_inactive=True)] == [
        "chargeback by hand"
    ]


def test_entitlement_that_has_ended_or_not_started_gives_no_access(user):
    course = make_product("course")
    now = timezone.now()
    entitlement = services.entitlement_grant(user=user, product=course, ends_at=now - timedelta(1))
    assert not selectors.has_access(user, course)

    Entitlement.objects.filter(pk=entitlement.pk).update(
        ends_at=None, starts_at=now + timedelta(days=1)
    )
    assert not selectors.has_access(user, course)


def test_granting_again_reopens_one_row_per_buyer_and_product(user):
    course = make_product("course")
    services.entitlement_grant(user=user, product=course)
    services.entitlement_revoke(user=user, product=course, reason="test")

    services.entitlement_grant(user=user, product=course)

    assert Entitlement.objects.count() == 1
    assert selectors.has_access(user, course)
    with pytest.raises(IntegrityError):
        Entitlement.objects.create(user=user, product=course, source="manual")
