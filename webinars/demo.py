"""Demo webinar: a free live Q&A under the home page, one session three days ahead at
18:00 in Helsinki, selling the demo course as its follow-up. Running it again adds
nothing while that session is still ahead; once it has passed, the next load schedules a
new one three days out."""

import datetime
import zoneinfo

from django.db import transaction
from django.utils import timezone

from core.models import HomePage
from payments.models import Offer

from . import selectors, services
from .models import WebinarPage, WebinarSession

SLUG = "pricing-live-qa"
ZONE = "Europe/Helsinki"


def _session() -> WebinarSession:
    day = (timezone.now().astimezone(zoneinfo.ZoneInfo(ZONE)) + datetime.timedelta(days=3)).date()
    return WebinarSession(
        start_date=day,
        start_time=datetime.time(18, 0),
        time_zone=ZONE,
        duration_minutes=60,
        capacity=100,
    )


@transaction.atomic
def load(*, stdout) -> dict:
    home = HomePage.objects.first()
    if home is None:
        stdout.write("  no home page yet: the core demo creates it first")
        return {}
    page = WebinarPage.objects.filter(slug=SLUG).first()
    if page is None:
        page = WebinarPage(
            title="Price your first course: a live Q&A",
            slug=SLUG,
            search_description="A free live Q&A on pricing your first online course.",
            host_name="Maya Virtanen",
            host_bio="Maya has launched six courses and priced every one of them wrong once.",
            description=(
                "<p>Bring your course idea and your doubts about its price. In one hour we "
                "go through how to pick a first price, when to raise it, and how payment "
                "plans change who buys.</p>"
                "<ul><li>Live, with questions from the audience</li>"
                "<li>The replay for a week afterwards</li></ul>"
            ),
            # The demo's live room: any URL works; it is only revealed through join links.
            join_url="https://meet.jit.si/northwind-pricing-live-qa",
            follow_up_offer=Offer.objects.filter(slug="launch-your-first-course").first(),
        )
        page.sessions.add(_session())
        home.add_child(instance=page)
        page.save_revision().publish()  # the page_published receiver opens the session
        services.webinar_product_ensure(page=page)
    elif not selectors.open_occasions(page):
        page.sessions.add(_session())
        page.save()
        page.save_revision().publish()
    page = WebinarPage.objects.get(pk=page.pk)
    stdout.write(f"  webinar: {page.url}")
    return {"webinar_url": page.url}
