"""Every lookup by email address that runs per sign-up, purchase, sign-in, registration or
download is answered by an index on PostgreSQL, whatever the size of the list.

Django runs `email__iexact` as UPPER(email) = UPPER(%s); the unique constraints are on
LOWER(email), which cannot answer it. With sequential scans switched off for the
transaction, a plan that still reads the table row by row has no index to use.
"""

from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from funnels.models import Subscriber
from media.models import DownloadDelivery
from webinars.models import Registration

pytestmark = pytest.mark.django_db

ADDRESS = "Leila.Ahmadi@Lodestone-Mail.fi"


def plan(queryset) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        return queryset.explain()


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(lambda: Subscriber.objects.filter(email__iexact=ADDRESS), id="subscriber"),
        pytest.param(lambda: get_user_model().objects.filter(email__iexact=ADDRESS), id="account"),
        pytest.param(
            lambda: EmailAddress.objects.filter(email=ADDRESS.lower(), verified=True),
            id="allauth-address",
        ),
        pytest.param(
            lambda: Registration.objects.filter(email__iexact=ADDRESS), id="webinar-registration"
        ),
        pytest.param(
            # media.downloads._limit_enforce for a lead-magnet subscriber
            lambda: DownloadDelivery.objects.filter(
                source_name="lead-magnets/book.pdf",
                created_at__gte=timezone.now() - timedelta(days=30),
                user__isnull=True,
                subscriber_email__iexact=ADDRESS,
            ),
            id="subscriber-download-limit",
        ),
    ],
)
def test_lookup_by_address_reads_an_index(lookup):
    if connection.vendor != "postgresql":
        pytest.skip("the plan checked is PostgreSQL's")
    found = plan(lookup())
    assert "Seq Scan" not in found, found
