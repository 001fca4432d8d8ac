"""For the authorisation matrix (tests/security/authz_table.py): a free webinar in the
security test world, with registrations for the world's subscriber (no account: their
link is the key) and its buyer (signed in), built once per world on first use."""

from datetime import timedelta

from django.utils import timezone

from webinars import links
from webinars.models import WebinarPage

from .conftest import make_webinar, occasions, register, session_at


def webinar_of(world) -> WebinarPage:
    found = getattr(world, "_webinar", None)
    if found is None:
        from core.models import HomePage

        found = make_webinar(
            HomePage.objects.first(),
            slug="security-webinar",
            sessions=[session_at(timezone.now() + timedelta(days=2))],
        )
        occasion = occasions(found)[0]
        world._webinar_registrations = {
            "subscriber": register(found, occasion, world.subscriber.email).registration,
            "buyer": register(found, occasion, world.buyer.email).registration,
        }
        world._webinar = found
    return found


def registrant_link(world, holder: str, view: str) -> str:
    webinar_of(world)
    return links.registrant_url(
        f"webinars:{view}", world._webinar_registrations[holder], absolute=False
    )
